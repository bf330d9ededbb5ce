"""The online learner, ROS-free: episodes in, policy checkpoints out.

Pieces, top to bottom:
- `LearnerConfig`: the learner node's parameters (PPO's own are `PPOConfig`).
- `EpisodeAssembler`: joins what the graph publishes per environment into training steps and
  appends them to the `EpisodeStore` as they complete (so a restart loses at most a chunk).
- `step_rewards`: the reward of each step from the held rewards.
- `ppo_update` and `filtered_bc_update`: one iteration of each algorithm.
- `Learner`: picks the episodes an iteration may use, trains, writes the checkpoint
  atomically and remembers its state on disk so it resumes after a restart.

Reward timing (docs/ARCHITECTURE.md): the action of tick t leads to the observation of tick
t+1, so step t's reward is the held reward published for tick t+1. The held value is what
the reward model said at its latest query (every K ticks), so rewards are piecewise constant.
The last step's reward is the terminal query's own result when it arrives within
`result_wait_s` (otherwise the held value, counted): the final state is what the model judges
best, and the held stream alone would never show it.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from lrm_ros.core.episode_end import END_SUCCESS
from lrm_ros.core.learn.episode_store import EpisodeInfo, EpisodeStore
from lrm_ros.core.learn.ppo import (PPOConfig, compute_gae, discounted_returns, gaussian_kl, ppo_losses,
                                   stale_weights)

ALGORITHMS = ("ppo", "filtered_bc")
REWARD_TRANSFORMS = ("value", "delta")
SUCCESS_SOURCES = ("completion", "env")
NAN = float("nan")


@dataclass(frozen=True)
class LearnerConfig:
    algorithm: str = field(default="ppo", metadata={"help": "ppo or filtered_bc"})
    envs: tuple[str, ...] = field(default=("",), metadata={"help": "environment namespaces to learn from"})
    store_dir: str = field(default="out/learner", metadata={"help": (
        "where episodes, checkpoints and learner_state.json go; a restarted learner resumes from it")})
    init_checkpoint: str = field(default="", metadata={"help": (
        "policy to start from (and to stay near: PPO's KL term); empty = the shipped tiny_vla")})
    episodes_per_iteration: int = field(default=8, metadata={"help": "finished episodes per update"})
    max_iterations: int = field(default=30, metadata={"help": "stop updating after this many (the LRM paper: 30)"})
    max_policy_lag: int = field(default=1, metadata={"help": (
        "use episodes recorded with a policy at most this many versions old (0 = strictly on-policy)")})
    reward_transform: str = field(default="value", metadata={"help": (
        "value: step reward = held value; delta: its change (potential-based shaping)")})
    reward_scale: float = field(default=1.0, metadata={"help": "multiplies every step reward"})
    success_absorbing: bool = field(default=True, metadata={"help": (
        "value rewards: an episode that ended in success (END_SUCCESS) reached a goal state "
        "that keeps paying its last reward, so its last step's return is r / (1 - gamma). "
        "Without it the end of the episode at success forfeits the rewards a slower policy "
        "would keep collecting, and PPO learns to put success off")})
    result_wait_s: float = field(default=10.0, metadata={"help": (
        "how long an ended episode waits for its terminal query result and missing messages")})
    success_source: str = field(default="completion", metadata={"help": (
        "filtered_bc: which rollouts succeeded: completion (the reward model's completion "
        "signal at the terminal query, the paper's real-robot path) or env (the simulator)")})
    success_threshold: float = field(default=0.5, metadata={"help": "completion >= this counts as success"})
    bc_epochs: int = field(default=2, metadata={"help": "filtered_bc: passes over the selected steps per iteration"})
    bc_replay: bool = field(default=True, metadata={"help": (
        "filtered_bc: each iteration trains on every episode judged successful so far, not only "
        "on this iteration's (measured on PushCube with the simulator's success, 30 x 8 rollouts, "
        "2 epochs: 0.20 -> 0.37, bench/results/rl_diagnosis_PushCube.md)")})
    bc_lr: float = field(default=3e-4, metadata={"help": "filtered_bc: Adam learning rate"})
    max_stale_fraction: float = field(default=0.5, metadata={"help": (
        "no update starts while more than this fraction of an env's last stale_window held "
        "rewards is stale (the reward model is failing or too slow)")})
    stale_window: int = field(default=50, metadata={"help": "ticks the stale fraction is taken over"})
    keep_checkpoints: int = field(default=5, metadata={"help": "newest checkpoints kept on disk (0 = all)"})
    seed: int = field(default=0, metadata={"help": "minibatch shuffling seed"})

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.reward_transform not in REWARD_TRANSFORMS:
            raise ValueError(f"reward_transform must be one of {REWARD_TRANSFORMS}, got {self.reward_transform!r}")
        if self.success_source not in SUCCESS_SOURCES:
            raise ValueError(f"success_source must be one of {SUCCESS_SOURCES}, got {self.success_source!r}")
        if self.episodes_per_iteration < 1 or self.max_iterations < 1:
            raise ValueError("episodes_per_iteration and max_iterations must be >= 1")
        if self.max_policy_lag < 0 or self.result_wait_s < 0 or self.bc_epochs < 1:
            raise ValueError("max_policy_lag and result_wait_s must be >= 0, bc_epochs >= 1")
        if not 0.0 <= self.max_stale_fraction <= 1.0 or self.stale_window < 1:
            raise ValueError("max_stale_fraction must be in [0, 1] and stale_window >= 1")
        if not self.store_dir:
            raise ValueError("store_dir must name a directory for episodes and checkpoints")


# ------------------------------------------------------------------------------------------
# assembling steps from the graph's messages

@dataclass
class _Ep:
    episode: int
    steps: Dict[int, dict] = field(default_factory=dict)
    held: Dict[int, tuple] = field(default_factory=dict)      # tick -> (value, completion, stale)
    next_tick: int = 0
    max_tick: int = -1          # the newest ControlTick seen: whether tick t ends is known for t <= it
    end_tick: Optional[int] = None
    end_reason: int = 0
    end_seen: float = 0.0
    results: Dict[int, tuple] = field(default_factory=dict)    # query tick -> (value, completion)
    writer: object = None
    stale_steps: int = 0
    rewards: List[float] = field(default_factory=list)
    last_completion: float = NAN
    deterministic: bool = False
    fallbacks: int = 0          # ticks the bridge drove with its fallback command


class EpisodeAssembler:
    """Per environment. Step t is written once PolicyStep(t) and HeldReward(t+1) are in;
    the episode is finished once its terminal tick, all its steps and (within
    `result_wait_s`) the terminal query result are in."""

    def __init__(self, env: str, store: EpisodeStore, result_wait_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, feature_dim: int = 0,
                 action_dim: int = 0):
        self.env, self.store, self.wait = env, store, float(result_wait_s)
        self.feature_dim, self.action_dim = int(feature_dim), int(action_dim)   # 0: not checked
        self.last_invalid = ""
        self.clock = clock
        self._eps: Dict[int, _Ep] = {}      # open episodes: the current one, and ended ones
                                             # still waiting for their terminal result
        # steps, held rewards and results of an episode whose tick 0 has not arrived yet:
        # topics are not ordered across each other, and under load the policy's step for
        # tick 0 can overtake control/tick (it dropped 1 episode in 379 in a 20-minute soak)
        self._early: Dict[int, List[Tuple[str, tuple]]] = {}
        self._newest = -1                    # the newest episode opened
        # the last episodes finished (bounded: nobody has to drain it; the store is the record)
        self.finished: Deque[EpisodeInfo] = deque(maxlen=16)
        self.counters = {"episodes_complete": 0, "episodes_aborted": 0, "joined_late": 0,
                         "steps": 0, "stale_steps": 0, "terminal_result_missing": 0,
                         "episodes_fallback": 0, "episodes_dropped": 0, "steps_invalid": 0}

    def _current(self, episode: int) -> Optional[_Ep]:
        return self._eps.get(int(episode))

    def _keep_early(self, kind: str, episode: int, args: tuple) -> None:
        if int(episode) <= self._newest:
            return                           # an episode already gone (or joined late)
        self._early.setdefault(int(episode), []).append((kind, args))
        while sum(len(v) for v in self._early.values()) > 4096:      # bounded
            self._early.pop(min(self._early))

    def on_tick(self, episode: int, tick: int, start: bool, end: bool, end_reason: int,
                fallbacks: int = 0) -> None:
        """`fallbacks`: ControlTick.fallback_count, the episode's ticks so far that the bridge
        stepped with its fallback command because no valid command came in time: such an
        episode is not the policy's own (its recorded actions are not what was applied) and
        is closed as incomplete, never trained on."""
        if start and tick == 0 and episode not in self._eps:
            for old in list(self._eps.values()):
                if old.end_tick is None:     # never ended: its remaining messages are lost
                    self._abort(old, f"episode {episode} began before episode {old.episode} ended")
            self._eps[int(episode)] = _Ep(int(episode))
            self._newest = max(self._newest, int(episode))
            early = self._early.pop(int(episode), [])
            for old_episode in [e for e in self._early if e < int(episode)]:
                del self._early[old_episode]
            for kind, args in early:         # what came before its tick 0
                {"step": self.on_step, "held": self.on_held, "result": self.on_result}[kind](*args)
        ep = self._current(episode)
        if ep is None:
            if tick == 0 or start:
                return
            self.counters["joined_late"] += int(tick == 1)
            return
        ep.fallbacks = max(ep.fallbacks, int(fallbacks))
        ep.max_tick = max(ep.max_tick, int(tick))
        if end:
            ep.end_tick, ep.end_reason, ep.end_seen = int(tick), int(end_reason), self.clock()
        self._advance(ep)

    def _invalid_step(self, fields: dict) -> str:
        """Why a PolicyStep cannot be trained on ("" = it can): wrong sizes, non-finite values."""
        feats = np.asarray(fields.get("features", ()), np.float64).reshape(-1)
        raw = np.asarray(fields.get("raw_action", ()), np.float64).reshape(-1)
        if self.feature_dim and feats.size != self.feature_dim:
            return f"features has {feats.size} values, the policy takes {self.feature_dim}"
        if self.action_dim and raw.size != self.action_dim:
            return f"raw_action has {raw.size} values, the policy has {self.action_dim}"
        if not (np.isfinite(feats).all() and np.isfinite(raw).all()
                and math.isfinite(float(fields.get("log_prob", NAN)))):
            return "non-finite features, raw_action or log_prob"
        return ""

    def on_step(self, episode: int, tick: int, fields: dict) -> None:
        why = self._invalid_step(fields)
        if why:      # dropped: the episode misses this step and is never finished
            self.counters["steps_invalid"] += 1
            self.last_invalid = why
            return
        ep = self._current(episode)
        if ep is None:
            self._keep_early("step", episode, (episode, tick, fields))
        else:
            ep.steps[int(tick)] = fields
            self._advance(ep)

    def on_held(self, episode: int, tick: int, value: float, completion: float, stale: bool) -> None:
        ep = self._current(episode)
        if ep is None:
            self._keep_early("held", episode, (episode, tick, value, completion, stale))
        else:
            ep.held[int(tick)] = (float(value), float(completion), bool(stale))
            self._advance(ep)

    def on_result(self, episode: int, query_tick: int, valid: bool, value: float,
                  completion: float) -> None:
        ep = self._current(episode)
        if ep is None and valid:
            self._keep_early("result", episode, (episode, query_tick, valid, value, completion))
        elif ep is not None and valid and math.isfinite(value):
            ep.results[int(query_tick)] = (float(value), float(completion))
            if ep.end_tick is not None:
                self._advance(ep)

    def poll(self) -> None:
        """Finish ended episodes whose terminal result did not come in time."""
        for ep in list(self._eps.values()):
            if ep.end_tick is not None and self.clock() - ep.end_seen >= self.wait:
                self._advance(ep, timed_out=True)
                if self._eps.get(ep.episode) is ep:
                    self._abort(ep, f"messages for ticks >= {ep.next_tick} never arrived within "
                                    f"result_wait_s ({self.wait} s)")

    # -- internals
    def _advance(self, ep: _Ep, timed_out: bool = False) -> None:
        terminal = ep.results.get(ep.end_tick) if ep.end_tick is not None else None
        # step t is written once its tick t+1 was seen too: only then is it known whether
        # t+1 ends the episode (PolicyStep t and HeldReward t+1 can overtake ControlTick t+1;
        # written early, the last step lost its done flag and its terminal result)
        while ep.next_tick in ep.steps and (ep.next_tick + 1) in ep.held and ep.next_tick < ep.max_tick:
            t = ep.next_tick
            last = ep.end_tick is not None and t + 1 == ep.end_tick
            value, completion, stale = ep.held[t + 1]
            if last:
                if terminal is not None:
                    value, completion, stale = terminal[0], terminal[1], False
                elif not timed_out:
                    return
                else:
                    self.counters["terminal_result_missing"] += 1
            self._write(ep, t, value, completion, stale, done=last)
            ep.next_tick += 1
        if ep.end_tick is not None and ep.next_tick >= ep.end_tick and ep.writer is not None:
            self._finish(ep)
        elif ep.end_tick == 0:
            self._eps.pop(ep.episode, None)

    def _write(self, ep: _Ep, t: int, value: float, completion: float, stale: bool, done: bool) -> None:
        s = ep.steps.pop(t)
        if ep.writer is None:
            ep.deterministic = bool(s["deterministic"])
            ep.writer = self.store.begin(self.env, ep.episode, int(s["version"]),
                                         meta={"deterministic": ep.deterministic})
        ep.writer.append({"features": np.asarray(s["features"], np.float32),
                          "action": np.asarray(s["action"], np.float32),
                          "raw_action": np.asarray(s["raw_action"], np.float32),
                          "log_prob": np.float32(s["log_prob"]), "value": np.float32(s["value"]),
                          "version": np.int32(s["version"]), "tick": np.int32(t),
                          "reward": np.float32(value if math.isfinite(value) else 0.0),
                          "completion": np.float32(completion), "stale": bool(stale or not math.isfinite(value)),
                          "done": bool(done)})
        ep.held.pop(t, None)
        ep.rewards.append(value)
        ep.last_completion = completion
        ep.stale_steps += int(stale)
        self.counters["steps"] += 1
        self.counters["stale_steps"] += int(stale)

    def _summary(self, ep: _Ep) -> dict:
        r = np.asarray(ep.rewards, np.float64)
        return {"end_reason": ep.end_reason, "env_success": ep.end_reason == END_SUCCESS,
                "fallback_ticks": ep.fallbacks,
                "final_value": float(r[-1]) if r.size else NAN,
                "final_completion": float(ep.last_completion), "reward_sum": float(np.nansum(r)),
                "stale_steps": ep.stale_steps, "deterministic": ep.deterministic}

    def _finish(self, ep: _Ep) -> None:
        if ep.fallbacks:
            self.counters["episodes_fallback"] += 1
            self._abort(ep, f"{ep.fallbacks} tick(s) driven by the bridge's fallback command "
                            "(the policy did not answer in time, or died)")
            return
        summary = self._summary(ep)
        path = ep.writer.finish(success=bool(summary["env_success"]), extra=summary)
        self.finished.append(self.store._info(path, json.loads((path / "meta.json").read_text())))
        self.counters["episodes_complete"] += 1
        self._eps.pop(ep.episode, None)

    def _abort(self, ep: _Ep, reason: str) -> None:
        if ep.writer is not None:
            ep.writer.abort(reason, extra=self._summary(ep))
            self.counters["episodes_aborted"] += 1
        elif ep.end_tick != 0:
            # nothing was written (its first step never completed: the policy or the reward
            # model was gone): not in the store at all, but counted
            self.counters["episodes_dropped"] += 1
            self.last_invalid = f"episode {ep.episode} dropped: {reason}"
        if self._eps.get(ep.episode) is ep:
            del self._eps[ep.episode]

    def abort_open(self, reason: str) -> None:
        """Close the episodes in progress as incomplete (e.g. the robot was paused)."""
        for ep in list(self._eps.values()):
            self._abort(ep, reason)

    def close(self, reason: str = "learner shut down") -> None:
        for ep in list(self._eps.values()):
            self._abort(ep, reason)


class LearningGate:
    """When the learner may start an update: not while a robot is paused (e-stop or operator)
    nor while an environment's recent rewards are mostly stale."""

    def __init__(self, max_stale_fraction: float = 0.5, window: int = 50):
        self.max_stale, self.window = float(max_stale_fraction), int(window)
        self.paused: Dict[str, bool] = {}
        self._stale: Dict[str, List[bool]] = {}

    def on_pause(self, env: str, paused: bool) -> None:
        self.paused[env] = bool(paused)

    def on_held(self, env: str, stale: bool) -> None:
        h = self._stale.setdefault(env, [])
        h.append(bool(stale))
        del h[:-self.window]

    def stale_fraction(self, env: str) -> float:
        h = self._stale.get(env, [])
        return sum(h) / len(h) if h else 0.0

    def reason(self) -> str:
        """'' when updates may run, else why not."""
        paused = sorted(e for e, p in self.paused.items() if p)
        if paused:
            return f"robot paused in {paused}"
        stale = sorted(e for e in self._stale if len(self._stale[e]) >= min(self.window, 10)
                       and self.stale_fraction(e) > self.max_stale)
        if stale:
            return (f"rewards stale in {stale} ({', '.join(f'{self.stale_fraction(e):.0%}' for e in stale)} "
                    f"of the last {self.window} ticks)")
        return ""


# ------------------------------------------------------------------------------------------
# rewards and updates

def step_rewards(reward: np.ndarray, transform: str, scale: float) -> np.ndarray:
    r = np.asarray(reward, np.float64)
    if transform == "delta":
        r = np.diff(np.concatenate([[0.0], r]))
    return scale * r


def training_rewards(ep: dict, cfg: LearnerConfig, gamma: float) -> np.ndarray:
    """The step rewards PPO trains on: `step_rewards`, and for `success_absorbing` the last
    reward of a successful episode carried on forever (r / (1 - gamma)), so that reaching
    the goal sooner is worth more than hovering near it (measured on the IL policy with the
    oracle reward: without it quick successes scored below slow ones and some failures)."""
    r = step_rewards(ep["reward"], cfg.reward_transform, cfg.reward_scale)
    meta = ep.get("meta", {})
    extra = meta.get("extra", meta)
    if (cfg.success_absorbing and cfg.reward_transform == "value" and len(r) and gamma < 1
            and bool(ep["done"][-1]) and bool(extra.get("env_success", False))):
        r = r.copy()
        r[-1] = r[-1] / (1.0 - gamma)
    return r


def _torch():
    import torch
    return torch


def prefit_critic(model, episodes: Sequence[dict], cfg: LearnerConfig, ppo: PPOConfig,
                  seed: int = 0) -> Tuple[List[np.ndarray], float]:
    """Regress the critic onto the episodes' discounted returns (`ppo.value_prefit_epochs`
    passes); returns the refitted values per episode and the final mean squared error."""
    torch = _torch()
    feats = np.concatenate([e["features"] for e in episodes]).astype(np.float32)
    rets = np.concatenate([discounted_returns(training_rewards(e, cfg, ppo.gamma),
                                              e["done"], ppo.gamma,
                                              0.0 if e["done"][-1] else float(e["value"][-1]))
                           for e in episodes]).astype(np.float32)
    x, y = torch.as_tensor(feats), torch.as_tensor(rets)
    params = list(model.critic.parameters())
    optim = torch.optim.Adam(params, lr=1e-3)
    rng = np.random.default_rng(seed)
    mse = float("nan")
    for _ in range(ppo.value_prefit_epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), ppo.minibatch_size):
            idx = torch.as_tensor(order[start:start + ppo.minibatch_size])
            _, _, v = model(*model.split(x[idx]))
            loss = ((v - y[idx]) ** 2).mean()
            optim.zero_grad()
            loss.backward()
            optim.step()
    with torch.no_grad():
        v_all = model(*model.split(x))[2].numpy().astype(np.float64)
        mse = float(np.mean((v_all - rets) ** 2))
    out, start = [], 0
    for e in episodes:
        out.append(v_all[start:start + len(e["reward"])])
        start += len(e["reward"])
    return out, mse


def _episode_seed(ep: dict):
    meta = ep.get("meta", {})
    return meta.get("extra", meta).get("seed")


def group_advantages(episodes: Sequence[dict], cfg: LearnerConfig, ppo: PPOConfig) -> List[np.ndarray]:
    """Critic-free advantages (`PPOConfig.advantage == 'group'`), one array per episode.

    A step's advantage is its discounted return-to-go G_t minus the mean G_t of the other
    episodes of its group at the same step t: the episodes that started from the same seed
    (their starts are identical, so only the policy's sampled actions tell them apart), or,
    for an episode alone with its seed or without one, every other episode of the batch.
    The baseline never uses the episode's own actions, so the estimate stays unbiased. An
    episode that ended before step t counts from then on with the value it stopped at: a
    success's absorbing value (`success_absorbing`) or 0."""
    rtg, tails = [], []
    for ep in episodes:
        r = training_rewards(ep, cfg, ppo.gamma)
        dones = ep["done"].astype(bool)
        complete = bool(ep["meta"].get("complete", False)) and bool(dones[-1])
        g = discounted_returns(r, dones, ppo.gamma, 0.0 if complete else float(ep["value"][-1]))
        rtg.append(g)
        meta = ep.get("meta", {})
        success = bool(meta.get("extra", meta).get("env_success", False))
        tails.append(float(g[-1]) if (complete and success and cfg.success_absorbing
                                      and cfg.reward_transform == "value" and len(g)) else 0.0)
    n = len(rtg)
    if n == 0:
        return []
    horizon = max(len(g) for g in rtg)
    ext = np.array([np.concatenate([g, np.full(horizon - len(g), tail)]) for g, tail in zip(rtg, tails)])
    seeds = [_episode_seed(ep) for ep in episodes]
    groups: Dict[object, List[int]] = {}
    for i, seed in enumerate(seeds):
        groups.setdefault(seed, []).append(i)
    out = []
    for i, seed in enumerate(seeds):
        peers = groups[seed] if seed is not None and len(groups[seed]) > 1 else range(n)
        others = len(peers) - 1
        base = (ext[list(peers)].sum(axis=0) - ext[i]) / others if others else np.zeros(horizon)
        out.append(rtg[i] - base[:len(rtg[i])])
    return out


def _episode_arrays(episodes: Sequence[dict], cfg: LearnerConfig, ppo: PPOConfig,
                    refit: Optional[Sequence[np.ndarray]] = None) -> Dict[str, np.ndarray]:
    """Flat training arrays; advantages by `ppo.advantage`: GAE on the recorded values (or on
    `refit` ones), or `group_advantages`."""
    parts: Dict[str, list] = {k: [] for k in ("features", "raw_action", "log_prob", "adv", "ret",
                                               "weight", "stale")}
    grouped = group_advantages(episodes, cfg, ppo) if ppo.advantage == "group" else None
    for i, ep in enumerate(episodes):
        rewards = training_rewards(ep, cfg, ppo.gamma)
        values = ep["value"].astype(np.float64) if refit is None else refit[i]
        dones = ep["done"].astype(bool)
        complete = bool(ep["meta"].get("complete", False)) and bool(dones[-1])
        last_value = 0.0 if complete else float(values[-1])
        if grouped is None:
            adv, ret = compute_gae(rewards, values, dones, last_value=last_value, last_done=complete,
                                   gamma=ppo.gamma, lam=ppo.gae_lambda)
        else:
            adv, ret = grouped[i], discounted_returns(rewards, dones, ppo.gamma, last_value)
        parts["features"].append(ep["features"])
        parts["raw_action"].append(ep["raw_action"])
        parts["log_prob"].append(ep["log_prob"])
        parts["adv"].append(adv)
        parts["ret"].append(ret)
        parts["weight"].append(stale_weights(ep["stale"], ppo.stale_rewards))
        parts["stale"].append(ep["stale"])
    return {k: np.concatenate(v) for k, v in parts.items()}


def ppo_update(model, init_model, episodes: Sequence[dict], cfg: LearnerConfig, ppo: PPOConfig,
               seed: int = 0) -> Dict[str, float]:
    """One PPO iteration over the given episodes (dicts as EpisodeStore.load returns)."""
    torch = _torch()
    refit, prefit_mse = None, float("nan")
    if ppo.value_prefit_epochs and episodes and ppo.advantage == "gae":
        refit, prefit_mse = prefit_critic(model, episodes, cfg, ppo, seed)
    data = _episode_arrays(episodes, cfg, ppo, refit)
    n = len(data["log_prob"])
    if n == 0:
        raise ValueError("ppo_update: no steps in the given episodes")
    if float(data["weight"].sum()) == 0:
        raise ValueError("ppo_update: every step's reward is stale (stale_rewards: skip); "
                         "nothing to train on. Check the reward model (`/diagnostics`) or use "
                         "stale_rewards: flag")
    T = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in data.items() if k != "stale"}
    model.train()
    frozen = () if ppo.train_projections else ("image_proj.", "text_proj.")
    params = [p for name, p in model.named_parameters() if not name.startswith(frozen)]
    optim = torch.optim.Adam(params, lr=ppo.learning_rate, eps=1e-5)
    rng = np.random.default_rng(seed)
    sums: Dict[str, float] = {}
    steps = 0
    stopped_early = False
    for _ in range(ppo.update_epochs):
        if stopped_early:
            break
        order = rng.permutation(n)
        for start in range(0, n, ppo.minibatch_size):
            idx = torch.as_tensor(order[start:start + ppo.minibatch_size])
            x = T["features"][idx]
            logp, ent, v, mean = model.evaluate_actions(*model.split(x), T["raw_action"][idx])
            with torch.no_grad():
                init_mean, init_log_std, _ = init_model(*init_model.split(x))
            kl = gaussian_kl(mean, model.effective_log_std().expand_as(mean), init_mean,
                             init_log_std.expand_as(init_mean))
            losses = ppo_losses(logp, T["log_prob"][idx], T["adv"][idx], v, T["ret"][idx], ent, kl,
                                T["weight"][idx], ppo)
            if ppo.target_kl and steps and float(losses["approx_kl"]) > 1.5 * ppo.target_kl:
                stopped_early = True
                break
            optim.zero_grad()
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, ppo.max_grad_norm)
            optim.step()
            steps += 1
            for k, val in losses.items():
                sums[k] = sums.get(k, 0.0) + float(val.detach())
    model.eval()
    rewards = [step_rewards(e["reward"], cfg.reward_transform, cfg.reward_scale) for e in episodes]
    stats = {k: v / max(1, steps) for k, v in sums.items()}
    stats.update(steps=float(n), gradient_steps=float(steps), stopped_early=float(stopped_early),
                 value_prefit_mse=prefit_mse,
                 stale_fraction=float(np.mean(data["stale"])),
                 stale_skipped=float(np.sum(data["weight"] == 0)),
                 mean_step_reward=float(np.mean(np.concatenate(rewards))),
                 mean_return=float(np.mean([r.sum() for r in rewards])))
    return stats


def widen_action_std(model, std: float) -> None:
    """Raise the policy's action standard deviation to at least `std` (per dimension).
    Behaviour cloning leaves it at the floor (~0.05), where the rollouts barely explore and a
    PPO step that moves the mean by 0.01 already costs a KL of 0.02 per dimension."""
    import math as _m
    torch = _torch()
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    with torch.no_grad():
        model.log_std.clamp_(min=_m.log(std))


def episode_succeeded(meta: dict, cfg: LearnerConfig) -> bool:
    extra = meta.get("extra", meta)
    if cfg.success_source == "env":
        return bool(extra.get("env_success", False))
    c = extra.get("final_completion", NAN)
    if c is None or not math.isfinite(float(c)):
        return False
    return float(c) >= cfg.success_threshold


def filtered_bc_update(model, episodes: Sequence[dict], cfg: LearnerConfig, seed: int = 0) -> Dict[str, float]:
    """Behaviour cloning on the episodes judged successful (`success_source`); the others are
    dropped. With none selected the policy is left unchanged."""
    from lrm_ros.core.policy.tiny_vla import train_bc
    chosen = [e for e in episodes if episode_succeeded(e["meta"], cfg)]
    stats = {"episodes_selected": float(len(chosen)), "episodes_seen": float(len(episodes))}
    # how good the labeller was, where the simulator's verdict is known (sim; not on a robot)
    known = [e["meta"].get("extra", e["meta"]).get("env_success") for e in episodes]
    if all(k is not None for k in known):
        picked = [bool(k) for k, e in zip(known, episodes) if episode_succeeded(e["meta"], cfg)]
        stats["selected_env_successes"] = float(sum(picked))
        stats["env_successes_seen"] = float(sum(bool(k) for k in known))
    if not chosen:
        stats["steps"] = 0.0
        return stats
    feats = np.concatenate([e["features"] for e in chosen]).astype(np.float32)
    acts = np.concatenate([e["action"] for e in chosen]).astype(np.float32)
    img, txt, pro = (a.numpy() for a in model.split(_torch().as_tensor(feats)))
    _, hist = train_bc(img, txt, pro, acts, epochs=cfg.bc_epochs, lr=cfg.bc_lr, seed=seed,
                       progress=False, model=model)
    stats.update(steps=float(len(acts)), bc_nll=hist["nll"][-1], bc_mse=hist["mse"][-1])
    return stats


# ------------------------------------------------------------------------------------------
# the learner

STATE_NAME = "learner_state.json"


@dataclass
class IterationResult:
    iteration: int
    version: int
    checkpoint: str
    sha256: str
    algorithm: str
    stats: Dict[str, float]


class Learner:
    """Chooses episodes, trains, writes checkpoints; its state survives restarts."""

    def __init__(self, cfg: LearnerConfig, ppo: Optional[PPOConfig] = None):
        from lrm_ros.core.policy.adapter import DEFAULT_CHECKPOINT
        from lrm_ros.core.policy.tiny_vla import load_policy
        self.cfg, self.ppo = cfg, ppo or PPOConfig(iterations=cfg.max_iterations)
        self.root = Path(cfg.store_dir)
        self.store = EpisodeStore(self.root / "episodes")
        self.recovery = self.store.recover()
        self.ckpt_dir = self.root / "checkpoints"
        init_path = Path(cfg.init_checkpoint) if cfg.init_checkpoint else DEFAULT_CHECKPOINT
        self.init_model, self.init_meta = load_policy(init_path)
        for p in self.init_model.parameters():
            p.requires_grad_(False)
        state = self._read_state()
        self.version = int(state.get("version", 0))
        self.iteration = int(state.get("iteration", 0))
        self.used = set(state.get("used", []))
        self.bc_kept = set(state.get("bc_kept", []))      # filtered_bc: successes of past iterations
        self.history: List[dict] = list(state.get("history", []))
        self.checkpoint = str(state.get("checkpoint", "")) or str(init_path)
        self.sha256 = str(state.get("sha256", ""))
        self.model, _ = load_policy(self.checkpoint, self.sha256)
        self.resumed = bool(state)
        self.min_episode_version = int(state.get("min_episode_version", 0))
        if cfg.algorithm == "ppo" and self.ppo.explore_std > 0:
            widen_action_std(self.init_model, self.ppo.explore_std)
            if not self.resumed:
                # version 1 = the imitation policy with the wider spread: rollouts recorded
                # with the narrow one (version 0) would give PPO ratios of ~1e-4
                widen_action_std(self.model, self.ppo.explore_std)
                self._save_version({"explore_std": self.ppo.explore_std})
                self.min_episode_version = self.version
                self._write_state()

    # -- state
    def _read_state(self) -> dict:
        p = self.root / STATE_NAME
        if not p.is_file():
            return {}
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{p} is unreadable ({exc}); move it away to start the learner afresh") from None

    def _write_state(self) -> None:
        p = self.root / STATE_NAME
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"version": self.version, "iteration": self.iteration,
                                   "checkpoint": self.checkpoint, "sha256": self.sha256,
                                   "used": sorted(self.used), "bc_kept": sorted(self.bc_kept),
                                   "history": self.history,
                                   "min_episode_version": self.min_episode_version,
                                   "config": asdict(self.cfg), "ppo": asdict(self.ppo)}, indent=1))
        os.replace(tmp, p)

    # -- episode choice
    def usable_episodes(self) -> List[EpisodeInfo]:
        out = []
        for info in self.store.complete_episodes():
            if (info.path.name in self.used or info.policy_version < self.version - self.cfg.max_policy_lag
                    or info.policy_version < self.min_episode_version):
                continue
            if self.cfg.algorithm == "ppo" and info.meta.get("extra", {}).get("deterministic", False):
                continue   # evaluation rollouts: no exploration to learn from
            out.append(info)
        return out

    @property
    def done(self) -> bool:
        return self.iteration >= self.cfg.max_iterations

    def ready(self, usable: Optional[int] = None) -> bool:
        """Whether an update can run; `usable`: a count of usable episodes just taken."""
        n = len(self.usable_episodes()) if usable is None else usable
        return not self.done and n >= self.cfg.episodes_per_iteration

    def train_iteration(self) -> IterationResult:
        infos = self.usable_episodes()[: self.cfg.episodes_per_iteration]
        if not infos:
            raise ValueError("no usable episodes recorded yet")
        episodes = [self.store.load(i) for i in infos]
        for e in episodes:
            if e["features"].shape[-1] != self.model.feature_dim:
                raise ValueError(f"{e['meta'].get('env')} episode {e['meta'].get('episode')}: steps carry "
                                 f"{e['features'].shape[-1]} features, the policy takes "
                                 f"{self.model.feature_dim}; the policy node's adapter gives no trainable "
                                 "features (external VLA?)")
        t0 = time.monotonic()
        seed = self.cfg.seed + self.iteration
        try:
            if self.cfg.algorithm == "ppo":
                stats = ppo_update(self.model, self.init_model, episodes, self.cfg, self.ppo, seed=seed)
            else:
                kept = [self.store.load(i) for i in self.store.complete_episodes()
                        if i.path.name in self.bc_kept] if self.cfg.bc_replay else []
                stats = filtered_bc_update(self.model, episodes + kept, self.cfg, seed=seed)
                stats["episodes_replayed"] = float(len(kept))
                self.bc_kept.update(i.path.name for i, e in zip(infos, episodes)
                                    if episode_succeeded(e["meta"], self.cfg))
        except ValueError as exc:
            # these episodes cannot be trained on (e.g. every reward stale): set them aside,
            # so the next iteration waits for new ones instead of failing on them again
            self.used.update(i.path.name for i in infos)
            self.history.append({"iteration": None, "skipped_episodes": len(infos), "reason": str(exc)})
            self._write_state()
            raise
        extras = [e["meta"].get("extra", {}) for e in episodes]
        stats.update(episodes=float(len(episodes)), train_s=time.monotonic() - t0,
                     env_success_rate=float(np.mean([bool(x.get("env_success")) for x in extras])),
                     mean_final_value=float(np.nanmean([x.get("final_value", NAN) for x in extras]
                                                       or [NAN])),
                     policy_versions_used=float(len({i.policy_version for i in infos})))
        self.iteration += 1
        sha = self._save_version()
        self.used.update(i.path.name for i in infos)
        self.history.append({"iteration": self.iteration, "version": self.version,
                             **{k: (v if math.isfinite(v) else None) for k, v in stats.items()}})
        self._write_state()
        self._prune()
        return IterationResult(self.iteration, self.version, self.checkpoint, sha,
                               self.cfg.algorithm, stats)

    def _save_version(self, extra: Optional[dict] = None) -> str:
        from lrm_ros.core.policy.tiny_vla import save_policy
        self.version += 1
        path = self.ckpt_dir / f"policy_v{self.version:04d}.pt"
        sha = save_policy(self.model, path, meta={"version": self.version, "iteration": self.iteration,
                                                  "algorithm": self.cfg.algorithm,
                                                  "init": self.init_meta, **(extra or {})})
        self.checkpoint, self.sha256 = str(path.resolve()), sha
        return sha

    def _prune(self) -> None:
        if self.cfg.keep_checkpoints <= 0:
            return
        ckpts = sorted(self.ckpt_dir.glob("policy_v*.pt"))
        for old in ckpts[: -self.cfg.keep_checkpoints]:
            if str(old.resolve()) != self.checkpoint:
                old.unlink(missing_ok=True)
