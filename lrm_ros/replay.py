"""`lrm-ros replay BAG`: play a recorded run into a live graph so its reward node re-scores it.

The replay graph (`config/graphs/replay.yaml`: camera ingest + reward model) comes up; the
bag's camera images, `control/tick`, `task/instruction`, `sim/oracle` and `joint_states` of
each recorded namespace are published, byte for byte (header stamps unchanged), into
`/env0`, `/env1`, ... Pacing: `--rate 1` is the recorded rate, `--rate 4` four times faster;
`--rate 0` goes as fast as the reward node keeps up (each tick waits for that tick's held
reward, so no frame arrives late and the queries see exactly the recorded frames). The new
`reward/held` and `reward/result` are collected and written to `<out>/replay.json`; with
`--record` a bag of the replayed graph is recorded too (the `bag_recorder` node), which
`lrm-ros audit` compares with the original.
"""
from __future__ import annotations

import argparse
import importlib
import json
import struct
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from lrm_ros.common.stamps import stamp_ns

REPLAYED = ("control/tick", "task/instruction", "sim/oracle", "joint_states")


def _msg_class(msgtype: str):
    pkg, _, name = msgtype.partition("/msg/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def _split(topic: str, namespaces: List[str]) -> Tuple[Optional[int], str]:
    """'/env3/control/tick' -> (index of 'env3' in namespaces, 'control/tick')."""
    t = topic if topic.startswith("/") else "/" + topic
    for i, ns in enumerate(namespaces):
        prefix = f"/{ns.strip('/')}/" if ns.strip("/") else "/"
        if t.startswith(prefix):
            return i, t[len(prefix):]
    return None, ""


def load_messages(path: Path, namespaces: List[str], camera_topic: str):
    """[(env index, relative topic, msgtype, log time, raw bytes)] in log-time order, and the
    problems met while reading."""
    from lrm_ros.bags.load import BagContents, _messages
    from lrm_ros.bags.types import make_typestore
    contents = BagContents(path=path, episodes=[])
    cam = camera_topic.strip("/")
    out = []
    for topic, msgtype, logtime, raw in _messages(path, make_typestore(), contents):
        i, rel = _split(topic, namespaces)
        if i is None or (rel not in REPLAYED and rel != cam):
            continue
        out.append((i, rel, msgtype, int(logtime), bytes(raw)))
    out.sort(key=lambda m: m[3])
    return out, contents.problems


def graph_connected(mon, names: List[str]) -> bool:
    """The reward model is active and subscribed to every env's camera/frame (a frame the
    ingest publishes before that is lost, and the episode's first frame is what the
    progress signal compares with)."""
    if mon.node_diagnostics("/reward_model").get("lifecycle_state") != "active":
        return False
    for n in names:
        infos = mon.node.get_subscriptions_info_by_topic(f"/{n}/camera/frame")
        if not any(i.node_name == "reward_model" for i in infos):
            return False
    return True


def reward_node_counters(mon, names: List[str]) -> Dict[str, int]:
    """The reward model's own count of queries that did not get their tick's frame."""
    d = mon.node_diagnostics("/reward_model")
    out = {}
    for n in names:
        for k in ("frames_late", "frames_missing", "results_failed"):
            v = d.get(f"{n}_{k}")
            if v is not None:
                out[f"{n}_{k}"] = int(float(v))
    return out


def header_stamp_ns(raw: bytes) -> Optional[int]:
    """The header stamp of a serialized message that starts with a std_msgs/Header (Image,
    CompressedImage, ControlTick): after the 4-byte CDR encapsulation, int32 sec, uint32 nanosec."""
    if len(raw) < 12:
        return None
    sec, nsec = struct.unpack_from("<iI" if raw[1] == 1 else ">iI", raw, 4)
    return sec * 1_000_000_000 + nsec


def camera_stamps(msgs, camera_rel: str) -> Dict[int, set]:
    """Per env index: the header stamps of the bag's camera images."""
    stamps: Dict[int, set] = {}
    for i, rel, _, _, raw in msgs:
        if rel == camera_rel:
            stamps.setdefault(i, set()).add(header_stamp_ns(raw))
    return stamps


def queries_without_frame(msgs, ticks: Dict[int, object], stamps: Dict[int, set],
                          interval: int) -> Dict[int, int]:
    """Per env index: how many query points (tick 0, every K-th tick, episode ends) have no
    camera image with their stamp in the bag (`ticks`: message index -> decoded ControlTick).
    The reward model falls back to the episode's next frame (or its newest earlier one) for
    these, as `lrm-ros audit` does, and counts each as late."""
    out: Dict[int, int] = {}
    for k, m in ticks.items():
        i, raw = msgs[k][0], msgs[k][4]
        if m.tick == 0 or m.tick % interval == 0 or m.episode_end:
            if header_stamp_ns(raw) not in stamps.get(i, ()):
                out[i] = out.get(i, 0) + 1
    return out


def run_replay(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="lrm-ros replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag")
    p.add_argument("arguments", nargs="*", help="replay graph arguments, e.g. reward:=lite reward_signal:=tri")
    p.add_argument("--namespace", action="append", default=[],
                   help="recorded namespace(s) to replay (default: every one with control/tick)")
    p.add_argument("--camera-topic", default="camera/image_raw",
                   help="recorded camera topic (relative); a .../compressed topic is CompressedImage")
    p.add_argument("--rate", type=float, default=0.0, help="1 = recorded rate; 0 = as fast as scored")
    p.add_argument("--record", default="", help="also record the replayed graph into this bag")
    p.add_argument("--out", type=Path, default=Path("out/replay"))
    p.add_argument("--timeout", type=float, default=30.0, help="seconds one tick may wait for its reward")
    a = p.parse_args(argv)
    from tqdm import tqdm
    from lrm_ros.bags.load import bag_namespaces
    from lrm_ros.bags.reader import BagFormatError
    from lrm_ros.bringup.graph import load_graph, parse_launch_arguments, resolve
    from lrm_ros.bringup.session import running_graph
    from lrm_ros.ros.env import apply_ros_environment, fresh_domain_id, ros_environment

    bag = Path(a.bag)
    try:
        namespaces = a.namespace or bag_namespaces(bag)
        msgs, problems = load_messages(bag, namespaces, a.camera_topic)
    except (BagFormatError, FileNotFoundError) as exc:
        print(f"lrm-ros replay: {exc}", file=sys.stderr)
        return 2
    for pr in problems:
        print(f"problem: {pr}", file=sys.stderr)
    if not any(rel == "control/tick" for _, rel, *_ in msgs):
        print(f"lrm-ros replay: {bag} has no control/tick in namespace(s) {namespaces}; use "
              "--namespace (see `lrm-ros audit` for bags without ticks)", file=sys.stderr)
        return 2
    compressed = a.camera_topic.rstrip("/").endswith("compressed")
    names = [f"env{i}" for i in range(len(namespaces))]
    overrides = {"num_envs": str(len(names)),
                 "camera_input": "camera/image_raw/compressed" if compressed else "camera/image_raw"}
    overrides.update(parse_launch_arguments(a.arguments))
    graph = load_graph("replay")
    specs = resolve(graph, overrides)
    interval = int(overrides.get("reward_interval", graph["arguments"]["reward_interval"]["default"]))
    if a.record:
        rec = resolve(load_graph("sim"), {"num_envs": str(len(names)), "policy": "none", "reward": "none",
                                          "record": "true", "record_path": str(Path(a.record).resolve())})
        specs += [s for s in rec if s.executable == "bag_recorder"]
    domain = fresh_domain_id()
    env = ros_environment(domain_id=domain)
    apply_ros_environment(domain_id=domain)
    from lrm_ros.ros.monitor import GraphMonitor
    from lrm_ros.ros.qos import LATCHED, RELIABLE, SENSOR
    from rclpy.serialization import deserialize_message
    a.out.mkdir(parents=True, exist_ok=True)
    log_path = a.out / "nodes.log"
    ticks = {k: deserialize_message(raw, _msg_class(t)) for k, (_, rel, t, _, raw) in enumerate(msgs)
             if rel == "control/tick"}
    n_ticks = len(ticks)
    cam_stamps = camera_stamps(msgs, a.camera_topic.strip("/"))
    absent = queries_without_frame(msgs, ticks, cam_stamps, interval)
    print(f"[replay] {bag}: namespaces {namespaces} -> {names}, {n_ticks} ticks, rate "
          f"{a.rate or 'as fast as scored'}; node output -> {log_path}", flush=True)
    code = 0
    counters: Dict[str, int] = {}
    mon = GraphMonitor(names, node_name="lrm_replay")
    try:
        with running_graph(specs, env=env, log=log_path, monitor=mon) as g:
            runner = g.runner
            pubs: Dict[Tuple[int, str], object] = {}
            camera_in = a.camera_topic.strip("/")           # the recorded camera goes to the ingest's input
            camera_out = overrides["camera_input"]
            for i, rel, msgtype, _, _ in msgs:
                if (i, rel) not in pubs:
                    topic = f"/{names[i]}/" + (camera_out if rel == camera_in else rel)
                    qos = LATCHED if rel == "task/instruction" else SENSOR if rel.startswith("camera") else RELIABLE
                    pubs[(i, rel)] = mon.node.create_publisher(_msg_class(msgtype), topic, qos)
            # every publisher matched by the graph's subscriber and our monitor's: nothing
            # published is lost to discovery
            need = 3 if a.record else 2          # (+ the recorder)
            ready = mon.wait_for(lambda: all(pub.get_subscription_count() >= need for (_, rel), pub in pubs.items()
                                             if rel in ("control/tick", "task/instruction")
                                             or rel == camera_in)
                                 and graph_connected(mon, names), 120)
            if not ready:
                raise RuntimeError("the replay graph did not come up: " + (
                    "; ".join(runner.describe_death(pr) for pr in runner.dead()) or
                    f"the reward model is not active or not subscribed to camera/frame "
                    f"(reward_model diagnostics: {mon.node_diagnostics('/reward_model') or 'none'})"))
            time.sleep(1.0)     # discovery of our publishers by the nodes
            t_start, log0 = time.monotonic(), msgs[0][3]
            with tqdm(total=n_ticks, desc="replaying", unit="tick", file=sys.stdout) as bar:
                for k, (i, rel, _, logtime, raw) in enumerate(msgs):
                    if a.rate > 0:
                        delay = (logtime - log0) / 1e9 / a.rate - (time.monotonic() - t_start)
                        if delay > 0:
                            time.sleep(delay)
                    pubs[(i, rel)].publish(raw)
                    if rel != "control/tick":
                        continue
                    bar.update(1)
                    if a.rate <= 0:
                        m = ticks[k]
                        rec_i = mon.records[names[i]]
                        # a due query must get this tick's frame: wait for its result, so the
                        # next tick cannot make the reward node fall back to an older frame.
                        # A tick the bag has no frame for is answered only once later ticks
                        # (or the next episode) come: no waiting for it.
                        due = (m.tick > 0 and m.tick % interval == 0) or m.episode_end
                        stamp = stamp_ns(m.header)
                        has_frame = stamp in cam_stamps.get(i, ())
                        ok = mon.wait_for(lambda: any(h.episode == m.episode and h.tick == m.tick
                                                      for h in rec_i.held[-50:]) and
                                          (not has_frame or any(f.stamp_ns == stamp for f in rec_i.frames[-50:])) and
                                          (not due or not has_frame or
                                           any(x.episode == m.episode and x.query_tick == m.tick
                                               for x in rec_i.results[-50:])), a.timeout)
                        if not ok:
                            print(f"[replay] no reward for {names[i]} episode {m.episode} tick "
                                  f"{m.tick} within {a.timeout} s", file=sys.stderr)
                            code = 1
                    if runner.dead():
                        raise RuntimeError("; ".join(runner.describe_death(pr) for pr in runner.dead()))
            # let the last queries (the terminal ones) come back
            last = -1
            while True:
                n = sum(len(mon.records[n_].results) for n_ in names)
                if n == last:
                    break
                last = n
                mon.wait_for(lambda: sum(len(mon.records[n_].results) for n_ in names) > last, 3.0)
            d0 = mon.node_diagnostics("/reward_model")        # one more report after the last result
            mon.wait_for(lambda: mon.node_diagnostics("/reward_model") is not d0, 3.0)
            counters = reward_node_counters(mon, names)
            for i, n in enumerate(names):
                counters[f"{n}_queries_without_recorded_frame"] = absent.get(i, 0)
                off = counters.get(f"{n}_frames_late", 0) + counters.get(f"{n}_frames_missing", 0)
                if off > absent.get(i, 0):
                    print(f"[replay] warning: {n}: the reward model scored {off} queries without their "
                          f"tick's frame, {absent.get(i, 0)} of them because the bag has none; the others "
                          "can differ from `lrm-ros audit`", file=sys.stderr)
                    if a.rate <= 0:
                        code = code or 1
                elif off:
                    print(f"[replay] {n}: {off} queries had no frame in the bag and used the nearest one "
                          "(as `lrm-ros audit` does)")
    except RuntimeError as exc:
        print(f"[replay] FAILED: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    report = {"bag": str(bag), "namespaces": dict(zip(names, namespaces)), "problems": problems,
              "arguments": overrides, "reward_node": counters, "envs": {}}
    for n in names:
        r = mon.records[n]
        report["envs"][n] = {"held": [{k: v for k, v in h._asdict().items() if k != "t_recv"} for h in r.held],
                             "results": [x._asdict() for x in r.results]}
    (a.out / "replay.json").write_text(json.dumps(report, indent=1, default=float))
    total_q = sum(len(v["results"]) for v in report["envs"].values())
    print(f"[replay] {sum(len(v['held']) for v in report['envs'].values())} held rewards, {total_q} "
          f"query results -> {a.out / 'replay.json'}" + (f"; bag {a.record}" if a.record else ""))
    return code or (1 if problems else 0)
