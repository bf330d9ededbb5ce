"""Motion-planned demonstrations -> mcap episode bags -> read back (rosbags and mcap). ROS-free."""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from lrm_ros.bags.reader import BagFormatError, read_episodes  # noqa: E402
from lrm_ros.core.sim.demos import generate_demos  # noqa: E402
from lrm_ros.core.sim.maniskill_env import SimConfig  # noqa: E402
from lrm_ros.core.sim.tasks import TASK_INSTRUCTIONS  # noqa: E402

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
        assert ep.episode_end and ep.end_reason == 1  # END_SUCCESS
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
        generate_demos(["RollBall-v1"], 1, tmp_path)
    with pytest.raises(ValueError, match="positive"):
        generate_demos(["PickCube-v1"], 0, tmp_path)
