"""Recording, replay and auditing of reward runs, as users do it: a run of the sim graph is
recorded (`record:=true`), replayed into a live reward graph (`lrm-ros replay`, which records
the replayed graph again), and audited offline (`lrm-ros audit`). Real processes, real
ManiSkill, the shipped lite model; damaged and foreign bags too."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrm_ros.bags.load import bag_namespaces, load_bag
from lrm_ros.bags.reader import BagFormatError

LRM_ROS = str(Path(sys.executable).with_name("lrm-ros"))
K = 3


def _run(args, timeout=600):
    env = dict(os.environ)
    env.pop("ROS_DOMAIN_ID", None)
    return subprocess.run([LRM_ROS, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, graph_domain):
    """A recorded run: sim graph, random policy, lite reward (K=3), 6-tick episodes."""
    from lrm_ros.bringup.graph import load_graph, resolve
    from lrm_ros.bringup.session import running_graph
    from lrm_ros.ros.monitor import GraphMonitor
    tmp = tmp_path_factory.mktemp("audit")
    bag = tmp / "run"
    domain, env = graph_domain
    specs = resolve(load_graph("sim"), {"env_id": "PushCube-v1", "policy": "random", "reward": "lite",
                                        "reward_interval": str(K), "max_episode_ticks": "6",
                                        "record": "true", "record_path": str(bag), "reward_prefix": ""})
    with running_graph(specs, env=env, log=tmp / "nodes.log", monitor=GraphMonitor(["env0"])) as g:
        # the recorder finds topics once a second, so count what it recorded, not what ran:
        # 50 recorded ticks are about 7 episodes of 7 ticks
        g.wait_up(lambda mon: int(mon.node_diagnostics("/bag_recorder").get(
            "count:/env0/control/tick", 0)) >= 50, 300,
            lambda: f"fewer than 50 ticks recorded: {g.monitor.node_diagnostics('/bag_recorder')}")
    return {"bag": bag, "tmp": tmp}


@pytest.fixture(scope="module")
def replayed(recorded):
    out = recorded["tmp"] / "replay"
    again = recorded["tmp"] / "replayed_bag"
    proc = _run(["replay", str(recorded["bag"]), "reward:=lite", f"reward_interval:={K}",
                 "--record", str(again), "--out", str(out)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return {"out": out, "bag": again, "report": json.loads((out / "replay.json").read_text())}


@pytest.fixture(scope="module")
def audited(recorded):
    out = recorded["tmp"] / "audit"
    proc = _run(["audit", str(recorded["bag"]), "--backend", "lite", "--interval", str(K), "--out", str(out),
                 "--no-progress"])
    report = json.loads((out / "audit.json").read_text())
    # exit 1 exactly when the audit lists problems (episodes it could not score), else 0
    assert proc.returncode == (1 if report["problems"] else 0), proc.stdout[-2000:] + proc.stderr[-3000:]
    return {"out": out, "report": report, "proc": proc}


def _decoded(bag, topic):
    from rosbags.rosbag2 import Reader
    from lrm_ros.bags.types import make_typestore
    ts = make_typestore()
    out = {}
    with Reader(bag) as r:
        conns = [c for c in r.connections if c.topic == topic]
        for c, _, raw in r.messages(connections=conns):
            m = ts.deserialize_cdr(raw, c.msgtype)
            key = (m.header.stamp.sec, m.header.stamp.nanosec, getattr(m, "tick", None))
            out[key] = m
    return out


def test_record_then_replay_round_trip_is_equal_on_decoded_fields(recorded, replayed):
    assert bag_namespaces(recorded["bag"]) == ["env0"]
    tick_stamps = {k[:2] for k in _decoded(recorded["bag"], "/env0/control/tick")}
    for topic, fields in (("/env0/control/tick", ("episode", "tick", "episode_start", "episode_end", "end_reason")),
                          ("/env0/sim/oracle", ("episode", "tick", "dense_reward", "success")),
                          ("/env0/joint_states", ("name", "position", "velocity")),
                          ("/env0/camera/image_raw", ("height", "width", "encoding", "step", "data"))):
        a, b = _decoded(recorded["bag"], topic), _decoded(replayed["bag"], topic)
        # what belongs to a recorded tick (the recorder may have started a topic before
        # control/tick; such leading messages are replayed in a burst, best effort)
        a = {k: v for k, v in a.items() if k[:2] in tick_stamps}
        common = set(a) & set(b)
        assert len(common) >= 0.9 * len(a) and len(common) >= 6, (topic, len(a), len(b), len(common))
        for k in common:
            for f in fields:
                x, y = getattr(a[k], f), getattr(b[k], f)
                assert np.array_equal(np.asarray(x), np.asarray(y)), (topic, k, f)
    (instr,) = {m.data for m in _decoded_plain(replayed["bag"], "/env0/task/instruction")}
    assert "cube" in instr


def _decoded_plain(bag, topic):
    from rosbags.rosbag2 import Reader
    from lrm_ros.bags.types import make_typestore
    ts = make_typestore()
    with Reader(bag) as r:
        conns = [c for c in r.connections if c.topic == topic]
        return [ts.deserialize_cdr(raw, c.msgtype) for c, _, raw in r.messages(connections=conns)]


def test_offline_scoring_equals_live_rescoring(replayed, audited):
    live = {(x["episode"], x["query_tick"]): x["value"] for x in replayed["report"]["envs"]["env0"]["results"]
            if x["status"] == 0}
    offline = {}
    for ep in audited["report"]["episodes"]:
        s = ep["sources"]["rescored"]
        offline.update({(ep["episode"], t): v for t, v in zip(s["query_ticks"], s["query_values"])})
    common = set(live) & set(offline)
    assert len(common) >= 0.9 * len(offline) and len(common) >= 4, (sorted(live), sorted(offline))
    # lockstep: the reward node itself reports that every query got its own tick's frame,
    # except where the recording has none (then it used the nearest, as the audit does)
    counters = replayed["report"]["reward_node"]
    assert counters["env0_frames_late"] + counters["env0_frames_missing"] == \
        counters["env0_queries_without_recorded_frame"], counters
    for k in common:
        assert abs(live[k] - offline[k]) < 1e-4, (k, live[k], offline[k])
    # and every replayed tick got a held reward
    ticks = {(h["episode"], h["tick"]) for h in replayed["report"]["envs"]["env0"]["held"]}
    eps = load_bag(Path(audited["report"]["bags"][0]), namespace="env0").episodes
    want = {(e.episode, int(t)) for e in eps for t in e.ticks}
    assert len(want & ticks) >= 0.9 * len(want), (sorted(want - ticks))


@pytest.fixture(scope="module")
def holed(recorded):
    """The recorded bag without the camera image of one mid-episode query tick and of one
    terminal tick (a best-effort camera drops frames), replayed and audited."""
    from rosbags.rosbag2 import Reader
    from lrm_ros.bags.recorder import BagRecorder
    from lrm_ros.bags.types import make_typestore
    from lrm_ros.replay import header_stamp_ns
    ts = make_typestore()
    with Reader(recorded["bag"]) as r:
        ticks = [ts.deserialize_cdr(raw, c.msgtype) for c, _, raw in
                 r.messages(connections=[c for c in r.connections if c.topic == "/env0/control/tick"])]
    stamp = lambda m: m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec  # noqa: E731
    eps = sorted({m.episode for m in ticks if m.tick == 0})
    mid = next(m for m in ticks if m.episode == eps[1] and m.tick == K and not m.episode_end)
    end = next(m for m in ticks if m.episode == eps[2] and m.episode_end)
    drop = {stamp(mid), stamp(end)}
    bag = recorded["tmp"] / "holed_bag"
    rec = BagRecorder(bag)
    with Reader(recorded["bag"]) as r:
        for c in r.connections:
            rec.add_topic(c.topic, c.msgtype)
        for c, t, raw in r.messages():
            if c.topic == "/env0/camera/image_raw" and header_stamp_ns(bytes(raw)) in drop:
                continue
            rec.write(c.topic, bytes(raw), t)
    rec.close()
    out = recorded["tmp"] / "holed"
    rp = _run(["replay", str(bag), "reward:=lite", f"reward_interval:={K}", "--out", str(out / "replay")])
    au = _run(["audit", str(bag), "--backend", "lite", "--interval", str(K), "--out", str(out / "audit"),
               "--no-progress"])
    return {"keys": [(mid.episode, mid.tick), (end.episode, end.tick)], "replay": rp, "audit": au,
            "replayed": json.loads((out / "replay" / "replay.json").read_text()),
            "audited": json.loads((out / "audit" / "audit.json").read_text())}


def test_frames_missing_from_the_bag_are_scored_alike_live_and_offline(holed):
    # the replay does not hang on the missing frames, says what it did, and succeeds
    assert holed["replay"].returncode == 0, holed["replay"].stdout[-2000:] + holed["replay"].stderr[-2000:]
    assert "2 queries had no frame in the bag" in holed["replay"].stdout
    counters = holed["replayed"]["reward_node"]
    assert counters["env0_queries_without_recorded_frame"] == 2
    assert counters["env0_frames_late"] + counters["env0_frames_missing"] == 2, counters
    assert holed["audit"].returncode == (1 if holed["audited"]["problems"] else 0)
    assert "without a frame of their own stamp" in holed["audit"].stdout + holed["audit"].stderr
    live = {(x["episode"], x["query_tick"]): x["value"] for x in holed["replayed"]["envs"]["env0"]["results"]
            if x["status"] == 0}
    offline = {}
    for ep in holed["audited"]["episodes"]:
        s = ep["sources"]["rescored"]
        offline.update({(ep["episode"], t): v for t, v in zip(s["query_ticks"], s["query_values"])})
    for key in holed["keys"]:                   # the mid-episode and the terminal query
        assert key in live and key in offline, (key, sorted(live), sorted(offline))
        assert abs(live[key] - offline[key]) < 1e-4, (key, live[key], offline[key])
    common = set(live) & set(offline)
    assert len(common) >= 0.9 * len(offline)
    assert all(abs(live[k] - offline[k]) < 1e-4 for k in common)


def test_audit_report_shows_recorded_rescored_and_labels(audited):
    rep, out = audited["report"], audited["out"]
    assert rep["n_episodes"] >= 3
    assert set(rep["metrics"]) == {"recorded", "rescored"}
    assert rep["metrics"]["rescored"]["label"].startswith("re-scored (lite")
    assert rep["metrics"]["recorded"]["label"].startswith("recorded (lite")
    dis = [e["disagreement"]["max"] for e in rep["episodes"]]
    finite = [d for d in dis if d is not None]
    assert finite == sorted(finite, reverse=True)          # most disagreement first
    first = rep["episodes"][0]
    assert {"recorded", "rescored"} <= set(first["sources"]) and first["success"] in (True, False)
    rec = first["sources"]["recorded"]
    assert len(rec["held"]) == first["num_ticks"] and len(rec["stale"]) == first["num_ticks"]
    html = (out / "report.html").read_text()
    assert "Episodes, most disagreement first" in html and "Metrics against the labels" in html
    plots = [e["plot"] for e in rep["episodes"] if e["plot"]]
    assert plots and all((out / p).stat().st_size > 5000 and p in html for p in plots)
    assert first["key"] in html


def test_a_truncated_bag_without_metadata_gives_partial_results(recorded, tmp_path):
    bag = tmp_path / "killed"
    shutil.copytree(recorded["bag"], bag)
    (bag / "metadata.yaml").unlink()                       # the recorder was killed
    mcap = next(bag.glob("*.mcap"))
    os.truncate(mcap, int(mcap.stat().st_size * 0.8))      # ... mid-write
    contents = load_bag(bag, namespace="env0")
    assert contents.storage == "mcap-direct" and contents.episodes
    assert any("directly" in p for p in contents.problems)
    assert any("ends early" in p for p in contents.problems)
    full = load_bag(recorded["bag"], namespace="env0")
    assert sum(e.num_ticks for e in contents.episodes) < sum(e.num_ticks for e in full.episodes)
    proc = _run(["audit", str(bag), "--out", str(tmp_path / "a"), "--no-progress"])
    assert proc.returncode == 1 and "problem:" in proc.stderr and "ends early" in proc.stderr
    assert json.loads((tmp_path / "a" / "audit.json").read_text())["n_episodes"] >= 1


def test_garbage_and_wrong_topics_are_clear_errors(recorded, tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "junk.mcap").write_bytes(b"\x89MCAP0\r\n" + os.urandom(200))
    with pytest.raises(BagFormatError, match="nothing readable"):
        load_bag(junk)
    proc = _run(["audit", str(junk), "--out", str(tmp_path / "j"), "--no-progress"])
    assert proc.returncode == 2 and "junk" in proc.stderr
    with pytest.raises(BagFormatError, match="--camera-topic"):
        load_bag(recorded["bag"], namespace="env0", camera_topic="camera/does_not_exist")
    with pytest.raises(FileNotFoundError):
        load_bag(tmp_path / "missing")


def test_a_ros2_bag_record_style_sqlite3_bag_with_a_compressed_camera(recorded, tmp_path):
    """What `ros2 bag record` makes on a ROS install: sqlite3 storage, the camera as a
    CompressedImage under the driver's name and namespace."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from lrm_ros.bags.types import make_typestore
    from lrm_ros.vision.image import encode_compressed
    src = load_bag(recorded["bag"], namespace="env0")
    ts = make_typestore()
    T = ts.types
    bag = tmp_path / "sqlite_bag"
    with Writer(bag, version=8, storage_plugin=StoragePlugin.SQLITE3) as w:
        cam = w.add_connection("/robot/color/image_raw/compressed", "sensor_msgs/msg/CompressedImage", typestore=ts)
        tick = w.add_connection("/robot/control/tick", "lrm_ros/msg/ControlTick", typestore=ts)
        ep = src.episodes[0]
        for i, (stamp, frame) in enumerate(zip(ep.stamps_ns, ep.frames)):
            hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
                sec=int(stamp) // 10**9, nanosec=int(stamp) % 10**9), frame_id="cam")
            msg = T["sensor_msgs/msg/CompressedImage"](header=hdr, format="jpeg",
                                                       data=np.frombuffer(encode_compressed(frame, "png"), np.uint8))
            w.write(cam, int(stamp), ts.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
            t = T["lrm_ros/msg/ControlTick"](header=hdr, episode=0, tick=i, episode_start=i == 0,
                                             episode_end=i == ep.num_ticks - 1, end_reason=0, fallback_count=0)
            w.write(tick, int(stamp), ts.serialize_cdr(t, "lrm_ros/msg/ControlTick"))
    got = load_bag(bag, namespace="robot", camera_topic="color/image_raw/compressed", image_size=0)
    (e,) = got.episodes
    assert e.num_ticks == ep.num_ticks and np.array_equal(e.frames, ep.frames)   # png: lossless
    assert bag_namespaces(bag) == ["robot"]
