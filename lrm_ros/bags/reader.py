"""Read lrm_ros episode bags (rosbag2, mcap or sqlite3) back into numpy arrays, without ROS.

Format: docs/DATA.md. Ticks are matched across topics by their header stamps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lrm_ros.common.stamps import stamp_ns

from .types import make_typestore

__all__ = ["Episode", "read_episodes", "BagFormatError"]

REQUIRED_TOPICS = ("camera/image_raw", "joint_states", "control/tick", "sim/oracle")


class BagFormatError(ValueError):
    """The bag cannot be read or lacks what an lrm_ros episode needs."""


@dataclass
class Episode:
    task: str  # ManiSkill env id (from sim/oracle), "" when the bag has no oracle info
    instruction: str
    episode: int  # ControlTick.episode
    ticks: np.ndarray  # (T,) int64
    stamps_ns: np.ndarray  # (T,) int64 header stamps
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    actions: np.ndarray  # (T-1, A) float64: the command applied at ticks 0..T-2 (T-1 rows)
    joint_names: list[str]
    joint_positions: np.ndarray  # (T, J) float64
    joint_velocities: np.ndarray  # (T, J) float64
    dense_rewards: np.ndarray  # (T,) float64, NaN where the task has none
    normalized_dense_rewards: np.ndarray  # (T,)
    successes: np.ndarray  # (T,) bool
    failures: np.ndarray  # (T,) bool
    episode_end: bool  # the last tick carries episode_end
    end_reason: int  # ControlTick.END_* of the last tick
    extra: dict = field(default_factory=dict)

    @property
    def num_ticks(self) -> int:
        return int(self.ticks.size)

    @property
    def success(self) -> bool:
        return bool(self.successes[-1]) if self.successes.size else False


def _image(msg) -> np.ndarray:
    h, w, enc = int(msg.height), int(msg.width), msg.encoding
    if enc not in ("rgb8", "bgr8"):
        raise BagFormatError(f"camera/image_raw encoding {enc!r} not supported (rgb8, bgr8)")
    step = int(msg.step) or w * 3
    buf = np.asarray(msg.data, dtype=np.uint8)
    img = buf[: h * step].reshape(h, step)[:, : w * 3].reshape(h, w, 3)
    return img[..., ::-1].copy() if enc == "bgr8" else img.copy()


def read_episodes(bag_path: Path | str, *, namespace: str = "") -> list[Episode]:
    """All episodes in a bag, in order. ``namespace`` prefixes the topic names (e.g. "/env0")."""
    from rosbags.rosbag2 import Reader

    path = Path(bag_path)
    if not path.exists():
        raise FileNotFoundError(f"bag {path} does not exist")
    ns = namespace.rstrip("/")

    def topic(name: str) -> str:
        return f"{ns}/{name}" if ns else name

    ts = make_typestore()
    try:
        reader = Reader(path)
        reader.open()
    except Exception as e:
        raise BagFormatError(f"cannot open {path} as a rosbag2 bag: {type(e).__name__}: {e}") from e
    try:
        present = {c.topic for c in reader.connections}
        want = {topic(t) for t in REQUIRED_TOPICS}
        missing = sorted(want - present)
        if missing:
            raise BagFormatError(
                f"{path} lacks topic(s) {missing} needed for episodes; it has {sorted(present)}"
            )
        wanted = [c for c in reader.connections
                  if c.topic in want | {topic("policy/command"), topic("task/instruction")}]
        by_stamp: dict[str, dict[int, object]] = {t: {} for t in
                                                  ("camera/image_raw", "joint_states", "sim/oracle", "policy/command")}
        ticks: list[tuple[int, object]] = []
        instructions: list[tuple[int, str]] = []
        try:
            for conn, logtime, raw in reader.messages(connections=wanted):
                name = conn.topic[len(ns) + 1:] if ns else conn.topic
                msg = ts.deserialize_cdr(raw, conn.msgtype)
                if name == "task/instruction":
                    instructions.append((logtime, msg.data))
                elif name == "control/tick":
                    ticks.append((stamp_ns(msg.header), msg))
                elif name == "policy/command":  # Float64MultiArray has no header: its log time is the tick's stamp
                    by_stamp[name][logtime] = msg
                else:
                    by_stamp[name][stamp_ns(msg.header)] = msg
        except BagFormatError:
            raise
        except Exception as e:
            raise BagFormatError(f"cannot read messages of {path} (corrupt?): {type(e).__name__}: {e}") from e
    finally:
        reader.close()

    # split ControlTick messages into episodes
    groups: list[list[tuple[int, object]]] = []
    for stamp, msg in ticks:
        if msg.episode_start or not groups or groups[-1][-1][1].episode != msg.episode:
            groups.append([])
        groups[-1].append((stamp, msg))

    episodes: list[Episode] = []
    for group in groups:
        stamps = [s for s, _ in group]
        try:
            imgs = [by_stamp["camera/image_raw"][s] for s in stamps]
            joints = [by_stamp["joint_states"][s] for s in stamps]
            oracle = [by_stamp["sim/oracle"].get(s) for s in stamps]
        except KeyError as e:
            raise BagFormatError(f"{path}: no camera frame / joint state with the stamp {e} of a control tick") from None
        last = group[-1][1]
        cmd_stamps = stamps[:-1] if last.episode_end else stamps
        cmds = [by_stamp["policy/command"].get(s) for s in cmd_stamps]
        if any(c is None for c in cmds):
            n = sum(c is None for c in cmds)
            raise BagFormatError(f"{path}: episode {last.episode} has {n} tick(s) without a policy/command")
        instruction = ""
        for logtime, text in instructions:
            if logtime <= stamps[0]:
                instruction = text
        if not instruction and instructions:
            instruction = instructions[0][1]
        nan = float("nan")
        episodes.append(Episode(
            task=next((o.env_id for o in oracle if o is not None), ""),
            instruction=instruction,
            episode=int(last.episode),
            ticks=np.array([m.tick for _, m in group], dtype=np.int64),
            stamps_ns=np.array(stamps, dtype=np.int64),
            frames=np.stack([_image(m) for m in imgs]),
            actions=(np.stack([np.asarray(c.data, dtype=np.float64) for c in cmds])
                     if cmds else np.zeros((0, 0))),
            joint_names=list(joints[0].name),
            joint_positions=np.stack([np.asarray(j.position, dtype=np.float64) for j in joints]),
            joint_velocities=np.stack([np.asarray(j.velocity, dtype=np.float64) for j in joints]),
            dense_rewards=np.array([o.dense_reward if o is not None else nan for o in oracle]),
            normalized_dense_rewards=np.array([o.normalized_dense_reward if o is not None else nan for o in oracle]),
            successes=np.array([bool(o.success) if o is not None else False for o in oracle]),
            failures=np.array([bool(o.failure) if o is not None else False for o in oracle]),
            episode_end=bool(last.episode_end),
            end_reason=int(last.end_reason),
        ))
    return episodes
