"""The bag recorder: BagRecorder (ROS-free, rosbags) and the bag_recorder node in the sim graph.

Core: raw CDR bytes in, the same messages out of the bag (rosbags Reader), counts, metadata,
QoS, unknown types skipped with the reason, refusal to overwrite. Node: the sim graph with
record:=true as real processes; after Ctrl-C the bag holds the ticks the monitor saw, the
latched instruction, held rewards and the raw camera images.
"""
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from lrm_ros.bags.recorder import (DEFAULT_EXTRA_TOPICS, DEFAULT_TOPICS, BagRecorder,
                                   RecorderConfig, parse_qos)
from lrm_ros.bags.types import make_typestore, msgtype

NS = "env0"
MAX_TICKS = 6
STARTUP_S = 120.0


def _read(path):
    """{topic: [(log_time_ns, msgtype, decoded message)]} and the connections by topic."""
    from rosbags.rosbag2 import Reader
    ts = make_typestore()
    out, conns = {}, {}
    with Reader(path) as reader:
        for conn in reader.connections:
            conns[conn.topic] = conn
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, conn.msgtype,
                                                   ts.deserialize_cdr(raw, conn.msgtype)))
    return out, conns


def _header(T, stamp_ns, frame_id=""):
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
        frame_id=frame_id)


# --- BagRecorder --------------------------------------------------------------------------

def test_recorded_messages_read_back_equal(tmp_path):
    ts = make_typestore()
    T = ts.types
    path = tmp_path / "bag"
    pixels = np.arange(4 * 5 * 3, dtype=np.uint8)
    image = T["sensor_msgs/msg/Image"](header=_header(T, 1_500_000_001, "cam"), height=4, width=5,
                                       encoding="rgb8", is_bigendian=0, step=15, data=pixels)
    text = T["std_msgs/msg/String"](data="pick up the red cube")
    ticks = [T[msgtype("ControlTick")](header=_header(T, 2_000_000_000 + k), episode=3, tick=k,
                                       episode_start=k == 0, episode_end=k == 2,
                                       end_reason=2 if k == 2 else 0, fallback_count=k)
             for k in range(3)]
    held = T[msgtype("HeldReward")](header=_header(T, 2_000_000_002), episode=3, tick=2,
                                    value=0.25, progress=0.25, completion=float("nan"),
                                    contrastive=1.0, query_tick=0, age_ticks=2, stale=False,
                                    model_id="lite:test", signal="progress")

    with BagRecorder(path, metadata={"task": "PickCube-v1", "envs": ["env0"]}) as rec:
        assert rec.add_topic("/env0/camera/image_raw", "sensor_msgs/msg/Image", "best_effort")
        assert rec.add_topic("/env0/task/instruction", "std_msgs/msg/String",
                             "reliable,transient_local")
        assert rec.add_topic("/env0/control/tick", msgtype("ControlTick"))
        assert rec.add_topic("/env0/reward/held", msgtype("HeldReward"), "reliable")
        assert rec.add_topic("/env0/control/tick", msgtype("ControlTick"))   # again: no-op
        rec.write("/env0/task/instruction", ts.serialize_cdr(text, "std_msgs/msg/String"), 10)
        rec.write("/env0/camera/image_raw", ts.serialize_cdr(image, "sensor_msgs/msg/Image"), 11)
        for k, tick in enumerate(ticks):
            rec.write("/env0/control/tick", ts.serialize_cdr(tick, msgtype("ControlTick")), 12 + k)
        rec.write("/env0/reward/held", ts.serialize_cdr(held, msgtype("HeldReward")), 20)
        assert rec.counts == {"/env0/camera/image_raw": 1, "/env0/task/instruction": 1,
                              "/env0/control/tick": 3, "/env0/reward/held": 1}
        assert rec.messages == 6 and rec.skipped == {}

    assert (path / "metadata.yaml").is_file() and list(path.glob("*.mcap"))
    bag, conns = _read(path)
    (t, kind, img), = bag["/env0/camera/image_raw"]
    assert (t, kind) == (11, "sensor_msgs/msg/Image")
    assert (img.height, img.width, img.encoding, img.step) == (4, 5, "rgb8", 15)
    assert bytes(img.data) == pixels.tobytes()
    assert (img.header.stamp.sec, img.header.stamp.nanosec, img.header.frame_id) == (1, 500_000_001, "cam")
    assert bag["/env0/task/instruction"][0][2].data == "pick up the red cube"
    got = [(m.episode, m.tick, m.episode_start, m.episode_end, m.end_reason, m.fallback_count,
            m.header.stamp.nanosec) for _, _, m in bag["/env0/control/tick"]]
    assert got == [(3, 0, True, False, 0, 0, 0), (3, 1, False, False, 0, 1, 1),
                   (3, 2, False, True, 2, 2, 2)]
    assert [t for t, _, _ in bag["/env0/control/tick"]] == [12, 13, 14]
    h = bag["/env0/reward/held"][0][2]
    assert (h.episode, h.tick, h.value, h.contrastive, h.age_ticks, h.model_id, h.signal) == \
        (3, 2, 0.25, 1.0, 2, "lite:test", "progress")
    assert np.isnan(h.completion)
    # The publishers' QoS goes with the topic (ros2 bag play re-offers it).
    from rosbags.interfaces import QosDurability, QosReliability
    (q,) = conns["/env0/task/instruction"].ext.offered_qos_profiles
    assert (q.reliability, q.durability) == (QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL)
    (q,) = conns["/env0/camera/image_raw"].ext.offered_qos_profiles
    assert q.reliability == QosReliability.BEST_EFFORT
    assert conns["/env0/control/tick"].ext.offered_qos_profiles == []
    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["storage_identifier"] == "mcap" and info["message_count"] == 6
    counts = {x["topic_metadata"]["name"]: x["message_count"] for x in info["topics_with_message_count"]}
    assert counts["/env0/control/tick"] == 3
    assert info["custom_data"]["lrm_ros.task"] == "PickCube-v1"
    assert json.loads(info["custom_data"]["lrm_ros.envs"]) == ["env0"]


def test_unknown_type_is_skipped_with_the_reason(tmp_path):
    with BagRecorder(tmp_path / "bag") as rec:
        assert not rec.add_topic("/weird", "my_msgs/msg/Thing")
        why = rec.skipped["/weird"]
        assert "my_msgs/msg/Thing" in why and "cannot be recorded without its definition" in why
        assert "/weird" not in rec.counts
        with pytest.raises(ValueError, match="skipped.*my_msgs/msg/Thing"):
            rec.write("/weird", b"\x00\x01\x00\x00", 1)
        with pytest.raises(ValueError, match="/never_added is not registered.*add_topic"):
            rec.write("/never_added", b"\x00\x01\x00\x00", 1)
        assert rec.add_topic("/s", "std_msgs/msg/String")
        with pytest.raises(ValueError, match="already registered as std_msgs/msg/String"):
            rec.add_topic("/s", "std_msgs/msg/Int32")
        with pytest.raises(ValueError, match="unknown QoS word 'latched'"):
            rec.add_topic("/t", "std_msgs/msg/String", "latched")
    info = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())
    skipped = json.loads(info["rosbag2_bagfile_information"]["custom_data"]["lrm_ros.skipped_topics"])
    assert list(skipped) == ["/weird"]


def test_existing_path_is_refused_and_close_is_idempotent(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="taken already exists; remove it or choose another"):
        BagRecorder(tmp_path / "taken")
    with pytest.raises(ValueError, match="storage must be one of"):
        BagRecorder(tmp_path / "x", storage="rosbag1")
    rec = BagRecorder(tmp_path / "deep" / "new" / "bag")   # parents are created
    rec.add_topic("/s", "std_msgs/msg/String")
    rec.close()
    rec.close()
    assert rec.closed
    with pytest.raises(RuntimeError, match="closed"):
        rec.write("/s", make_typestore().serialize_cdr(
            make_typestore().types["std_msgs/msg/String"](data="x"), "std_msgs/msg/String"), 1)
    with pytest.raises(FileExistsError):
        BagRecorder(tmp_path / "deep" / "new" / "bag")


def test_concurrent_writers_lose_nothing(tmp_path):
    ts = make_typestore()
    String = ts.types["std_msgs/msg/String"]
    with BagRecorder(tmp_path / "bag") as rec:
        topics = [f"/t{i}" for i in range(4)]
        for t in topics:
            rec.add_topic(t, "std_msgs/msg/String")

        def work(topic):
            for k in range(200):
                rec.write(topic, ts.serialize_cdr(String(data=f"{topic}:{k}"), "std_msgs/msg/String"), k)

        threads = [threading.Thread(target=work, args=(t,)) for t in topics]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert rec.counts == {t: 200 for t in topics}
    bag, _ = _read(tmp_path / "bag")
    for t in topics:
        assert [m.data for _, _, m in bag[t]] == [f"{t}:{k}" for k in range(200)]


def test_parse_qos():
    from rosbags.interfaces import QosDurability, QosReliability
    assert parse_qos("") is None
    q = parse_qos("best_effort")
    assert (q.reliability, q.durability, q.depth) == (QosReliability.BEST_EFFORT, QosDurability.VOLATILE, 100)
    q = parse_qos("reliable, transient_local")
    assert (q.reliability, q.durability) == (QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL)


def test_recorder_config_topics_and_validation():
    cfg = RecorderConfig(envs=("env0", "env1"))
    wanted = cfg.wanted_topics()
    assert wanted[:len(DEFAULT_TOPICS)] == tuple(f"/env0/{t}" for t in DEFAULT_TOPICS)
    assert "/env1/control/tick" in wanted and wanted[-2:] == DEFAULT_EXTRA_TOPICS
    assert len(wanted) == 2 * len(DEFAULT_TOPICS) + len(DEFAULT_EXTRA_TOPICS)
    own = RecorderConfig(topics=("control/tick",), extra_topics=("/clock", "/clock"))
    assert own.wanted_topics() == ("control/tick", "/clock")
    assert str(RecorderConfig().bag_path()).startswith("out/bags/")
    assert RecorderConfig(path="/tmp/b").bag_path() == Path("/tmp/b")


def test_a_respawned_recorder_records_next_to_its_first_bag(tmp_path):
    (tmp_path / "bag").mkdir()
    assert RecorderConfig(path=str(tmp_path / "bag")).bag_path() == tmp_path / "bag"   # refused later
    assert RecorderConfig(path=str(tmp_path / "bag"), next_free_path=True).bag_path() == tmp_path / "bag_2"
    (tmp_path / "bag_2").mkdir()
    assert RecorderConfig(path=str(tmp_path / "bag"), next_free_path=True).bag_path() == tmp_path / "bag_3"
    for bad, match in [({"topics": ("/abs",)}, "must be relative"),
                       ({"extra_topics": ("rel",)}, "must be an absolute"),
                       ({"topics": ("camera//x",)}, "not a valid ROS 2 topic name"),
                       ({"topics": ("9lives",)}, "not a valid ROS 2 topic name"),
                       ({"envs": ("env0", "env0")}, "distinct"),
                       ({"envs": ()}, "distinct"),
                       ({"discovery_period_s": 0.0}, "discovery_period_s must be > 0")]:
        with pytest.raises(ValueError, match=match):
            RecorderConfig(**bad)


# --- the bag_recorder node in the sim graph -------------------------------------------------

@pytest.fixture(scope="module")
def recorded(tmp_path_factory, graph_domain):
    """Run the sim graph with record:=true until an episode has ended and rewards flowed;
    stop it (Ctrl-C) and hand over what the monitor saw, the runner's exit codes and the bag."""
    from lrm_ros.bringup.graph import load_graph, resolve
    from lrm_ros.bringup.session import running_graph
    from lrm_ros.ros.monitor import GraphMonitor
    tmp = tmp_path_factory.mktemp("recorder")
    bag = tmp / "bag"
    domain, env = graph_domain
    specs = resolve(load_graph("sim"), {"policy": "random", "reward": "lite", "reward_interval": "3",
                                        "max_episode_ticks": str(MAX_TICKS), "reward_prefix": "",
                                        "record": "true", "record_path": str(bag)})
    assert sorted(s.executable for s in specs) == ["bag_recorder", "camera_ingest", "maniskill_bridge",
                                                   "reward_model", "scripted_policy"]
    monitor = GraphMonitor([NS])
    rec = monitor.records[NS]

    def count(topic):
        return int(monitor.node_diagnostics("/bag_recorder").get(f"count:/{NS}/{topic}", 0))

    with running_graph(specs, env=env, log=tmp / "nodes.log", monitor=monitor) as g:
        g.wait_up(lambda _: any(t.end for t in rec.ticks) and len(rec.held) >= 3
                  and count("control/tick") >= MAX_TICKS + 2
                  and count("reward/held") >= 1 and count("reward/result") >= 1
                  and count("camera/image_raw") >= 1 and count("task/instruction") >= 1, STARTUP_S,
                  lambda: "no episode end, held rewards and recording: diagnostics "
                  f"{monitor.node_diagnostics('/bag_recorder')}")
        codes = g.runner.stop()             # SIGINT: the recorder closes the bag
        mon_ticks = [(t.episode, t.tick) for t in rec.ticks]
        yield {"ticks": mon_ticks, "instruction": rec.instruction, "codes": codes, "bag": bag,
               "log": g.log_text()}


def test_node_records_the_graph_and_closes_the_bag_on_ctrl_c(recorded):
    bag_path, log = recorded["bag"], recorded["log"]
    assert recorded["codes"]["bag_recorder"] == 0, recorded["codes"]
    assert (bag_path / "metadata.yaml").is_file(), "bag not closed on SIGINT:\n" + log[-3000:]
    assert f"recording 14 topic(s) of envs ['env0'] into {bag_path}" in log
    assert "[bag_recorder]" in log and f"bag {bag_path}:" in log     # the summary at close
    bag, conns = _read(bag_path)

    # Control ticks: the same (episode, tick) sequence as the monitor over the common period.
    rec_ticks = [(m.episode, m.tick) for _, _, m in bag[f"/{NS}/control/tick"]]
    mon_ticks = recorded["ticks"]
    common = set(rec_ticks) & set(mon_ticks)
    assert len(common) >= 6, (rec_ticks, mon_ticks)
    assert len(set(rec_ticks)) == len(rec_ticks), "a tick was recorded twice"
    # the bridge held its first tick until the policy and the tick subscribers were matched
    # (BridgeConfig.start_wait_s), so the first episode is whole for the monitor and the bag
    assert mon_ticks[0] == (0, 0) and rec_ticks[0] == (0, 0), (mon_ticks[:3], rec_ticks[:3])

    def window(seq):
        idx = [i for i, x in enumerate(seq) if x in common]
        return seq[idx[0]:idx[-1] + 1]

    assert window(rec_ticks) == window(mon_ticks)
    log_times = [t for t, _, _ in bag[f"/{NS}/control/tick"]]
    assert log_times == sorted(log_times)

    # The latched instruction, though published before the recorder subscribed.
    instructions = [m.data for _, _, m in bag[f"/{NS}/task/instruction"]]
    assert instructions and instructions[-1] == recorded["instruction"]
    assert "cube" in instructions[0].lower()
    from rosbags.interfaces import QosDurability, QosReliability
    (q,) = conns[f"/{NS}/task/instruction"].ext.offered_qos_profiles
    assert q.durability == QosDurability.TRANSIENT_LOCAL

    held = [m for _, _, m in bag[f"/{NS}/reward/held"]]
    assert held and all(m.model_id.startswith("lite") for m in held)
    assert {(m.episode, m.tick) for m in held} <= set(rec_ticks) | set(mon_ticks)

    images = [m for _, kind, m in bag[f"/{NS}/camera/image_raw"]]
    assert images
    for img in images[:3]:
        assert (img.width, img.height, img.encoding) == (256, 256, "rgb8")
        assert len(img.data) == img.step * img.height == 256 * 256 * 3
    (q,) = conns[f"/{NS}/camera/image_raw"].ext.offered_qos_profiles
    assert q.reliability == QosReliability.BEST_EFFORT

    for topic in ("sim/oracle", "joint_states", "camera/camera_info", "camera/frame",
                  "policy/command", "reward/result"):
        assert f"/{NS}/{topic}" in bag, f"/{NS}/{topic} not recorded; topics {sorted(bag)}"
    info = yaml.safe_load((bag_path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["storage_identifier"] == "mcap"
    assert info["message_count"] == sum(len(v) for v in bag.values())
    assert info["custom_data"]["lrm_ros.recorder"] == "bag_recorder"
