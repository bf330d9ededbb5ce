"""ROS-free logic of the policy node: weight hand-off and observation matching.

`PolicyRuntime` owns the running adapter and its version. A new checkpoint announced by the
learner is loaded and validated at once, off the control path, and kept as *pending*; it
replaces the running policy only at the next episode start, in one assignment, so an episode
never mixes two policies and a half-written or corrupt file never runs (the old policy keeps
running and the refusal is counted and reported).

`ObservationSync` pairs each control tick with the camera frame and joint state that carry
its stamp. Topics arrive in any order; a tick whose frame is late waits up to `wait_s`, then
uses the newest frame it has (counted as late) or is skipped (counted), which the bridge sees
as a missed command and handles with its fallback.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np

from lrm_ros.policy.adapter import PolicyAdapter


@dataclass
class Offer:
    version: int
    path: str
    sha256: str
    adapter: PolicyAdapter


class PolicyRuntime:
    def __init__(self, adapter: PolicyAdapter, loader: Callable[[str, str], PolicyAdapter],
                 version: int = 0, checkpoint: str = ""):
        """`loader(path, sha256)` builds and validates a new adapter or raises ValueError."""
        self._lock = threading.Lock()
        self.adapter = adapter
        self.version = int(version)
        self.checkpoint = checkpoint
        self._loader = loader
        self._pending: Optional[Offer] = None
        self.swaps = 0
        self.refused = 0
        self.last_refusal = ""

    @property
    def pending_version(self) -> Optional[int]:
        p = self._pending
        return None if p is None else p.version

    def offer(self, version: int, path: str, sha256: str) -> Tuple[bool, str]:
        """Validate a new checkpoint now; it runs from the next episode start.
        Returns (accepted, message)."""
        version = int(version)
        newest = max(self.version, self.pending_version or -1)
        if version <= newest:
            return self._refuse(f"checkpoint version {version} is not newer than {newest}; ignored")
        try:
            adapter = self._loader(path, sha256)
        except (ValueError, FileNotFoundError, OSError, RuntimeError) as exc:
            return self._refuse(f"checkpoint version {version} refused, policy "
                                f"{self.version} keeps running: {exc}")
        with self._lock:
            self._pending = Offer(version, path, sha256, adapter)
        return True, f"checkpoint version {version} validated; runs from the next episode"

    def _refuse(self, message: str) -> Tuple[bool, str]:
        with self._lock:
            self.refused += 1
            self.last_refusal = message
        return False, message

    def on_episode_start(self) -> Optional[int]:
        """Swap in the pending policy, if any; returns its version."""
        with self._lock:
            offer, self._pending = self._pending, None
            if offer is None:
                return None
            self.adapter, self.version, self.checkpoint = offer.adapter, offer.version, offer.path
            self.swaps += 1
            return offer.version


@dataclass
class TickInfo:
    episode: int
    tick: int
    stamp_ns: int
    episode_start: bool
    episode_end: bool


@dataclass
class ReadyObservation:
    tick: TickInfo
    frame: np.ndarray
    joint_positions: np.ndarray
    late: bool                   # the frame or joint state is older than the tick


class ObservationSync:
    def __init__(self, wait_s: float = 0.5, capacity: int = 16,
                 clock: Callable[[], float] = time.monotonic):
        if wait_s < 0:
            raise ValueError(f"frame wait must be >= 0 s, got {wait_s}")
        self.wait_s = float(wait_s)
        self._clock = clock
        self._cap = max(2, int(capacity))
        self._frames: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self._joints: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self._pending: List[Tuple[TickInfo, float]] = []
        self.late = 0
        self.skipped = 0
        self.superseded = 0

    @staticmethod
    def _put(store: "OrderedDict[int, np.ndarray]", stamp: int, value, cap: int) -> None:
        store[stamp] = value
        store.move_to_end(stamp)
        while len(store) > cap:
            store.popitem(last=False)

    def on_frame(self, stamp_ns: int, frame: np.ndarray) -> List[ReadyObservation]:
        self._put(self._frames, int(stamp_ns), frame, self._cap)
        return self._resolve(force=False)

    def on_joints(self, stamp_ns: int, positions: np.ndarray) -> List[ReadyObservation]:
        self._put(self._joints, int(stamp_ns), np.asarray(positions, np.float64), self._cap)
        return self._resolve(force=False)

    def on_tick(self, tick: TickInfo) -> List[ReadyObservation]:
        """Ticks that end an episode expect no command and are not queued."""
        if tick.episode_end:
            return []
        if self._pending:          # a newer tick makes older waiting ones pointless
            self.superseded += len(self._pending)
            self._pending = []
        self._pending.append((tick, self._clock()))
        return self._resolve(force=False)

    def poll(self) -> List[ReadyObservation]:
        """Call periodically: ticks that waited longer than wait_s use the newest data."""
        return self._resolve(force=True)

    @staticmethod
    def _newest_before(store: "OrderedDict[int, np.ndarray]", stamp: int):
        best = None
        for s, v in store.items():
            if s <= stamp and (best is None or s > best[0]):
                best = (s, v)
        return best

    def _resolve(self, force: bool) -> List[ReadyObservation]:
        out, keep = [], []
        now = self._clock()
        for tick, since in self._pending:
            frame = self._frames.get(tick.stamp_ns)
            joints = self._joints.get(tick.stamp_ns)
            if frame is not None and joints is not None:
                out.append(ReadyObservation(tick, frame, joints, False))
                continue
            if not force or now - since < self.wait_s:
                keep.append((tick, since))
                continue
            f = (tick.stamp_ns, frame) if frame is not None else self._newest_before(self._frames, tick.stamp_ns)
            j = (tick.stamp_ns, joints) if joints is not None else self._newest_before(self._joints, tick.stamp_ns)
            if f is None or j is None:
                self.skipped += 1
                continue
            self.late += 1
            out.append(ReadyObservation(tick, f[1], j[1], True))
        self._pending = keep
        return out


@dataclass(frozen=True)
class PolicyNodeConfig:
    """Parameters of the policy node."""
    adapter: str = field(default="tiny_vla", metadata={"help": (
        "tiny_vla (embedded) or package.module:ClassName of an external PolicyAdapter")})
    checkpoint: str = field(default="", metadata={"help": (
        "policy checkpoint to start with ('' = the shipped tiny_vla)")})
    deterministic: bool = field(default=False, metadata={"help": (
        "act with the distribution's mean (evaluation) instead of sampling (RL)")})
    seed: int = field(default=0, metadata={"help": "sampling seed (env_index is added)"})
    env_index: int = field(default=0, metadata={"help": "index of the environment"})
    action_low: float = field(default=-1.0, metadata={"help": "lower bound every action component is clipped to"})
    action_high: float = field(default=1.0, metadata={"help": "upper bound every action component is clipped to"})
    frame_wait_s: float = field(default=0.5, metadata={"help": (
        "how long a tick waits for its camera frame and joint state before using the newest ones")})
    update_topic: str = field(default="/learner/policy_update", metadata={"help": (
        "where the learner announces new checkpoints ('' = never swap)")})
    cpu_threads: int = field(default=1, metadata={"help": "torch threads (0 = torch's default)"})
    device: str = field(default="cpu", metadata={"help": "torch device of the adapter"})

    def __post_init__(self):
        if not self.action_low < self.action_high:
            raise ValueError(f"action_low ({self.action_low}) must be < action_high ({self.action_high})")
        if self.frame_wait_s < 0 or self.cpu_threads < 0:
            raise ValueError("frame_wait_s and cpu_threads must be >= 0")
        from lrm_ros.policy.adapter import adapter_class
        adapter_class(self.adapter)      # fails early with the list of known adapters


def build_adapter(cfg: PolicyNodeConfig, checkpoint: str = "", expected_sha256: str = "",
                  share_from=None):
    """The configured adapter around `checkpoint` (default: cfg.checkpoint). `share_from`:
    a running TinyVLAAdapter whose frozen encoders the new one reuses."""
    from lrm_ros.policy.adapter import TinyVLAAdapter, adapter_class
    from lrm_ros.policy.tiny_vla import load_policy
    path = checkpoint or cfg.checkpoint
    cls = adapter_class(cfg.adapter)
    if cls is TinyVLAAdapter and isinstance(share_from, TinyVLAAdapter) and path:
        model, meta = load_policy(path, expected_sha256)
        return share_from.with_model(model, meta)
    return cls.from_checkpoint(path, device=cfg.device, expected_sha256=expected_sha256,
                               seed=cfg.seed + 7919 * cfg.env_index,
                               action_low=cfg.action_low, action_high=cfg.action_high)
