"""`lrm-ros audit` on bags that carry no labels (a robot recording: camera only, no
control/tick, no task/instruction, no sim/oracle) and on files with nothing readable:
unknown labels stay unknown, the instruction can be given, scoring without one is a warning,
and a file that is only damaged does not blame the camera topic."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrm_ros.bags.load import load_bag
from lrm_ros.bags.reader import BagFormatError, Episode
from lrm_ros.evaluation.audit import _success, audit

LRM_ROS = str(Path(sys.executable).with_name("lrm-ros"))


def _camera_only_bag(path: Path, n: int = 12, ticks=None):
    """A bag with /robot/camera/image_raw frames only (what recording a robot's driver gives);
    `ticks`: optional [(episode, tick, start, end, end_reason)] for /robot/control/tick."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from lrm_ros.bags.types import make_typestore
    ts = make_typestore()
    T = ts.types
    rng = np.random.default_rng(0)
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        cam = w.add_connection("/robot/camera/image_raw", "sensor_msgs/msg/Image", typestore=ts)
        tick = w.add_connection("/robot/control/tick", "lrm_ros/msg/ControlTick", typestore=ts) if ticks else None
        for i in range(n):
            stamp = 10**9 + i * 10**8
            hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
                sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam")
            img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            msg = T["sensor_msgs/msg/Image"](header=hdr, height=32, width=32, encoding="rgb8",
                                             is_bigendian=0, step=96, data=img.reshape(-1))
            w.write(cam, stamp, ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))
            if ticks:
                e, t, start, end, reason = ticks[i]
                m = T["lrm_ros/msg/ControlTick"](header=hdr, episode=e, tick=t, episode_start=start,
                                                 episode_end=end, end_reason=reason, fallback_count=0)
                w.write(tick, stamp, ts.serialize_cdr(m, "lrm_ros/msg/ControlTick"))
    return path


def _episode(end, reason, oracle_success=None):
    n = 4
    return Episode(task="", instruction="", episode=0, ticks=np.arange(n), stamps_ns=np.arange(n),
                   frames=np.zeros((n, 2, 2, 3), np.uint8), actions=np.zeros((n, 0)), joint_names=[],
                   joint_positions=np.zeros((n, 0)), joint_velocities=np.zeros((n, 0)),
                   dense_rewards=np.full(n, np.nan), normalized_dense_rewards=np.full(n, np.nan),
                   successes=np.array([False] * (n - 1) + [bool(oracle_success)]) if oracle_success is not None
                   else np.zeros(0, bool), failures=np.zeros(n, bool), episode_end=end, end_reason=reason, extra={})


def test_labels_are_known_only_where_the_bag_says_so():
    assert _success(_episode(True, 1)) is True                      # END_SUCCESS
    assert _success(_episode(True, 4)) is False                     # END_FAILURE
    assert _success(_episode(True, 2)) is False                     # time limit: no success in time
    assert _success(_episode(True, 3)) is None                      # stopped / reset by the operator
    assert _success(_episode(True, 0)) is None                      # no ticks: the "end" is the last frame
    assert _success(_episode(False, 0)) is None                     # cut short by the recording
    assert _success(_episode(True, 2, oracle_success=True)) is True


def test_a_camera_only_robot_bag_has_unknown_labels_and_no_invented_disagreement(tmp_path):
    bag = _camera_only_bag(tmp_path / "robot_bag")
    (ep,) = load_bag(bag, namespace="robot").episodes
    assert ep.instruction == "" and ep.task == ""
    rep = audit([bag], tmp_path / "out", namespaces=["robot"], image_size=0, progress=False)
    (e,) = rep["episodes"]
    assert e["success"] is None and rep["n_unlabelled"] == 1
    assert not any(k.endswith("_vs_success") for k in e["disagreement"])
    assert rep["metrics"] == {}                                      # no ROC-AUC from unknown labels
    saved = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert saved["episodes"][0]["success"] is None


def test_an_operator_stopped_episode_is_unlabelled_but_a_time_limit_is_a_failure(tmp_path):
    ticks = [(0, t, t == 0, t == 5, 3 if t == 5 else 0) for t in range(6)] + \
            [(1, t, t == 0, t == 5, 2 if t == 5 else 0) for t in range(6)]
    bag = _camera_only_bag(tmp_path / "bag", ticks=ticks)
    rep = audit([bag], tmp_path / "out", namespaces=["robot"], image_size=0, progress=False)
    by_ep = {e["episode"]: e["success"] for e in rep["episodes"]}
    assert by_ep == {0: None, 1: False} and rep["n_unlabelled"] == 1


def test_rescoring_without_an_instruction_warns_and_instruction_or_task_fills_it(tmp_path):
    from lrm_ros.rewards.options import backend_from_args
    bag = _camera_only_bag(tmp_path / "robot_bag")
    backend = backend_from_args("lite", "", "progress", [])
    warned = []
    try:
        rep = audit([bag], tmp_path / "a", backend=backend, namespaces=["robot"], image_size=0,
                    interval=3, progress=False, warn=warned.append)
        assert len(warned) == 1 and "WITHOUT an instruction" in warned[0] and "--instruction" in warned[0]
        assert rep["warnings"] == warned and "rescored" in rep["episodes"][0]["sources"]
        warned.clear()
        rep = audit([bag], tmp_path / "b", backend=backend, namespaces=["robot"], image_size=0,
                    interval=3, progress=False, warn=warned.append, task="PushCube-v1")
        assert warned == [] and rep["episodes"][0]["task"] == "PushCube-v1"
        rep = audit([bag], tmp_path / "c", backend=backend, namespaces=["robot"], image_size=0, interval=3,
                    progress=False, warn=warned.append, instruction="wipe the table")
        assert warned == [] and rep["episodes"][0]["sources"]["rescored"]["query_values"]
    finally:
        backend.close()
    proc = subprocess.run([LRM_ROS, "audit", str(bag), "--namespace", "robot", "--image-size", "0",
                           "--backend", "lite", "--interval", "3", "--out", str(tmp_path / "cli"),
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr          # 1: the bag had problems (no control/tick)
    assert "no /robot/control/tick" in proc.stderr
    assert "warning:" in proc.stderr and "WITHOUT an instruction" in proc.stderr
    assert "have no success label" in proc.stderr


def test_a_file_with_nothing_readable_does_not_blame_the_camera_topic(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "junk.mcap").write_bytes(b"\x89MCAP0\r\n" + os.urandom(200))
    with pytest.raises(BagFormatError, match="nothing readable") as err:
        load_bag(junk)
    assert "--camera-topic" not in str(err.value)
    good = _camera_only_bag(tmp_path / "good")
    mcap = next(good.glob("*.mcap"))
    (good / "metadata.yaml").unlink()
    os.truncate(mcap, 40)                               # cut inside the first records
    with pytest.raises(BagFormatError, match="nothing readable") as err:
        load_bag(good, namespace="robot")
    assert "--camera-topic" not in str(err.value)
    # a readable bag without that camera topic still says how to name it
    with pytest.raises(BagFormatError, match="--camera-topic"):
        load_bag(_camera_only_bag(tmp_path / "other"), namespace="robot", camera_topic="no/such")
