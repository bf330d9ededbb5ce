"""Joining what the graph publishes per environment into training steps, ROS-free.

`EpisodeAssembler` appends the steps to the `EpisodeStore` as they complete (so a restart
loses at most a chunk); `LearningGate` says when an update may start.

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
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Tuple

import numpy as np

from lrm_ros.common.episode_end import END_SUCCESS
from lrm_ros.learn.episode_store import EpisodeInfo, EpisodeStore

NAN = float("nan")


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
