"""In-process rollouts for evaluation and benchmarks: ManiSkillSim + a policy adapter, no ROS.

The graph is how users run the learner; this is the same loop without processes, for the
numbers that need hundreds of episodes (`bench/bench_table3.py`, the demo's evaluations).
Rewards are computed after each episode by replaying it through the real `IntervalHold`
(`held_rewards`), so each step gets exactly the held value the online reward node would have
published for the next tick (inference latency under one tick assumed), and the last step gets
the terminal query's own result, as the learner node does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from lrm_ros.common.episode_end import END_FAILURE, END_SUCCESS, END_TIME_LIMIT
from lrm_ros.policy.adapter import PolicyAdapter, PolicyObservation
from lrm_ros.rewards.hold import DEFAULT_INTERVAL
from lrm_ros.vision.image import resize_center_crop


@dataclass
class RolloutEpisode:
    task: str
    instruction: str
    episode: int
    seed: int
    frames: np.ndarray                 # (T, S, S, 3) uint8, T = ticks (steps + 1)
    stamps_ns: np.ndarray              # (T,) synthetic stamps, one per tick
    normalized_dense_rewards: np.ndarray   # (T,) oracle; tick 0 = 0
    features: np.ndarray               # (T-1, D)
    action: np.ndarray                 # (T-1, A) sent (clipped)
    raw_action: np.ndarray             # (T-1, A)
    log_prob: np.ndarray               # (T-1,)
    value: np.ndarray                  # (T-1,)
    success: bool
    end_reason: int
    deterministic: bool
    reward: Optional[np.ndarray] = None      # (T-1,) from held_rewards
    stale: Optional[np.ndarray] = None
    completion: Optional[np.ndarray] = None
    extra: Dict[str, float] = field(default_factory=dict)

    @property
    def num_ticks(self) -> int:
        return int(self.frames.shape[0])


def run_episode(sim, adapter: PolicyAdapter, seed: int, deterministic: bool, episode: int = 0,
                image_size: int = 224) -> RolloutEpisode:
    """One episode from reset to success, failure or the time limit."""
    obs = sim.reset(seed=seed)
    instruction = sim.config.resolved_instruction
    frames, oracle = [], [0.0]
    outs = []
    success, end_reason = False, END_TIME_LIMIT
    while True:
        frame = resize_center_crop(obs.image, image_size, image_size)
        frames.append(frame)
        out = adapter.act(PolicyObservation(frame, instruction, obs.joint_positions), deterministic)
        outs.append(out)
        step = sim.step(out.action)
        obs = step.observation
        oracle.append(step.normalized_dense_reward)
        if step.terminated or step.truncated:
            success = bool(step.success)
            end_reason = END_SUCCESS if step.success else (END_FAILURE if step.failure else END_TIME_LIMIT)
            frames.append(resize_center_crop(obs.image, image_size, image_size))
            break
    stack = lambda name: np.stack([getattr(o, name) for o in outs])  # noqa: E731
    T = len(frames)
    return RolloutEpisode(
        task=sim.config.env_id, instruction=instruction, episode=episode, seed=seed,
        frames=np.stack(frames), stamps_ns=np.arange(T, dtype=np.int64) * 50_000_000 + 1,
        normalized_dense_rewards=np.asarray(oracle, np.float64), features=stack("features"),
        action=stack("action"), raw_action=stack("raw_action"),
        log_prob=np.array([o.log_prob for o in outs]), value=np.array([o.value for o in outs]),
        success=success, end_reason=end_reason, deterministic=deterministic)


def held_rewards(backend, episodes: Sequence[RolloutEpisode], interval: int = DEFAULT_INTERVAL,
                 progress: bool = False, env: str = "env0") -> None:
    """Fill each episode's `reward`, `stale` and `completion` (per step) as the online graph
    would: queries at K, 2K, ... and the terminal tick through `IntervalHold`."""
    from lrm_ros.rewards.offline import episode_queries, hold_trace, score_episodes
    needs = frozenset(getattr(backend, "needs", ()))
    work = [(i, episode_queries(ep, env, interval, needs)) for i, ep in enumerate(episodes)]
    results = score_episodes(backend, work, progress=progress)
    for (i, queries), ep in zip(work, episodes):
        by_tick = {q.tick: r for q, r in zip(queries, results[i])}
        values, stale_t = hold_trace(ep, queries, results[i], interval, needs, env)
        T = ep.num_ticks
        reward = values[1:].copy()
        stale = stale_t[1:].copy()
        completion = np.full(T - 1, np.nan)
        term = by_tick.get(T - 1)
        if term is not None and term.valid and math.isfinite(term.value):
            reward[-1], stale[-1], completion[-1] = term.value, False, term.completion
        ep.reward, ep.stale, ep.completion = reward, stale, completion


def oracle_rewards(episodes: Sequence[RolloutEpisode]) -> None:
    """The simulator's normalised dense reward of each step (the "Env reward" baseline)."""
    for ep in episodes:
        ep.reward = np.asarray(ep.normalized_dense_rewards[1:], np.float64)
        ep.stale = np.zeros(len(ep.reward), bool)
        ep.completion = np.full(len(ep.reward), np.nan)


def random_rewards(episodes: Sequence[RolloutEpisode], rng: np.random.Generator,
                   interval: int = DEFAULT_INTERVAL) -> None:
    """A reward model that knows nothing, as a control: held values drawn uniformly from [0, 1)
    at ticks 0, K, 2K, ... and the terminal tick, held in between (the shape the interval-hold
    gives a real model's values); the terminal value is also the episode's final completion.
    What RL gains with it is what the update itself (e.g. cloning the policy's own rollouts)
    gives without any information about the task."""
    for ep in episodes:
        T = len(ep.action) + 1             # ticks (frames need not be kept)
        held = rng.random(T // interval + 1)[np.arange(T) // interval]
        held[-1] = rng.random()
        ep.reward = held[1:].astype(np.float64)
        ep.stale = np.zeros(T - 1, bool)
        ep.completion = np.full(T - 1, np.nan)
        ep.completion[-1] = held[-1]


def as_store_episode(ep: RolloutEpisode) -> dict:
    """The dict `EpisodeStore.load` returns, so `ppo_update` / `filtered_bc_update` take it."""
    if ep.reward is None:
        raise ValueError("episode has no rewards yet: call held_rewards() or oracle_rewards()")
    n = len(ep.action)
    done = np.zeros(n, bool)
    done[-1] = True
    final_c = float(ep.completion[-1]) if ep.completion is not None and n else float("nan")
    return {"features": ep.features.astype(np.float32), "action": ep.action.astype(np.float32),
            "raw_action": ep.raw_action.astype(np.float32),
            "log_prob": ep.log_prob.astype(np.float32), "value": ep.value.astype(np.float32),
            "reward": ep.reward.astype(np.float32), "stale": ep.stale, "done": done,
            "completion": ep.completion.astype(np.float32),
            "meta": {"complete": True, "extra": {"env_success": ep.success, "seed": ep.seed, "final_completion": final_c,
                                                 "final_value": float(ep.reward[-1]) if n else float("nan"),
                                                 "deterministic": ep.deterministic}}}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> Tuple[float, float]:
    """95% Wilson score interval of a success rate."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def evaluate_policy(sim, adapter: PolicyAdapter, seeds: Sequence[int], deterministic: bool = True,
                    progress: bool = True, desc: str = "evaluating") -> Dict[str, object]:
    """Success rate over one episode per seed, with its Wilson interval."""
    from tqdm.auto import tqdm
    wins: List[bool] = []
    bar = tqdm(seeds, desc=desc, unit="ep", disable=not progress)
    for s in bar:
        wins.append(run_episode(sim, adapter, int(s), deterministic).success)
        bar.set_postfix(success=f"{np.mean(wins):.2f}")
    return summarize_successes(wins)


def summarize_successes(wins: Sequence[bool]) -> Dict[str, object]:
    """Success rate of a list of episode outcomes, with its 95% Wilson interval."""
    k, n = int(sum(wins)), len(wins)
    lo, hi = wilson_interval(k, n)
    return {"success_rate": k / n if n else float("nan"), "successes": k, "episodes": n,
            "ci95": [lo, hi], "per_seed": [bool(w) for w in wins]}
