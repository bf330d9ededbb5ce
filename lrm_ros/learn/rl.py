"""The online learner, ROS-free: episodes in, policy checkpoints out.

The pieces live beside it:
- `learner_config.LearnerConfig`: the learner node's parameters (PPO's own are `PPOConfig`).
- `assembler.EpisodeAssembler`: joins what the graph publishes per environment into training
  steps and appends them to the `EpisodeStore` as they complete; `assembler.LearningGate`.
- `updates.ppo_update` and `updates.filtered_bc_update`: one iteration of each algorithm.
- `Learner` (here): picks the episodes an iteration may use, trains, writes the checkpoint
  atomically and remembers its state on disk so it resumes after a restart.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from lrm_ros.common.atomic import atomic_write_json
from lrm_ros.learn.episode_store import EpisodeInfo, EpisodeStore
from lrm_ros.learn.learner_config import LearnerConfig
from lrm_ros.learn.ppo import PPOConfig
from lrm_ros.learn.updates import (episode_return, filtered_bc_update, judge_successes, ppo_update,
                                   self_imitation_update, top_returns, widen_action_std)

NAN = float("nan")


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
        from lrm_ros.policy.adapter import DEFAULT_CHECKPOINT
        from lrm_ros.policy.tiny_vla import load_policy
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
        # PPO's self-imitation: the return of every episode trained on, by file name
        self.sil_returns: Dict[str, float] = dict(state.get("sil_returns", {}))
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
        atomic_write_json(self.root / STATE_NAME, {"version": self.version, "iteration": self.iteration,
                                   "checkpoint": self.checkpoint, "sha256": self.sha256,
                                   "used": sorted(self.used), "bc_kept": sorted(self.bc_kept),
                                   "sil_returns": self.sil_returns,
                                   "history": self.history,
                                   "min_episode_version": self.min_episode_version,
                                   "config": asdict(self.cfg), "ppo": asdict(self.ppo)}, indent=1)

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
                if self.ppo.sil_top_fraction > 0:
                    stats.update(self._self_imitate(infos, episodes, seed))
            else:
                kept = [self.store.load(i) for i in self.store.complete_episodes()
                        if i.path.name in self.bc_kept] if self.cfg.bc_replay else []
                judged = judge_successes(episodes, self.cfg)      # this iteration's, judged once
                stats = filtered_bc_update(self.model, episodes + kept, self.cfg, seed=seed,
                                           judged=judged + [True] * len(kept))
                stats["episodes_replayed"] = float(len(kept))
                self.bc_kept.update(i.path.name for i, ok in zip(infos, judged) if ok)
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

    def _self_imitate(self, infos: List[EpisodeInfo], episodes: List[dict], seed: int) -> Dict[str, float]:
        """Behaviour cloning on the best-return episodes of all trained on so far (PPOConfig.sil_top_fraction)."""
        self.sil_returns.update({i.path.name: episode_return(e, self.cfg, self.ppo.gamma)
                                 for i, e in zip(infos, episodes)})
        best = set(top_returns(self.sil_returns, self.ppo.sil_top_fraction))
        chosen = [self.store.load(i) for i in self.store.complete_episodes() if i.path.name in best]
        return self_imitation_update(self.model, chosen, self.cfg, seed=seed)

    def _save_version(self, extra: Optional[dict] = None) -> str:
        from lrm_ros.policy.tiny_vla import save_policy
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
