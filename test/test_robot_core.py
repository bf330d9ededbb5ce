"""robot_bridge's ROS-free logic: the safety filter, the command adapters and the operator's
episode control."""
from pathlib import Path

import numpy as np
import pytest

from lrm_ros.robot.bridge import (END_FAILURE, END_RESET_REQUEST, END_SUCCESS, END_TIME_LIMIT,
                                  CommandAdapter, EpisodeControl, RobotConfig, SafetyFilter)


def test_commands_are_clipped_and_rate_limited():
    f = SafetyFilter(RobotConfig(action_dim=3, action_low=(-0.5, -1, -1), action_high=(0.5, 1, 1),
                                 max_delta=(0.1,)))
    out, _ = f.filter([2.0, 0.0, 0.0])
    np.testing.assert_allclose(out, [0.5, 0.0, 0.0])               # first command: clipped only
    out, _ = f.filter([-0.5, 1.0, 0.05])
    np.testing.assert_allclose(out, [0.4, 0.1, 0.05])              # at most 0.1 per tick
    assert f.counters == {"commands": 2, "clipped": 1, "rate_limited": 1, "refused_paused": 0,
                          "refused_bad": 0, "stops": 0}
    assert f.filter([0.0, 0.0])[0] is None and "2 value(s), expected 3" in f.filter([0.0, 0.0])[1]
    assert f.filter([0.0, float("nan"), 0.0])[1] == "command has non-finite values"


def test_pause_stops_commands_at_once_and_resumes_from_scratch():
    f = SafetyFilter(RobotConfig(action_dim=2, max_delta=(0.1,)))
    f.filter([0.0, 0.0])
    assert f.set_paused(True) is True                  # entering: send the stop command now
    assert f.set_paused(True) is False                 # already paused: nothing more
    assert f.filter([0.05, 0.0]) == (None, "paused")
    assert f.set_paused(False) is False
    out, _ = f.filter([0.9, 0.0])                      # no rate limit against the pre-pause command
    np.testing.assert_allclose(out, [0.9, 0.0])
    assert f.counters["stops"] == 1 and f.counters["refused_paused"] == 1
    assert SafetyFilter(RobotConfig(action_dim=2, on_pause="none")).set_paused(True) is False


def test_adapters_build_what_each_controller_takes():
    q = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    names = [f"j{i}" for i in range(6)]
    fwd = CommandAdapter(RobotConfig(action_dim=6, action_scale=2.0)).command(np.full(6, 0.1), names, q)
    assert fwd.kind == "forward_command" and fwd.values == pytest.approx([0.2] * 6)
    traj = CommandAdapter(RobotConfig(action_dim=6, adapter="joint_trajectory", action_scale=0.5,
                                      control_rate_hz=20)).command(np.full(6, 0.2), names, q)
    assert traj.values == pytest.approx((q + 0.1).tolist()) and traj.joint_names == names
    assert traj.duration_s == pytest.approx(0.05)
    with pytest.raises(ValueError, match="current joint positions"):
        CommandAdapter(RobotConfig(action_dim=6, adapter="joint_trajectory")).command(np.zeros(6), names, None)
    tw = CommandAdapter(RobotConfig(action_dim=7, adapter="twist", action_scale=0.1)).command(
        np.arange(7) / 10, names, q)
    assert tw.linear == pytest.approx((0.0, 0.01, 0.02)) and tw.angular == pytest.approx((0.03, 0.04, 0.05))
    # a gripper component leaves the arm's command and becomes a position (-1 closed .. 1 open)
    cfg = RobotConfig(action_dim=7, adapter="twist", action_scale=0.1, gripper_index=6,
                      gripper_closed=0.0, gripper_open=0.08)
    tw = CommandAdapter(cfg).command(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, -1.0]), names, q)
    assert tw.linear == pytest.approx((0.01, 0.02, 0.03)) and tw.gripper == pytest.approx(0.0)
    assert CommandAdapter(cfg).command(np.array([0, 0, 0, 0, 0, 0, 0.5]), names, q).gripper == pytest.approx(0.06)
    fwd = CommandAdapter(RobotConfig(action_dim=7, gripper_index=0, gripper_closed=1.0, gripper_open=0.0)).command(
        np.array([1.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), names, q)
    assert fwd.values == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) and fwd.gripper == pytest.approx(0.0)
    assert CommandAdapter(RobotConfig(action_dim=7, gripper_index=6)).stop(names, q).values == [0.0] * 6
    assert CommandAdapter(RobotConfig(action_dim=7, gripper_index=6)).stop(names, q).gripper is None
    assert CommandAdapter(RobotConfig(action_dim=6)).command(np.zeros(6), names, q).gripper is None
    # stop commands: zero twist; hold position for trajectories; zeros for forward commands
    assert CommandAdapter(RobotConfig(action_dim=6, adapter="twist")).stop(names, q).linear == (0, 0, 0)
    assert CommandAdapter(RobotConfig(action_dim=6, adapter="joint_trajectory")).stop(names, q).values == \
        pytest.approx(q.tolist())
    assert CommandAdapter(RobotConfig(action_dim=6)).stop(names, q).values == [0.0] * 6
    assert CommandAdapter(RobotConfig(action_dim=6, on_pause="hold")).stop(names, q).values == \
        pytest.approx(q.tolist())


def test_config_errors_say_what_to_fix():
    with pytest.raises(ValueError, match="adapter must be one of"):
        RobotConfig(adapter="ros1")
    with pytest.raises(ValueError, match="action_low has 2 values; give one"):
        RobotConfig(action_dim=3, action_low=(-1, -1))
    with pytest.raises(ValueError, match="twist adapter needs an action of at least 6"):
        RobotConfig(action_dim=3, adapter="twist")
    with pytest.raises(ValueError, match="besides the gripper"):
        RobotConfig(action_dim=6, adapter="twist", gripper_index=5)
    with pytest.raises(ValueError, match="gripper_index must be an action component"):
        RobotConfig(action_dim=7, gripper_index=7)
    with pytest.raises(ValueError, match="below action_high"):
        RobotConfig(action_low=(1.0,), action_high=(0.0,))


def _run(control, n):
    return [control.next_tick() for _ in range(n)]


def test_operator_runs_episodes():
    c = EpisodeControl(RobotConfig(max_episode_ticks=3))
    assert c.next_tick() is None and not c.will_tick           # idle until started
    assert c.start()[0] and not c.start()[0]                    # one episode at a time
    ticks = _run(c, 5)
    assert [(t.tick, t.episode_start, t.episode_end) for t in ticks[:4]] == \
        [(0, True, False), (1, False, False), (2, False, False), (3, False, True)]
    assert ticks[3].end_reason == END_TIME_LIMIT and ticks[4] is None
    c.start()
    c.next_tick()
    assert c.mark_success()[0]
    end = c.next_tick()
    assert (end.episode, end.tick, end.episode_end, end.end_reason) == (1, 1, True, END_SUCCESS)
    c.start()
    c.next_tick()
    c.stop()
    assert c.next_tick().end_reason == END_RESET_REQUEST
    c.start()
    c.mark_failure()
    assert c.next_tick().end_reason == END_FAILURE
    assert c.reset()[0] and c.will_tick                          # reset while idle: start next
    assert c.next_tick().episode_start and c.episode == 4
    assert c.reset()[0]
    assert c.next_tick().end_reason == END_RESET_REQUEST
    assert c.next_tick().episode == 5                             # ... and the next follows


def test_success_from_the_completion_signal():
    c = EpisodeControl(RobotConfig(success_source="completion", completion_threshold=0.8, completion_ticks=2))
    c.start()
    c.next_tick()
    c.on_held(0, 0.9, stale=False)
    c.on_held(0, 0.95, stale=True)          # stale values do not count and break the streak
    c.on_held(0, 0.9, stale=False)
    assert not c.next_tick().episode_end
    c.on_held(0, 0.85, stale=False)
    assert c.next_tick().end_reason == END_SUCCESS
    assert not c.mark_success()[0]          # completion only: the operator cannot
    op = EpisodeControl(RobotConfig(success_source="operator"))
    op.start()
    for _ in range(5):
        op.on_held(0, 1.0, stale=False)
    assert not op.next_tick().episode_end
    auto = EpisodeControl(RobotConfig(auto_start=True, max_episode_ticks=1))
    assert [(t.episode, t.tick) for t in _run(auto, 4)] == [(0, 0), (0, 1), (1, 0), (1, 1)]


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "config" / "robots").glob("*.yaml"))
                         + [Path(__file__).resolve().parents[1] / "config" / "params" / "robot_bridge.yaml"],
                         ids=lambda p: p.name)
def test_shipped_robot_files_are_valid_configs(path):
    import yaml
    params = yaml.safe_load(path.read_text())["/**"]["ros__parameters"]
    known = set(RobotConfig.__dataclass_fields__)
    assert set(params) <= known, set(params) - known           # no misspelt parameter
    cfg = RobotConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
    assert cfg.arm_dim >= 1
