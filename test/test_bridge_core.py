"""Pure logic of the bridge: configuration checks and command admission (no ROS, no sim)."""
import math
import threading

import numpy as np
import pytest

from lrm_ros.sim.bridge import BridgeConfig, CommandError, CommandGate, StartupWait, validate_command


def test_config_defaults_are_valid_and_derive_the_sim_config():
    cfg = BridgeConfig()
    assert cfg.mode == "lockstep" and cfg.period_s == pytest.approx(0.05)
    sim = cfg.sim_config()
    assert (sim.env_id, sim.camera_width, sim.max_episode_ticks) == ("PickCube-v1", 256, 100)
    # 0 = the task's recommended limit (long enough for its demonstrations)
    assert BridgeConfig(env_id="LiftPegUpright-v1").sim_config().max_episode_ticks == 250
    assert BridgeConfig(max_episode_ticks=7).sim_config().max_episode_ticks == 7


@pytest.mark.parametrize("kwargs, words", [
    ({"mode": "fast"}, ["mode", "lockstep", "realtime"]),
    ({"fallback": "nothing"}, ["fallback", "hold", "zero"]),
    ({"control_rate_hz": 0.0}, ["control_rate_hz"]),
    ({"command_timeout_s": -1.0}, ["command_timeout_s"]),
    ({"max_episode_ticks": -1}, ["max_episode_ticks"]),
    ({"camera_width": 2}, ["camera size"]),
    ({"publish_phase": 1.0}, ["publish_phase"]),
    ({"start_wait_s": -1.0}, ["start_wait_s"]),
])
def test_config_rejects_bad_values_with_a_message_naming_the_field(kwargs, words):
    with pytest.raises(ValueError) as info:
        BridgeConfig(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_validate_command_accepts_right_size_and_rejects_wrong_size_and_nonfinite():
    assert validate_command([0.1] * 7, 7).tolist() == [0.1] * 7
    with pytest.raises(CommandError) as info:
        validate_command([0.0] * 3, 7)
    assert info.value.reason == "size" and "3 values" in str(info.value) and "7" in str(info.value)
    with pytest.raises(CommandError) as info:
        validate_command([0.0, math.nan, 0.0, math.inf, 0, 0, 0], 7)
    assert info.value.reason == "nonfinite" and "[1, 3]" in str(info.value)


def test_gate_lockstep_wait_returns_the_command_or_times_out_to_the_fallback():
    gate = CommandGate(3, fallback="hold")
    gate.offer([1.0, 2.0, 3.0])
    action, fallback = gate.wait(0.5)
    assert action.tolist() == [1.0, 2.0, 3.0] and not fallback
    action, fallback = gate.wait(0.05)            # nothing sent: hold the last good command
    assert action.tolist() == [1.0, 2.0, 3.0] and fallback and gate.timeouts == 1
    zero = CommandGate(3, fallback="zero")
    zero.offer([1.0, 1.0, 1.0]); zero.wait(0.1)
    assert zero.wait(0.01)[0].tolist() == [0.0, 0.0, 0.0]


def test_gate_counts_rejections_and_a_rejected_command_does_not_satisfy_the_tick():
    gate = CommandGate(2, fallback="zero")
    for bad in ([1.0], [math.nan, 0.0]):
        with pytest.raises(CommandError):
            gate.offer(bad)
    assert gate.rejected == {"size": 1, "nonfinite": 1} and gate.accepted == 0
    action, fallback = gate.wait(0.01)
    assert fallback and action.tolist() == [0.0, 0.0]


def test_gate_wakes_a_waiting_tick_from_another_thread_and_can_be_interrupted():
    gate = CommandGate(1)
    threading.Timer(0.05, gate.offer, args=([0.5],)).start()
    action, fallback = gate.wait(5.0)
    assert action.tolist() == [0.5] and not fallback      # a wait that timed out falls back
    threading.Timer(0.05, gate.interrupt).start()
    assert gate.wait(5.0) == (None, False)


def test_gate_begin_tick_discards_commands_sent_before_the_tick():
    gate = CommandGate(1, fallback="zero")
    gate.offer([0.7])
    gate.begin_tick()
    action, fallback = gate.wait(0.01)
    assert fallback and action.tolist() == [0.0]


def test_gate_realtime_take_uses_newest_or_counts_a_miss():
    gate = CommandGate(1, fallback="hold")
    gate.offer([0.1]); gate.offer([0.2])
    assert gate.take()[0].tolist() == [0.2]
    action, fallback = gate.take()
    assert fallback and action.tolist() == [0.2] and gate.missed == 1
    gate.reset_episode()
    assert gate.take()[0].tolist() == [0.0]


class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_startup_waits_for_a_policy_and_settled_subscribers_then_starts():
    clock = _Clock()
    w = StartupWait(10.0, need_policy=True, settle_s=0.5, clock=clock)
    assert not w.ready(policy_present=False, subscribers=0)
    clock.t += 1.0
    assert not w.ready(False, 2)                 # subscribers but no policy yet
    clock.t += 1.0
    assert w.ready(True, 2) and not w.timed_out  # policy there, 2 subscribers for 1 s
    # a subscriber arriving restarts the settling time
    w = StartupWait(10.0, need_policy=True, settle_s=0.5, clock=clock)
    assert not w.ready(True, 1)
    clock.t += 0.4
    assert not w.ready(True, 2)
    clock.t += 0.4
    assert not w.ready(True, 2)
    clock.t += 0.2
    assert w.ready(True, 2)


def test_startup_without_a_policy_times_out_and_realtime_needs_no_policy():
    clock = _Clock()
    w = StartupWait(3.0, need_policy=True, clock=clock)
    for _ in range(5):
        assert not w.ready(False, 1)
        clock.t += 0.5
    clock.t += 0.6
    assert w.ready(False, 1) and w.timed_out
    w = StartupWait(3.0, need_policy=False, settle_s=0.5, clock=clock)
    assert not w.ready(False, 1)
    clock.t += 0.5
    assert w.ready(False, 1) and not w.timed_out
