"""The online interval-hold replayed over a recorded episode, offline: which queries the
reward node would make (:func:`episode_queries`), the backend's answers to them in batches
(:func:`score_episodes`), and the value the node would hold at every tick given those answers
(:func:`hold_trace`). One replay loop serves all three, so `lrm-ros eval`, `lrm-ros audit` and
the RL benchmark's rollouts see exactly what the live node sees.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lrm_ros.rewards.base import RewardBackend, RewardQuery, RewardResult
from lrm_ros.rewards.hold import Held, HoldConfig, IntervalHold

__all__ = ["episode_queries", "hold_trace", "score_episodes"]


def _replay(ep: Any, hold: IntervalHold, *, reverse: bool = False, ended: bool = True,
            answers: Optional[Mapping[int, RewardResult]] = None) -> Tuple[List[RewardQuery], List[Held]]:
    """Feed ``ep`` tick by tick into ``hold`` as the reward node does (frame, tick, oracle);
    with ``answers`` (tick -> result) each query made is answered within its tick, as a
    fast backend's is. Returns the queries made and the value held at every tick."""
    frames = ep.frames[::-1] if reverse else ep.frames
    oracle = np.asarray(ep.normalized_dense_rewards, np.float64)
    oracle = oracle[::-1] if reverse else oracle
    episode = int(ep.episode)
    hold.set_instruction(ep.instruction)
    T = len(frames)
    queries: List[RewardQuery] = []
    held: List[Held] = []
    for t in range(T):
        stamp = int(ep.stamps_ns[t])
        made = hold.on_frame(stamp, np.array(frames[t]))   # a copy: never a view of the episode
        more, h = hold.on_tick(episode, t, stamp, episode_start=(t == 0), episode_end=(t == T - 1 and ended))
        made = made + more + hold.on_oracle(episode, t, float(oracle[t]))
        held.append(h)
        queries += made
        if answers is not None:
            for q in made:
                r = answers.get(q.tick)
                hold.on_result(q, r, r is not None)
    return queries, held


def episode_queries(ep: Any, env: str, interval: int, needs: Sequence[str],
                    max_frames: int = HoldConfig.max_frames, reverse: bool = False,
                    ended: bool = True) -> List[RewardQuery]:
    """The queries the online interval-hold makes for a recorded episode (ticks K, 2K, ...
    and the terminal tick). ``reverse`` replays the frames backwards in time; ``ended``
    False: the recording stops before the episode ended (no terminal query)."""
    hold = IntervalHold(HoldConfig(interval=interval, max_frames=max_frames), needs=frozenset(needs), env=env)
    return _replay(ep, hold, reverse=reverse, ended=ended)[0]


def hold_trace(ep: Any, queries: Sequence[RewardQuery], results: Sequence[RewardResult], interval: int,
               needs: Sequence[str] = (), env: str = "audit", ended: bool = True,
               max_frames: int = HoldConfig.max_frames) -> Tuple[np.ndarray, np.ndarray]:
    """The held value and stale flag the online node publishes at each tick of ``ep``, given
    the results of its queries (answered within a tick, as a fast backend does)."""
    hold = IntervalHold(HoldConfig(interval=interval, max_frames=max_frames), needs=frozenset(needs), env=env)
    answers: Dict[int, RewardResult] = {q.tick: r for q, r in zip(queries, results)}
    _, held = _replay(ep, hold, ended=ended, answers=answers)
    return (np.array([h.value for h in held], np.float64), np.array([h.stale for h in held], bool))


def score_episodes(backend: RewardBackend, work: List[Tuple[Any, List[RewardQuery]]],
                   batch_size: int = 0, progress: bool = True,
                   errors: Optional[Dict[str, str]] = None) -> Dict[Any, List[RewardResult]]:
    """Score each (key, queries) item; returns key -> results (same order as its queries).

    Batches interleave episodes (round robin) and keep each episode's queries in tick order;
    ``backend.end_episode`` is called once an episode is done. A batch whose ``score_batch``
    raises yields invalid results (reason recorded in ``errors``)."""
    from tqdm.auto import tqdm

    bs = max(1, int(batch_size or getattr(backend, "max_batch", 8) or 8))
    results: Dict[Any, List[RewardResult]] = {k: [] for k, _ in work}
    length = {k: len(q) for k, q in work}
    pos = {k: 0 for k, _ in work}
    queue = [(k, q) for k, q in work if q]
    total = sum(length.values())
    bar = tqdm(total=total, desc=f"scoring ({backend.name})", unit="query", disable=not progress)
    failures = 0
    try:
        while queue:
            # round robin over the episodes: a batch mixes episodes, each in tick order
            batch: List[Tuple[Any, RewardQuery]] = []
            while len(batch) < bs and queue:
                for k, q in list(queue):
                    if len(batch) >= bs:
                        break
                    batch.append((k, q[pos[k]]))
                    pos[k] += 1
                    if pos[k] >= len(q):
                        queue.remove((k, q))
            try:
                res = backend.score_batch([q for _, q in batch])
                if len(res) != len(batch):
                    raise RuntimeError(f"score_batch returned {len(res)} results for {len(batch)} queries")
            except Exception as e:   # noqa: BLE001 - a backend failure is counted, not fatal
                failures += 1
                if errors is not None:
                    errors.setdefault(f"backend {backend.name}", f"{type(e).__name__}: {e}")
                res = [RewardResult.invalid_result("backend_error", message=f"{type(e).__name__}: {e}")
                       for _ in batch]
            for (k, q), r in zip(batch, res):
                results[k].append(r)
                if len(results[k]) == length[k]:
                    backend.end_episode(q.env, q.episode)
            bar.update(len(batch))
    finally:
        bar.close()
    if failures and errors is not None:
        errors[f"backend {backend.name}"] += f" ({failures} batch(es) failed)"
    return results
