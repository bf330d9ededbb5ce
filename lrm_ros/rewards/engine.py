"""The non-blocking reward engine: a bounded queue served by one worker thread.

`submit()` never blocks: a full queue drops its oldest query (reported as "dropped"). The
worker takes the first waiting query, gathers more for up to `max_wait_s` (at most
`max_batch`, from any environments), and scores them in one `backend.score_batch` call
outside the ROS executor. Every query gets exactly one outcome through the callback:

  ok        scored; the result may still be invalid (unparseable model output): counted
  timeout   not scored within `timeout_s` of submission (a watchdog reports it even while
            the backend is stuck; a result that arrives later is discarded and counted late)
  error     the backend raised (counted; the engine keeps serving)
  error / timeout  also when the backend reports that it could not score one query
            (RewardResult.status, e.g. its inference server failed: the reason in `invalid`)
  dropped   pushed out of a full queue, or the engine was closed
"""
import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from lrm_ros.rewards.base import RewardBackend, RewardQuery, RewardResult

OK, TIMEOUT, ERROR, DROPPED = "ok", "timeout", "error", "dropped"
Callback = Callable[[RewardQuery, Optional[RewardResult], str, Dict[str, float]], None]


@dataclass(frozen=True)
class EngineConfig:
    max_batch: int = field(default=8, metadata={"help": "most queries scored in one forward pass"})
    max_wait_s: float = field(default=0.01, metadata={"help": (
        "how long the worker waits for more queries to fill a batch")})
    timeout_s: float = field(default=10.0, metadata={"help": (
        "a query not scored this long after submission is reported as timed out")})
    queue_size: int = field(default=64, metadata={"help": "waiting queries; beyond, the oldest is dropped"})

    def __post_init__(self):
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if not 0 <= self.max_wait_s <= 10:
            raise ValueError(f"max_wait_s must be in [0, 10] seconds, got {self.max_wait_s}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {self.timeout_s}")
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")


class _Item:
    __slots__ = ("query", "submitted", "deadline", "done")

    def __init__(self, query: RewardQuery, now: float, timeout: float):
        self.query = query
        self.submitted = now
        self.deadline = now + timeout
        self.done = False


class RewardEngine:
    def __init__(self, backend: RewardBackend, config: EngineConfig, callback: Callback,
                 clock: Callable[[], float] = time.monotonic):
        self.backend = backend
        self.config = config
        self._callback = callback
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: "collections.deque[_Item]" = collections.deque()
        self._inflight: List[_Item] = []
        self._ends: List[Tuple[str, int]] = []   # episodes over, waiting for their queries
        self._closed = False
        self.last_error = ""
        self.last_callback_error = ""   # the newest exception a result callback raised
        self.counters = collections.Counter()
        self.batch_sizes = collections.Counter()
        self._latencies = collections.deque(maxlen=512)
        self._worker = threading.Thread(target=self._serve, name="reward_engine", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="reward_watchdog", daemon=True)
        self._worker.start()
        self._watchdog.start()

    # --- caller side (never blocks on the backend) ---------------------------------------
    def submit(self, query: RewardQuery) -> None:
        dropped = None
        with self._cond:
            if self._closed:
                dropped = _Item(query, self._clock(), 0.0)
            else:
                self.counters["submitted"] += 1
                if len(self._queue) >= self.config.queue_size:
                    dropped = self._queue.popleft()
                self._queue.append(_Item(query, self._clock(), self.config.timeout_s))
                self._cond.notify_all()
        if dropped is not None:
            self._finish(dropped, None, DROPPED)

    def end_episode(self, env: str, episode: int) -> None:
        """The episode is over: once its queued and in-flight queries are answered, the worker
        calls `backend.end_episode` (frees per-episode caches, e.g. TOPReward's KV cache),
        in its own thread, so never during a `score_batch`."""
        with self._cond:
            if not self._closed:
                self._ends.append((str(env), int(episode)))
                self._cond.notify_all()

    def _ready_ends(self) -> List[Tuple[str, int]]:
        """(under the lock) ends whose episode has nothing queued or in flight."""
        busy = {(i.query.env, i.query.episode) for i in list(self._queue) + self._inflight}
        ready = [e for e in self._ends if e not in busy]
        self._ends = [e for e in self._ends if e in busy]
        return ready

    def stats(self) -> Dict[str, float]:
        with self._cond:
            lat = np.array(self._latencies) if self._latencies else np.zeros(1)
            total = sum(self.batch_sizes.values())
            out = dict(self.counters)
            out.update({
                "queued": len(self._queue),
                "episode_ends_pending": len(self._ends),
                "in_flight": len(self._inflight),
                "batch_mean": round(sum(k * v for k, v in self.batch_sizes.items()) / total, 2) if total else 0.0,
                "latency_p50_ms": round(1000 * float(np.percentile(lat, 50)), 1),
                "latency_p95_ms": round(1000 * float(np.percentile(lat, 95)), 1),
            })
        for key in ("submitted", "ok", "invalid", "timeout", "error", "dropped", "late", "batches",
                    "episodes_ended"):
            out.setdefault(key, 0)
        return out

    def close(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for item in pending:
            self._finish(item, None, DROPPED)
        self._worker.join(timeout=timeout_s)
        self._watchdog.join(timeout=timeout_s)

    # --- worker ------------------------------------------------------------------------------
    def _finish(self, item: _Item, result: Optional[RewardResult], status: str,
                batch_size: int = 0) -> None:
        with self._cond:
            if item.done:
                if status == OK:
                    self.counters["late"] += 1
                return
            item.done = True
            latency = self._clock() - item.submitted
            self.counters[status] += 1
            if status == OK:
                self._latencies.append(latency)
                if result is None or not result.valid:
                    self.counters["invalid"] += 1
        try:
            self._callback(item.query, result, status,
                           {"latency_s": latency, "batch_size": batch_size})
        except Exception as exc:               # a callback must not kill the engine: counted, kept
            with self._cond:
                self.counters["callback_errors"] += 1
                self.last_callback_error = f"{type(exc).__name__}: {exc}"

    def _take_batch(self) -> List[_Item]:
        with self._cond:
            while not self._queue and not self._closed and not self._ends:
                self._cond.wait()
            if not self._queue:
                return []
            if self._closed:
                return []
            first_arrival = self._clock()
            deadline = first_arrival + self.config.max_wait_s
            while len(self._queue) < self.config.max_batch and not self._closed:
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = []
            while self._queue and len(batch) < self.config.max_batch:
                batch.append(self._queue.popleft())
            self._inflight = batch
            return batch

    def _end_episodes(self) -> None:
        with self._cond:
            ready = self._ready_ends()
        for env, episode in ready:
            try:
                self.backend.end_episode(env, episode)
            except Exception as exc:             # counted; the engine goes on
                with self._cond:
                    self.counters["end_episode_errors"] += 1
                    self.last_error = repr(exc)
            else:
                with self._cond:
                    self.counters["episodes_ended"] += 1

    def _serve(self) -> None:
        while True:
            self._end_episodes()
            batch = self._take_batch()
            if not batch:
                if self._closed:
                    return
                continue
            live = [item for item in batch if not item.done]
            if not live:
                continue
            self.batch_sizes[len(live)] += 1
            self.counters["batches"] += 1
            try:
                results = self.backend.score_batch([item.query for item in live])
                if len(results) != len(live):
                    raise RuntimeError(f"backend returned {len(results)} results for "
                                       f"{len(live)} queries")
            except Exception as exc:             # counted; every query gets an outcome
                with self._cond:
                    self.last_error = repr(exc)
                for item in live:
                    self._finish(item, None, ERROR, len(live))
            else:
                for item, result in zip(live, results):
                    status = getattr(result, "status", "") or OK
                    if status not in (ERROR, TIMEOUT):
                        status = OK
                    elif result.invalid:
                        with self._cond:
                            self.last_error = "; ".join(result.invalid)
                    self._finish(item, result, status, len(live))
            with self._cond:
                self._inflight = []

    def _watch(self) -> None:
        """Report timeouts of queued and in-flight queries, even while the backend is stuck."""
        period = min(0.05, self.config.timeout_s / 4)
        while True:
            with self._cond:
                if self._closed and not self._inflight:
                    return
                now = self._clock()
                expired = [i for i in list(self._queue) + list(self._inflight)
                           if not i.done and now >= i.deadline]
                for item in expired:
                    if item in self._queue:
                        self._queue.remove(item)
            for item in expired:
                self._finish(item, None, TIMEOUT)
            time.sleep(period)
