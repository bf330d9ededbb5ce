"""Interval-hold: when to query the reward model, what to publish on every tick, staleness.

One `IntervalHold` per environment. It is driven by three events, from any thread:
- `on_frame(stamp_ns, frame)`: a camera frame at model resolution arrived;
- `on_tick(...)`: a control tick arrived; returns the queries that became ready (to hand
  to the engine, never waited on) and the `Held` value to publish for this tick;
- `on_result(query, result, status)`: the engine finished (or gave up on) a query.

Queries are due at tick K, 2K, ... of an episode and (by default) at its terminal tick. The
frame of a query tick is the one whose stamp equals the tick's (the bridge stamps both
alike); since frames travel through the ingest node they can arrive after the tick, so a due
query waits (without blocking anything) for its frame. A frame that was lost is replaced by
the episode's next frame as soon as a later tick of the episode has been seen, else (after
`frame_wait_ticks` ticks, or when the episode is over: a lost terminal frame) by the newest
earlier one, or the query fails; `lrm-ros audit` reads bags the same way. The oracle
backend's sim/oracle value is waited for the same way: topics are not ordered across each
other. Snapshots per query: the current frame; the frame of the previous query point (K
ticks earlier: contrastive); the episode's first frame (progress); all query-point frames so
far (TOPReward), each only when the backend needs it.

The held value is the last good result. A failed, invalid or timed-out query keeps the last
good value and marks it stale until the next good result; a held value older than
`stale_after_ticks` is stale too. A new episode resets everything.
"""
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import FrozenSet, List, Optional, Tuple

import numpy as np

from lrm_ros.rewards.base import NAN, RewardQuery, RewardResult

DEFAULT_INTERVAL = 10   # K: the default query interval, online and offline


@dataclass(frozen=True)
class HoldConfig:
    interval: int = field(default=DEFAULT_INTERVAL, metadata={"help": "K: query the reward model every K control ticks"})
    stale_after_ticks: int = field(default=0, metadata={"help": (
        "a held value older than this many ticks is flagged stale; 0 = 2 K")})
    initial_value: float = field(default=0.0, metadata={"help": "value held before an episode's first result"})
    query_on_episode_end: bool = field(default=True, metadata={"help": "also query the terminal tick of an episode"})
    frame_wait_ticks: int = field(default=2, metadata={"help": (
        "how many ticks a due query may wait for its frame before using the newest older one "
        "(a later frame of the episode is taken as soon as its tick has been seen)")})
    max_frames: int = field(default=64, metadata={"help": (
        "most query-point frames kept per episode for TOPReward (older ones are thinned out)")})

    def __post_init__(self):
        if self.interval < 1:
            raise ValueError(f"interval (K) must be >= 1, got {self.interval}")
        if self.stale_after_ticks < 0:
            raise ValueError(f"stale_after_ticks must be >= 0 (0 = 2 K), got {self.stale_after_ticks}")
        if self.frame_wait_ticks < 0:
            raise ValueError(f"frame_wait_ticks must be >= 0, got {self.frame_wait_ticks}")
        if self.max_frames < 2:
            raise ValueError(f"max_frames must be >= 2, got {self.max_frames}")
        if not math.isfinite(self.initial_value):
            raise ValueError("initial_value must be finite")

    @property
    def stale_after(self) -> int:
        return self.stale_after_ticks or 2 * self.interval


@dataclass(frozen=True)
class Held:
    """What to publish for one tick."""
    episode: int
    tick: int
    value: float
    progress: float
    completion: float
    contrastive: float
    query_tick: int
    age: int
    stale: bool
    has_result: bool            # False until the episode's first good result


@dataclass
class _Pending:
    tick: int
    stamp_ns: int
    due_at_tick: int            # tick (index) after which we stop waiting for the exact frame
    terminal: bool


@dataclass
class _Episode:
    episode: int
    instruction: str = ""
    first_frame: Optional[np.ndarray] = None
    query_frames: List[Tuple[int, np.ndarray]] = field(default_factory=list)   # (tick, frame)
    pending: List[_Pending] = field(default_factory=list)
    last_tick: int = -1
    last_stamp: int = -1        # stamp of the newest tick seen: frames after it are not this episode's
    result: Optional[RewardResult] = None
    result_tick: int = 0
    failed_since_result: bool = False
    oracle: "OrderedDict[int, float]" = field(default_factory=OrderedDict)


class IntervalHold:
    def __init__(self, config: HoldConfig, needs: FrozenSet[str] = frozenset(), env: str = ""):
        self.config = config
        self.needs = frozenset(needs)
        self.env = env
        self._lock = threading.Lock()
        self._frames: "OrderedDict[int, np.ndarray]" = OrderedDict()   # stamp_ns -> frame
        self._frame_capacity = 8 * (config.frame_wait_ticks + 2)
        self._ep: Optional[_Episode] = None
        self.instruction = ""
        # counters
        self.queries = 0
        self.results_ok = 0
        self.results_failed = 0
        self.results_discarded = 0     # for another episode or older than what is held
        self.frames_missing = 0        # due queries that found no frame at all
        self.frames_late = 0           # due queries that used an older frame than their tick's

    # --- inputs -----------------------------------------------------------------------------
    def set_instruction(self, text: str) -> None:
        with self._lock:
            self.instruction = text
            if self._ep is not None and not self._ep.instruction:
                self._ep.instruction = text

    def on_oracle(self, episode: int, tick: int, normalized_reward: float) -> List[RewardQuery]:
        """Store the simulator's reward of a tick; returns queries that were waiting for it."""
        with self._lock:
            if self._ep is None or self._ep.episode != episode:
                return []
            self._ep.oracle[tick] = normalized_reward
            while len(self._ep.oracle) > 4 * self.config.interval + 8:
                self._ep.oracle.popitem(last=False)
            return self._resolve_pending(force_tick=None)

    def on_frame(self, stamp_ns: int, frame: np.ndarray) -> List[RewardQuery]:
        """Store a frame; returns queries that were waiting for it and are now ready."""
        with self._lock:
            self._frames[stamp_ns] = frame
            self._frames.move_to_end(stamp_ns)
            while len(self._frames) > self._frame_capacity:
                self._frames.popitem(last=False)
            return self._resolve_pending(force_tick=None)

    def on_tick(self, episode: int, tick: int, stamp_ns: int, episode_start: bool = False,
                episode_end: bool = False) -> Tuple[List[RewardQuery], Held]:
        with self._lock:
            ep = self._ep
            flushed: List[RewardQuery] = []
            if ep is None or episode != ep.episode or (episode_start and tick == 0 and ep.last_tick > 0):
                if ep is not None and ep.pending:
                    # the episode is over: queries still waiting for a frame (a lost terminal
                    # frame) take the best one the episode has, rather than none
                    flushed = self._resolve_pending(force_tick=math.inf)
                ep = self._ep = _Episode(episode=episode, instruction=self.instruction)
            ep.last_tick = max(ep.last_tick, tick)
            ep.last_stamp = max(ep.last_stamp, stamp_ns)
            due = (tick == 0 or tick % self.config.interval == 0
                   or (episode_end and self.config.query_on_episode_end))
            if due and not (episode_end and any(p.tick == tick for p in ep.pending)):
                ep.pending.append(_Pending(tick=tick, stamp_ns=stamp_ns,
                                           due_at_tick=tick + self.config.frame_wait_ticks,
                                           terminal=episode_end))
            ready = flushed + self._resolve_pending(force_tick=tick)
            return ready, self._held(ep, tick)

    def on_result(self, query: RewardQuery, result: Optional[RewardResult], ok: bool) -> bool:
        """Apply an engine outcome. `ok` False (error, timeout, dropped) or an invalid result
        keeps the held value and marks it stale. Returns whether it was applied."""
        with self._lock:
            ep = self._ep
            if ep is None or ep.episode != query.episode:
                self.results_discarded += 1
                return False
            good = ok and result is not None and result.valid and not math.isnan(result.value)
            if not good:
                self.results_failed += 1
                if query.tick >= ep.result_tick:
                    ep.failed_since_result = True
                return True
            if ep.result is not None and query.tick < ep.result_tick:
                self.results_discarded += 1        # an older query finished after a newer one
                return False
            self.results_ok += 1
            ep.result, ep.result_tick, ep.failed_since_result = result, query.tick, False
            return True

    def held_now(self) -> Optional[Held]:
        with self._lock:
            return None if self._ep is None else self._held(self._ep, self._ep.last_tick)

    # --- internals (lock held) --------------------------------------------------------------
    def _held(self, ep: _Episode, tick: int) -> Held:
        r = ep.result
        age = tick - ep.result_tick
        if r is None:
            return Held(ep.episode, tick, self.config.initial_value, NAN, NAN, NAN, 0, age,
                        ep.failed_since_result or age > self.config.stale_after, False)
        return Held(ep.episode, tick, r.value, r.progress, r.completion, r.contrastive,
                    ep.result_tick, age, ep.failed_since_result or age > self.config.stale_after,
                    True)

    def _frame_for(self, stamp_ns: int, exact_only: bool) -> Tuple[Optional[np.ndarray], bool]:
        frame = self._frames.get(stamp_ns)
        if frame is not None:
            return frame, True
        # the tick's own frame was lost: take the next one of the same episode (not newer than
        # its newest tick; `lrm-ros audit` reads bags the same way)
        newer = [s for s in self._frames if stamp_ns < s <= self._ep.last_stamp]
        if newer:
            return self._frames[min(newer)], False
        if exact_only:
            return None, False
        older = [s for s in self._frames if s < stamp_ns]
        return (self._frames[max(older)], False) if older else (None, False)

    def _resolve_pending(self, force_tick: Optional[int]) -> List[RewardQuery]:
        ep = self._ep
        if ep is None or not ep.pending:
            return []
        ready, keep = [], []
        for p in ep.pending:
            give_up = force_tick is not None and force_tick > p.due_at_tick
            frame, exact = self._frame_for(p.stamp_ns, exact_only=not give_up)
            if ("oracle" in self.needs and p.tick not in ep.oracle and not give_up
                    and not (p.tick == 0 and not p.terminal)):
                keep.append(p)        # its sim/oracle message may still be on its way
                continue
            if frame is None:
                if give_up:
                    self.frames_missing += 1
                    ep.failed_since_result = True
                else:
                    keep.append(p)
                continue
            if not exact:
                self.frames_late += 1
            query = self._snapshot(ep, p, frame)
            if query is not None:
                ready.append(query)
        ep.pending = keep
        return ready

    def _snapshot(self, ep: _Episode, p: _Pending, frame: np.ndarray) -> Optional[RewardQuery]:
        previous_tick, previous = ep.query_frames[-1] if ep.query_frames else (-1, None)
        if p.tick == 0 or ep.first_frame is None:
            ep.first_frame = frame
        ep.query_frames.append((p.tick, frame))
        if len(ep.query_frames) > self.config.max_frames:
            # Thin out: keep the first and every other one of the rest.
            first, rest = ep.query_frames[0], ep.query_frames[1:]
            ep.query_frames = [first] + rest[1::2]
        if p.tick == 0 and not p.terminal:
            return None               # tick 0 only records the first frame
        self.queries += 1
        return RewardQuery(
            env=self.env, episode=ep.episode, tick=p.tick, instruction=ep.instruction,
            frame=frame, stamp_ns=p.stamp_ns,
            previous_frame=previous if "previous_frame" in self.needs else None,
            previous_tick=previous_tick if "previous_frame" in self.needs else -1,
            first_frame=ep.first_frame if "first_frame" in self.needs else None,
            frames=tuple(f for _, f in ep.query_frames) if "frames" in self.needs else (),
            oracle=ep.oracle.get(p.tick) if "oracle" in self.needs else None)
