"""Tolerant reading of any rosbag2 bag into lrm_ros episodes, for replay and auditing.

`read_episodes` (reader.py) is strict: it reads the demonstration bags this project writes
and fails on anything unexpected. `load_bag` reads what users bring: bags from our recorder,
from `ros2 bag record` on a ROS install (mcap or sqlite3), a recorder killed before it wrote
metadata.yaml (the mcap file is read directly, up to where it ends), a truncated or corrupt
file, topics of unknown types, a camera as Image or CompressedImage under any name. Whatever
can be read comes back; every problem is listed in `BagContents.problems`, and only a bag
with no usable episode raises `BagFormatError`.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np

from lrm_ros.bags.reader import BagFormatError, Episode
from lrm_ros.bags.types import make_typestore
from lrm_ros.common.stamps import stamp_ns

NAN = float("nan")
_MSG_SPLIT = re.compile(r"^=+\s*\nMSG: (\S+)\s*\n", re.MULTILINE)


@dataclass
class BagContents:
    path: Path
    episodes: List[Episode]
    problems: List[str] = field(default_factory=list)
    topics: Dict[str, str] = field(default_factory=dict)       # topic -> type
    counts: Dict[str, int] = field(default_factory=dict)       # topic -> messages decoded
    storage: str = ""                                          # mcap, sqlite3, mcap-direct
    messages_read: int = 0                                     # of any topic


def _ns_topic(ns: str, name: str) -> str:
    if name.startswith("/"):
        return name
    ns = ns.strip("/")
    return f"/{ns}/{name}" if ns else f"/{name}"


def _norm(topic: str) -> str:
    return topic if topic.startswith("/") else "/" + topic


def _register_msgdef(ts, msgtype: str, text: str, encoding: str = "ros2msg") -> None:
    """Teach the typestore a type from the definition stored in the bag."""
    from rosbags.typesys import get_types_from_idl, get_types_from_msg
    if encoding == "ros2idl":
        ts.register(get_types_from_idl(text))
        return
    parts = _MSG_SPLIT.split(text)
    types = dict(get_types_from_msg(parts[0], msgtype))
    for name, body in zip(parts[1::2], parts[2::2]):
        full = name if "/msg/" in name else name.replace("/", "/msg/")
        types.update(get_types_from_msg(body, full))
    ts.register(types)


def _iter_rosbags(path: Path, ts, contents: BagContents) -> Iterator[Tuple[str, str, int, bytes]]:
    from rosbags.rosbag2 import Reader
    reader = Reader(path)
    reader.open()
    try:
        contents.storage = "rosbag2"
        for c in reader.connections:
            contents.topics[c.topic] = c.msgtype
            if c.msgtype not in ts.types and getattr(c, "msgdef", None) is not None and c.msgdef.data:
                try:
                    _register_msgdef(ts, c.msgtype, c.msgdef.data, getattr(c.msgdef, "format", "ros2msg") or "ros2msg")
                except Exception as exc:  # noqa: BLE001 - reported, topic skipped later
                    contents.problems.append(f"{c.topic}: cannot parse the definition of {c.msgtype}: {exc}")
        it = reader.messages()
        while True:
            try:
                conn, logtime, raw = next(it)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - a corrupt chunk ends the bag
                contents.problems.append(f"reading stopped early (corrupt or truncated data): "
                                         f"{type(exc).__name__}: {exc}")
                return
            yield conn.topic, conn.msgtype, logtime, raw
    finally:
        reader.close()


def _mcap_files(path: Path) -> List[Path]:
    if path.is_file():
        return [path]
    return sorted(path.glob("*.mcap"))


def _iter_mcap_direct(files: List[Path], ts, contents: BagContents) -> Iterator[Tuple[str, str, int, bytes]]:
    """Read mcap files record by record (no summary or metadata.yaml needed); stops cleanly
    where a file is truncated."""
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader
    contents.storage = "mcap-direct"
    for f in files:
        schemas: Dict[int, Schema] = {}
        channels: Dict[int, Tuple[str, str]] = {}
        try:
            with open(f, "rb") as fh:
                for rec in StreamReader(fh, skip_magic=False).records:
                    if isinstance(rec, Schema):
                        schemas[rec.id] = rec
                    elif isinstance(rec, Channel):
                        schema = schemas.get(rec.schema_id)
                        msgtype = schema.name if schema else ""
                        channels[rec.id] = (rec.topic, msgtype)
                        contents.topics[rec.topic] = msgtype
                        if schema and msgtype not in ts.types:
                            try:
                                _register_msgdef(ts, msgtype, schema.data.decode(), schema.encoding or "ros2msg")
                            except Exception as exc:  # noqa: BLE001
                                contents.problems.append(f"{rec.topic}: cannot parse the definition of "
                                                         f"{msgtype}: {exc}")
                    elif isinstance(rec, Message):
                        topic, msgtype = channels.get(rec.channel_id, ("", ""))
                        if topic:
                            yield topic, msgtype, rec.log_time, rec.data
        except Exception as exc:  # noqa: BLE001 - truncated file: keep what was read
            contents.problems.append(f"{f.name}: file ends early or is corrupt ({type(exc).__name__}: "
                                     f"{exc}); messages up to that point were read")


def _messages(path: Path, ts, contents: BagContents):
    if not path.exists():
        raise FileNotFoundError(f"bag {path} does not exist")
    try:
        gen = _iter_rosbags(path, ts, contents)
        first = next(gen, None)
    except Exception as exc:  # noqa: BLE001 - fall back to the raw mcap files
        files = _mcap_files(path)
        if not files:
            raise BagFormatError(f"cannot open {path} as a rosbag2 bag ({type(exc).__name__}: {exc}) "
                                 "and it holds no .mcap file to read directly") from None
        contents.problems.append(f"{path} cannot be opened as a rosbag2 bag ({type(exc).__name__}: "
                                 f"{exc}); reading {', '.join(f.name for f in files)} directly")
        yield from _iter_mcap_direct(files, ts, contents)
        return
    if first is not None:
        yield first
        yield from gen


def _decode_image(msg, msgtype: str) -> np.ndarray:
    from lrm_ros.vision.image import decode_compressed, decode_raw
    if msgtype.endswith("CompressedImage"):
        return decode_compressed(msg.format, msg.data)
    return decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                      is_bigendian=bool(msg.is_bigendian))


def load_bag(path, *, namespace: str = "", camera_topic: str = "camera/image_raw",
             image_size: int = 0) -> BagContents:
    """Episodes of one namespace of a bag. `camera_topic` is relative to the namespace (or
    absolute); a sensor_msgs/Image or CompressedImage. `image_size` > 0 resizes frames as
    camera_ingest does (resize + centre crop)."""
    from lrm_ros.vision.image import ImageError, resize_center_crop
    path = Path(path)
    ts = make_typestore()
    contents = BagContents(path=path, episodes=[])
    want = {k: _ns_topic(namespace, v) for k, v in {
        "camera": camera_topic, "tick": "control/tick", "joints": "joint_states",
        "oracle": "sim/oracle", "command": "policy/command", "instruction": "task/instruction",
        "held": "reward/held", "result": "reward/result"}.items()}
    role = {v: k for k, v in want.items()}
    ticks: List[Tuple[int, object]] = []
    frames: Dict[int, np.ndarray] = {}
    frame_order: List[int] = []
    joints: Dict[int, object] = {}
    oracle: Dict[int, object] = {}
    commands: Dict[int, np.ndarray] = {}
    instructions: List[Tuple[int, str]] = []
    held: Dict[Tuple[int, int], tuple] = {}
    results: Dict[Tuple[int, int], tuple] = {}
    bad: Dict[str, int] = defaultdict(int)
    unknown: Dict[str, str] = {}
    for topic, msgtype, logtime, raw in _messages(path, ts, contents):
        contents.messages_read += 1
        r = role.get(_norm(topic))
        if r is None:
            continue
        if msgtype not in ts.types:
            unknown[topic] = msgtype
            continue
        try:
            msg = ts.deserialize_cdr(raw, msgtype)
        except Exception:  # noqa: BLE001 - counted per topic
            bad[topic] += 1
            continue
        contents.counts[topic] = contents.counts.get(topic, 0) + 1
        try:
            if r == "camera":
                img = _decode_image(msg, msgtype)
                if image_size:
                    img = resize_center_crop(img, image_size, image_size)
                s = stamp_ns(msg.header)
                frames[s] = img
                frame_order.append(s)
            elif r == "tick":
                ticks.append((stamp_ns(msg.header), msg))
            elif r == "joints":
                joints[stamp_ns(msg.header)] = msg
            elif r == "oracle":
                oracle[stamp_ns(msg.header)] = msg
            elif r == "command":
                commands[logtime] = np.asarray(msg.data, np.float64)
            elif r == "instruction":
                instructions.append((logtime, msg.data))
            elif r == "held":
                held[(int(msg.episode), int(msg.tick))] = (float(msg.value), bool(msg.stale),
                                                          int(msg.query_tick), msg.model_id, msg.signal)
            elif r == "result":
                results[(int(msg.episode), int(msg.query_tick))] = (int(msg.status), float(msg.value),
                                                                   float(msg.completion), msg.model_id)
        except (ImageError, AttributeError, ValueError) as exc:
            bad[topic] += 1
            if bad[topic] == 1:
                contents.problems.append(f"{topic}: {type(exc).__name__}: {exc}")
    for topic, n in bad.items():
        contents.problems.append(f"{topic}: {n} message(s) could not be decoded and were skipped")
    for topic, msgtype in unknown.items():
        contents.problems.append(f"{topic}: message type {msgtype!r} is unknown (no definition in the "
                                 "bag or in lrm_ros); topic skipped")
    if not frames and not contents.messages_read:
        # nothing at all could be read: the camera topic is not the problem
        raise BagFormatError(f"{path}: nothing readable (no message of any topic could be read; "
                             f"the file is truncated or damaged before its first message)"
                             + (f". Problems: {'; '.join(contents.problems)}" if contents.problems else ""))
    if not frames and _norm(want["camera"]) in {_norm(t) for t in contents.topics}:
        raise BagFormatError(f"{path}: the camera topic {want['camera']} is in the bag but none of its "
                             "images could be read" + (
                                 f": {'; '.join(contents.problems)}" if contents.problems else ""))
    if not frames:
        have = ", ".join(f"{t} ({m})" for t, m in sorted(contents.topics.items())) or "none"
        raise BagFormatError(f"{path}: no readable camera images on {want['camera']}; topics in the bag: "
                             f"{have}. Pass the camera topic (Image or CompressedImage) with --camera-topic "
                             "and the namespace with --namespace" + (
                                 f". Problems: {'; '.join(contents.problems)}" if contents.problems else ""))
    if not ticks:
        contents.problems.append(f"no {want['tick']}: the {len(frames)} camera frames are read as one "
                                 "episode (ticks = frame order)")
        order = sorted(set(frame_order))
        ticks = [(s, _FakeTick(0, i, i == 0, i == len(order) - 1, 0)) for i, s in enumerate(order)]
    contents.episodes = _assemble(ticks, frames, joints, oracle, commands, instructions, held, results,
                                  contents, want)
    if not contents.episodes:
        raise BagFormatError(f"{path}: no episode could be assembled: {'; '.join(contents.problems)}")
    return contents


@dataclass
class _FakeTick:
    episode: int
    tick: int
    episode_start: bool
    episode_end: bool
    end_reason: int


def _assemble(ticks, frames, joints, oracle, commands, instructions, held, results, contents, want):
    groups: List[List[Tuple[int, object]]] = []
    seen = set()
    for stamp, msg in sorted(ticks, key=lambda x: x[0]):
        key = (int(msg.episode), int(msg.tick), bool(msg.episode_end))
        if key in seen:          # a reset request re-announces the last tick
            continue
        seen.add(key)
        if msg.episode_start or not groups or groups[-1][-1][1].episode != msg.episode:
            groups.append([])
        groups[-1].append((stamp, msg))
    frame_stamps = np.array(sorted(frames), dtype=np.int64)
    episodes = []
    for group in groups:
        last = group[-1][1]
        stamps = [s for s, _ in group]
        tick_nos = [int(m.tick) for _, m in group]
        if tick_nos[0] != 0:
            contents.problems.append(f"episode {last.episode}: recording starts at tick {tick_nos[0]} "
                                     "(joined mid-episode); episode skipped")
            continue
        if tick_nos != list(range(len(tick_nos))):
            gaps = sorted(set(range(tick_nos[-1] + 1)) - set(tick_nos))
            contents.problems.append(f"episode {last.episode}: control/tick missing for ticks "
                                     f"{gaps[:8]}{'...' if len(gaps) > 8 else ''}; episode skipped")
            continue
        imgs, late = [], 0
        for s in stamps:
            img = frames.get(s)
            if img is None:
                # as the live reward node does (IntervalHold): the next frame of the episode,
                # else the newest earlier one
                i = int(np.searchsorted(frame_stamps, s, side="right"))
                if i < len(frame_stamps) and frame_stamps[i] <= stamps[-1]:
                    img = frames[int(frame_stamps[i])]
                    late += 1
                elif i > 0:
                    img = frames[int(frame_stamps[i - 1])]
                    late += 1
            imgs.append(img)
        if any(i is None for i in imgs):
            contents.problems.append(f"episode {last.episode}: no camera frame for some of its ticks; "
                                     "episode skipped")
            continue
        shapes = {i.shape for i in imgs}
        if len(shapes) > 1:
            contents.problems.append(f"episode {last.episode}: camera frames change size {sorted(shapes)}; "
                                     "episode skipped (pass image_size to resize them)")
            continue
        if late:
            contents.problems.append(f"episode {last.episode}: {late} tick(s) without a frame of their "
                                     "own stamp use the episode's next frame (or the newest earlier one)")
        js = [joints.get(s) for s in stamps]
        orc = [oracle.get(s) for s in stamps]
        cmd_stamps = stamps[:-1] if last.episode_end else stamps
        cmds = [commands.get(s) for s in cmd_stamps]
        instruction = ""
        for logtime, text in instructions:
            if logtime <= stamps[0] or not instruction:
                instruction = text
        ep_no = int(last.episode)
        ticks_arr = np.array([m.tick for _, m in group], np.int64)
        extra = {"joints_missing": sum(j is None for j in js), "oracle_missing": sum(o is None for o in orc),
                 "commands_missing": sum(c is None for c in cmds), "frames_late": late}
        h = [held.get((ep_no, int(t))) for t in ticks_arr]
        if any(x is not None for x in h):
            extra["held_value"] = np.array([x[0] if x else NAN for x in h])
            extra["held_stale"] = np.array([bool(x[1]) if x else False for x in h])
            extra["held_query_tick"] = np.array([x[2] if x else -1 for x in h], np.int64)
            extra["held_model"] = next(x[3] for x in h if x)
            extra["held_signal"] = next(x[4] for x in h if x)
        rq = sorted((t, v) for (e, t), v in results.items() if e == ep_no)
        if rq:
            extra["result_ticks"] = np.array([t for t, _ in rq], np.int64)
            extra["result_status"] = np.array([v[0] for _, v in rq], np.int64)
            extra["result_value"] = np.array([v[1] for _, v in rq])
        jdim = next((len(j.position) for j in js if j is not None), 0)
        cdim = next((len(c) for c in cmds if c is not None), 0)
        episodes.append(Episode(
            task=next((o.env_id for o in orc if o is not None), ""),
            instruction=instruction, episode=ep_no, ticks=ticks_arr,
            stamps_ns=np.array(stamps, np.int64), frames=np.stack(imgs),
            actions=np.stack([c if c is not None else np.full(cdim, NAN) for c in cmds]) if cdim
            else np.zeros((len(cmds), 0)),
            joint_names=list(next((j.name for j in js if j is not None), [])),
            joint_positions=np.stack([np.asarray(j.position, np.float64) if j is not None else np.full(jdim, NAN)
                                      for j in js]) if jdim else np.zeros((len(js), 0)),
            joint_velocities=np.stack([np.asarray(j.velocity, np.float64) if j is not None and len(j.velocity)
                                       else np.full(jdim, NAN) for j in js]) if jdim else np.zeros((len(js), 0)),
            dense_rewards=np.array([o.dense_reward if o is not None else NAN for o in orc]),
            normalized_dense_rewards=np.array([o.normalized_dense_reward if o is not None else NAN for o in orc]),
            successes=np.array([bool(o.success) if o is not None else False for o in orc]),
            failures=np.array([bool(o.failure) if o is not None else False for o in orc]),
            episode_end=bool(last.episode_end), end_reason=int(last.end_reason), extra=extra))
    return episodes


def bag_namespaces(path) -> List[str]:
    """Namespaces with a control/tick topic in the bag (e.g. ['env0', 'env1'] or [''])."""
    from rosbags.rosbag2 import Reader
    try:
        with Reader(Path(path)) as r:
            topics = [c.topic for c in r.connections]
    except Exception:  # noqa: BLE001
        contents = BagContents(path=Path(path), episodes=[])
        for _ in _iter_mcap_direct(_mcap_files(Path(path)), make_typestore(), contents):
            pass
        topics = list(contents.topics)
    out = sorted({_norm(t)[: -len("/control/tick")].strip("/") for t in topics
                  if _norm(t).endswith("/control/tick")})
    return out or [""]
