"""Motion-planned demonstrations -> mcap episode bags -> read back (rosbags and mcap). ROS-free."""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from lrm_ros.bags.reader import BagFormatError, read_episodes  # noqa: E402
from lrm_ros.common.episode_end import END_SUCCESS  # noqa: E402
from lrm_ros.sim.demos import generate_demos  # noqa: E402
from lrm_ros.sim.maniskill_env import SimConfig  # noqa: E402
from lrm_ros.sim.tasks import TASK_INSTRUCTIONS  # noqa: E402

TOPICS = {
    "task/instruction", "camera/image_raw", "camera/camera_info", "joint_states",
    "control/tick", "sim/oracle", "policy/command",
}


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    cfg = SimConfig(env_id="PickCube-v1", camera_width=64, camera_height=64, max_episode_ticks=100)
    summary = generate_demos(["PickCube-v1"], 2, out, cfg, seed=0, progress=False)
    return out, summary


def test_summary(demos):
    out, summary = demos
    e = summary["tasks"]["PickCube-v1"]
    assert (e["requested"], e["planned"], e["replayed"], e["episodes_written"]) == (2, 2, 2, 2)
    assert e["bag"] == str(out / "PickCube-v1") and e["ticks"] > 20
    assert json.loads((out / "summary.json").read_text())["totals"]["episodes_written"] == 2


def test_read_episodes(demos):
    out, summary = demos
    eps = read_episodes(out / "PickCube-v1")
    assert len(eps) == 2
    assert sum(ep.num_ticks for ep in eps) == summary["tasks"]["PickCube-v1"]["ticks"]
    for i, ep in enumerate(eps):
        T = ep.num_ticks
        assert ep.task == "PickCube-v1" and ep.instruction == TASK_INSTRUCTIONS["PickCube-v1"]
        assert ep.episode == i
        assert ep.frames.shape == (T, 64, 64, 3) and ep.frames.dtype == np.uint8
        assert ep.actions.shape == (T - 1, 7) and np.all(np.abs(ep.actions) <= 1.0)
        assert ep.joint_positions.shape == (T, 9)
        np.testing.assert_array_equal(ep.ticks, np.arange(T))
        assert ep.successes[-1] and not ep.successes[:-1].any()
        assert ep.episode_end and ep.end_reason == END_SUCCESS
        assert ep.dense_rewards[0] == 0.0 and np.all(np.isfinite(ep.dense_rewards))
        assert ep.normalized_dense_rewards[-1] > ep.normalized_dense_rewards[1]
        dt = np.diff(ep.stamps_ns)
        assert np.all(dt == 50_000_000)  # 20 Hz control
    assert eps[1].stamps_ns[0] > eps[0].stamps_ns[-1]  # episodes do not overlap


def test_read_with_mcap(demos):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out, _ = demos
    (mcap_file,) = sorted((out / "PickCube-v1").glob("*.mcap"))
    topics, ticks = set(), []
    with open(mcap_file, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, msg in reader.iter_decoded_messages():
            topics.add(channel.topic)
            if channel.topic == "control/tick":
                assert schema.name == "lrm_ros/msg/ControlTick"
                ticks.append((msg.episode, msg.tick, msg.episode_start, msg.episode_end, msg.end_reason))
                assert message.log_time == msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
    assert topics == TOPICS
    starts = [t for t in ticks if t[2]]
    ends = [t for t in ticks if t[3]]
    assert [t[:2] for t in starts] == [(0, 0), (1, 0)]
    assert [(t[0], t[4]) for t in ends] == [(0, 1), (1, 1)]


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_episodes(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metadata.yaml").write_text("not: a bag\n")
    with pytest.raises(BagFormatError):
        read_episodes(bad)


def test_reader_missing_topics(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer

    from lrm_ros.bags.types import make_typestore

    ts = make_typestore()
    path = tmp_path / "only_instruction"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("task/instruction", "std_msgs/msg/String", typestore=ts)
        w.write(c, 1, ts.serialize_cdr(ts.types["std_msgs/msg/String"](data="x"), "std_msgs/msg/String"))
    with pytest.raises(BagFormatError, match="camera/image_raw"):
        read_episodes(path)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="motion-planning"):
        generate_demos(["PushT-v1"], 1, tmp_path)
    with pytest.raises(ValueError, match="positive"):
        generate_demos(["PickCube-v1"], 0, tmp_path)


# ------------------------------------------------------------------ time limits, lost demos, batches
def test_recommended_limits_cover_every_motion_planning_task():
    from lrm_ros.sim.demos import auto_max_ticks
    from lrm_ros.sim.tasks import MOTION_PLANNING_TASKS, RECOMMENDED_MAX_EPISODE_TICKS, time_limit_for

    # every task has a measured limit (bench/results/demo_lengths.json), none falls back to 100
    assert set(MOTION_PLANNING_TASKS) <= set(RECOMMENDED_MAX_EPISODE_TICKS)
    lengths = json.loads((Path(__file__).parents[1] / "bench/results/demo_lengths.json").read_text())
    for task in MOTION_PLANNING_TASKS:
        longest = lengths["tasks"][task]["success_ticks_max"]       # ticks to success, seeds 0-19
        assert RECOMMENDED_MAX_EPISODE_TICKS[task] >= longest, task
        if task not in ("PickCube-v1", "PushCube-v1", "PullCube-v1", "StackCube-v1", "LiftPegUpright-v1"):
            assert RECOMMENDED_MAX_EPISODE_TICKS[task] == time_limit_for(longest), task
    assert time_limit_for(91) == 120 and time_limit_for(80) == 100
    # auto: the table, unless a demo of this run is longer: then that length + 25%
    assert auto_max_ticks("StackCube-v1", [90, 126])[0] == RECOMMENDED_MAX_EPISODE_TICKS["StackCube-v1"]
    limit, how = auto_max_ticks("PickCube-v1", [80, 130])
    assert limit == 170 and "130 ticks" in how


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    """Two demo runs into one folder (PushCube seeds 8-9, where seed 9 has no motion plan; then
    PickCube seed 0), and failures of each task generated in two runs into one folder."""
    from lrm_ros.data.failures import FailureConfig, generate_failures

    root = tmp_path_factory.mktemp("batches")
    cfg = SimConfig(env_id="PushCube-v1", camera_width=32, camera_height=32, max_episode_ticks=100)
    s1 = generate_demos(["PushCube-v1"], 2, root / "demos", cfg, seed=8, progress=False, max_episode_ticks="auto")
    s2 = generate_demos(["PickCube-v1"], 1, root / "demos", cfg, seed=0, progress=False, max_episode_ticks="auto")
    fcfg = FailureConfig(noise_per_demo=1, stretch_per_demo=0, random_per_task=0, zero_per_task=0,
                         stall_per_demo=1, undo_per_demo=1, max_demos=1)
    f1 = generate_failures([root / "demos" / "PushCube-v1"], root / "failures", fcfg, progress=False)
    f2 = generate_failures([root / "demos" / "PickCube-v1"], root / "failures", fcfg, progress=False)
    return root, (s1, s2), (f1, f2)


def test_every_lost_demo_is_counted_with_its_reason(batches, capsys):
    from lrm_ros.sim.demos import summary_lines

    _, (s1, _), _ = batches
    e = s1["tasks"]["PushCube-v1"]
    assert (e["requested"], e["planned"], e["converted"], e["episodes_written"], e["lost"]) == (2, 1, 1, 1, 1)
    assert e["requested"] == e["episodes_written"] + e["lost"]
    assert e["lost_seeds"] == {"9": "plan: no motion plan found"} and e["lost_by_stage"] == {"plan": 1}
    assert e["episode_seeds"] == [8]
    lines = summary_lines(s1)
    assert "  lost 1 (plan 1):" in lines and "    seed 9: plan: no motion plan found" in lines
    # auto: the measured limit, and it covers the demo that was converted
    assert e["max_episode_ticks"] == 100 and e["converted_lengths"]["max"] <= 100
    assert e["max_episode_ticks_from"].startswith("auto")


def test_conversion_drops_are_reported_per_seed(tmp_path):
    """A real planned PickCube trajectory cut short before its success: ManiSkill's conversion
    drops it (and says so only on stdout); the worker names the seed and the reason."""
    import h5py

    from lrm_ros.sim._plan_worker import _convert
    from lrm_ros.sim.demos import _run_worker
    from lrm_ros.sim.vulkan import ensure_vulkan_icd

    ensure_vulkan_icd()
    res = _run_worker("PickCube-v1", [0, 1], tmp_path, "pd_joint_pos", 600)
    assert res["planned"] == {"0": True, "1": True} and "error" not in res
    h5 = Path(res["converted_h5"])
    with h5py.File(h5, "r+") as f:
        short = np.asarray(f["traj_1/actions"])[:20]
        del f["traj_1/actions"]
        f["traj_1/actions"] = short
    out, out_json, converted, lost = _convert(h5, "pd_ee_delta_pose")
    assert set(converted) == {0} and converted[0] >= res["plan_lengths"]["0"]
    assert set(lost) == {1}
    assert lost[1].startswith("dropped by the control-mode conversion to pd_ee_delta_pose: its converted "
                              "replay did not end in success (ManiSkill: 'Episode 1 is not replayed successfully")
    assert "'success': tensor([False])" in lost[1]
    assert out is not None and out_json.is_file()


def test_too_short_limit_is_reported_with_a_limit_that_fits(tmp_path):
    cfg = SimConfig(env_id="PickCube-v1", camera_width=32, camera_height=32, max_episode_ticks=100)
    s = generate_demos(["PickCube-v1"], 1, tmp_path, cfg, seed=0, progress=False,
                       max_episode_ticks={"PickCube-v1": 20})
    e = s["tasks"]["PickCube-v1"]
    assert (e["episodes_written"], e["lost"], e["lost_by_stage"]) == (0, 1, {"replay": 1})
    msg = e["lost_seeds"]["0"]
    assert msg.startswith("replay: not successful in ManiSkillSim (time limit after 20 ticks)")
    import re

    actions, least, fits = map(int, re.search(r"the demo has (\d+) actions: raise max_episode_ticks to at "
                                              r"least (\d+) \(e\.g\. (\d+)", msg).groups())
    assert least == actions == e["converted_lengths"]["max"] and fits >= actions


def test_batches_keep_every_task_in_summary(batches):
    root, (s1, s2), (f1, f2) = batches
    doc = json.loads((root / "demos" / "summary.json").read_text())
    assert set(doc["tasks"]) == {"PushCube-v1", "PickCube-v1"} and [r["tasks"] for r in doc["runs"]] == [
        ["PushCube-v1"], ["PickCube-v1"]]
    assert doc["tasks"]["PushCube-v1"]["episode_seeds"] == [8] and doc["tasks"]["PickCube-v1"]["episode_seeds"] == [0]
    assert doc["totals"]["episodes_written"] == 2 and doc["totals"]["lost"] == 1
    assert doc["tasks"]["PushCube-v1"]["seed"] == 8 and doc["tasks"]["PickCube-v1"]["camera"] == [32, 32]
    # the failure generator read each task's seeds and limit, batch by batch, and keeps both
    fdoc = json.loads((root / "failures" / "summary.json").read_text())
    assert set(fdoc["tasks"]) == {"PushCube-v1", "PickCube-v1"}
    for task, seed in (("PushCube-v1", 8), ("PickCube-v1", 0)):
        ft = fdoc["tasks"][task]
        assert ft["episodes"][0]["seed"] == seed and ft["max_episode_ticks"] == doc["tasks"][task]["max_episode_ticks"]
        assert ft["max_episode_ticks_from"] == "the demos' time limit"
    assert fdoc["totals"]["episodes_written"] == f1["totals"]["episodes_written"] + f2["totals"]["episodes_written"]


def test_near_misses_and_regressions_follow_the_demo_then_stop_or_back_off(batches):
    """stall: the demo's actions up to a late point, then zero arm deltas with the gripper held;
    undo: then the same motion played back (arm deltas negated, reversed; the gripper retraces).
    Both are as long as the demo, in the simulator and in the bag."""
    from lrm_ros.data.failures import FailureConfig, _actions
    root, _, (f1, _) = batches
    cfg = FailureConfig()
    demo = np.column_stack([np.linspace(-0.5, 0.5, 40)] * 6 + [np.r_[np.ones(20), -np.ones(20)]])
    low, high = -np.ones(7), np.ones(7)
    for seed in range(5):
        stall = _actions({"kind": "stall", "actions": demo}, cfg, low, high, 100, np.random.default_rng(seed))
        k = int(np.argmax(np.all(stall[:, :6] == 0.0, axis=1)))
        assert stall.shape == demo.shape and 0.5 * 40 <= k <= 0.9 * 40 + 1
        assert np.array_equal(stall[:k], demo[:k]) and np.all(stall[k:, :6] == 0.0)
        assert np.all(stall[k:, 6] == demo[k - 1, 6])
        undo = _actions({"kind": "undo", "actions": demo}, cfg, low, high, 100, np.random.default_rng(seed))
        assert undo.shape == demo.shape and np.array_equal(undo[:k], demo[:k])      # same turning point
        back = demo[:k][::-1][: 40 - k]
        assert np.allclose(undo[k:k + len(back), :6], -back[:, :6]) and np.array_equal(undo[k:k + len(back), 6], back[:, 6])
    entry = f1["tasks"]["PushCube-v1"]
    kinds = {e["kind"]: e for e in entry["episodes"]}
    assert {"stall", "undo"} <= set(kinds) and entry["kinds"]["stall"] == entry["kinds"]["undo"] == 1
    assert kinds["stall"]["ticks"] == kinds["undo"]["ticks"] == kinds["noise"]["ticks"]
    with pytest.raises(ValueError, match="too short to stop short"):
        _actions({"kind": "stall", "actions": demo[:1]}, cfg, low, high, 100, np.random.default_rng(0))
    with pytest.raises(ValueError, match="near_fraction"):
        FailureConfig(near_fraction=(0.5, 1.0))


def test_demo_bags_carry_their_seeds_and_limit(batches):
    from lrm_ros.data.failures import bag_info

    root, _, _ = batches
    bag = root / "demos" / "PickCube-v1"
    moved = root / "elsewhere" / "PickCube-v1"            # away from its summary.json
    moved.parent.mkdir()
    import shutil

    shutil.copytree(bag, moved)
    info = bag_info(moved)
    assert info["episode_seeds"] == [0] and info["max_episode_ticks"] == 100
    assert info["format"] == "lrm_ros.demos/1"


def test_summary_merge_keeps_older_summaries_readable(tmp_path):
    from lrm_ros.data.failures import bag_info, generate_failures
    from lrm_ros.sim.demos import write_summary

    # a summary.json as written before per-task settings existed
    old = {"format": "lrm_ros.demos/1", "control_mode": "pd_ee_delta_pose", "camera": [64, 64],
           "max_episode_ticks": 150, "seed": 3, "seconds": 9.0,
           "tasks": {"StackCube-v1": {"requested": 2, "planned": 2, "replayed": 2, "episodes_written": 2,
                                      "ticks": 200, "bag": None, "errors": {}, "episode_seeds": [3, 4]}}}
    (tmp_path / "summary.json").write_text(json.dumps(old))
    new = {"format": "lrm_ros.demos/1", "control_mode": "pd_joint_delta_pos", "camera": [32, 32],
           "max_episode_ticks": 100, "seed": 0, "seconds": 1.0,
           "tasks": {"PickCube-v1": {"requested": 1, "planned": 1, "replayed": 1, "episodes_written": 1,
                                     "ticks": 60, "bag": None, "errors": {}, "episode_seeds": [0],
                                     "max_episode_ticks": 100, "control_mode": "pd_joint_delta_pos"}}}
    merged = write_summary(tmp_path, new, ("requested", "episodes_written", "ticks"))
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc == merged and set(doc["tasks"]) == {"StackCube-v1", "PickCube-v1"}
    st = doc["tasks"]["StackCube-v1"]   # the older run's settings moved into its entry
    assert (st["max_episode_ticks"], st["control_mode"], st["camera"], st["seed"]) == (150, "pd_ee_delta_pose", [64, 64], 3)
    assert doc["totals"] == {"requested": 3, "episodes_written": 3, "ticks": 260}
    assert doc["max_episode_ticks"] == 100 and len(doc["runs"]) == 2     # top level: the latest run
    # the failure generator's reader finds each task's own settings (bags without metadata)
    (tmp_path / "StackCube-v1").mkdir()
    (tmp_path / "PickCube-v1").mkdir()
    si, pi = bag_info(tmp_path / "StackCube-v1"), bag_info(tmp_path / "PickCube-v1")
    assert (si["episode_seeds"], si["max_episode_ticks"], si["control_mode"]) == ([3, 4], 150, "pd_ee_delta_pose")
    assert (pi["episode_seeds"], pi["max_episode_ticks"], pi["control_mode"]) == ([0], 100, "pd_joint_delta_pos")
    # another tool's summary in the folder: a clear error, nothing overwritten
    with pytest.raises(ValueError, match="not 'lrm_ros.failures/1'.*another folder"):
        write_summary(tmp_path, {"format": "lrm_ros.failures/1", "tasks": {}}, ())
    with pytest.raises(ValueError, match="'lrm_ros.demos/1' summary.*another folder"):
        generate_failures([tmp_path / "nothing"], tmp_path, progress=False)
    # an unreadable summary is kept aside, not lost
    (tmp_path / "summary.json").write_text("{broken")
    m = write_summary(tmp_path, new, ("episodes_written",))
    assert (tmp_path / "summary.json.unreadable").read_text() == "{broken"
    assert "unreadable" in m["warnings"][0] and set(m["tasks"]) == {"PickCube-v1"}


def test_cli_prints_every_lost_seed(tmp_path, capsys):
    from lrm_ros.sim.demos import main

    rc = main(["--tasks", "PushCube-v1", "-n", "1", "--seed", "9", "--out", str(tmp_path), "--width", "32",
               "--height", "32", "--max-episode-ticks", "auto", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 1                                   # nothing written
    assert "PushCube-v1: requested 1, planned 0, converted 0, replayed 0, written 0" in out
    assert "  lost 1 (plan 1):\n    seed 9: plan: no motion plan found" in out
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["max_episode_ticks_mode"] == "auto" and doc["tasks"]["PushCube-v1"]["lost_seeds"] == {
        "9": "plan: no motion plan found"}


def test_scripted_demos_for_tasks_without_a_motion_planner(tmp_path):
    """RollBall and PokeCube: a controller on privileged state, recorded as it runs; a seed it
    does not solve is lost with its stage and reason; the recorded actions replay to success."""
    from lrm_ros.sim.demos import _replay_episode
    from lrm_ros.sim.maniskill_env import ManiSkillSim
    from lrm_ros.sim.tasks import LITE_TRAIN_TASKS, RECOMMENDED_MAX_EPISODE_TICKS

    assert {"RollBall-v1", "PokeCube-v1"} <= set(LITE_TRAIN_TASKS)
    cfg = SimConfig(camera_width=32, camera_height=32)
    s = generate_demos(["RollBall-v1", "PokeCube-v1"], 2, tmp_path, cfg, seed=0, progress=False,
                       max_episode_ticks="auto")
    roll, poke = s["tasks"]["RollBall-v1"], s["tasks"]["PokeCube-v1"]
    assert (roll["requested"], roll["episodes_written"], roll["lost"]) == (2, 2, 0)
    assert (poke["requested"], poke["episodes_written"], poke["lost"]) == (2, 1, 1)
    assert poke["lost_seeds"]["1"].startswith("script: the scripted controller did not succeed")
    assert poke["lost_by_stage"] == {"script": 1}
    for task, entry in (("RollBall-v1", roll), ("PokeCube-v1", poke)):
        assert entry["max_episode_ticks"] == RECOMMENDED_MAX_EPISODE_TICKS[task]
        eps = read_episodes(tmp_path / task)
        assert [e.episode for e in eps] == list(range(entry["episodes_written"]))
        assert sum(e.num_ticks for e in eps) == entry["ticks"]
        with ManiSkillSim(SimConfig(env_id=task, camera_width=32, camera_height=32,
                                    max_episode_ticks=entry["max_episode_ticks"])) as sim:
            for ep, seed in zip(eps, entry["episode_seeds"]):
                assert ep.task == task and ep.instruction == TASK_INSTRUCTIONS[task]
                assert ep.successes[-1] and not ep.successes[:-1].any() and ep.end_reason == END_SUCCESS
                assert ep.num_ticks - 1 == len(ep.actions) <= entry["success_ticks"]["max"]
                assert np.all(np.abs(ep.actions) <= 1.0)
                again = _replay_episode(sim, seed, None, ep.actions)
                assert again[-1]["step_success"] and len(again) == ep.num_ticks
