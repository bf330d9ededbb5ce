"""One learner iteration of each algorithm, ROS-free: `ppo_update` (with `step_rewards`,
`training_rewards`, the critic pre-fit and group advantages) and its optional
`self_imitation_update` (with `top_returns`), and `filtered_bc_update` (with
`episode_succeeded`, the labeller's verdict). Episodes are dicts as `EpisodeStore.load` returns."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from lrm_ros.learn.learner_config import LearnerConfig
from lrm_ros.learn.ppo import (PPOConfig, compute_gae, discounted_returns, gaussian_kl, ppo_losses,
                               stale_weights)

NAN = float("nan")


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


def final_completion(meta: dict) -> float:
    """The completion signal at an episode's terminal query (NaN when it has none)."""
    c = meta.get("extra", meta).get("final_completion", NAN)
    return float(c) if c is not None and math.isfinite(float(c)) else NAN


def episode_succeeded(meta: dict, cfg: LearnerConfig) -> bool:
    if cfg.success_source == "env":
        return bool(meta.get("extra", meta).get("env_success", False))
    return final_completion(meta) >= cfg.success_threshold      # NaN: never


def judge_successes(episodes: Sequence[dict], cfg: LearnerConfig) -> List[bool]:
    """Which of one iteration's episodes succeeded: the simulator's verdict, the completion
    threshold, or (``success_top_fraction`` > 0) the episodes whose final completion ranks in
    that top fraction of these episodes (ties: the earlier episode)."""
    if cfg.success_source == "env" or cfg.success_top_fraction <= 0:
        return [episode_succeeded(e["meta"], cfg) for e in episodes]
    finals = [final_completion(e["meta"]) for e in episodes]
    ranked = sorted((i for i, c in enumerate(finals) if math.isfinite(c)), key=lambda i: (-finals[i], i))
    k = max(1, int(round(cfg.success_top_fraction * len(episodes))))
    top = set(ranked[:k])
    return [i in top for i in range(len(episodes))]


def filtered_bc_update(model, episodes: Sequence[dict], cfg: LearnerConfig, seed: int = 0,
                       judged: Optional[Sequence[bool]] = None) -> Dict[str, float]:
    """Behaviour cloning on the episodes judged successful (``judged``, else
    :func:`judge_successes` of ``episodes``); the others are dropped. With none selected the
    policy is left unchanged."""
    judged = judge_successes(episodes, cfg) if judged is None else list(judged)
    if len(judged) != len(episodes):
        raise ValueError(f"{len(judged)} judgements for {len(episodes)} episodes")
    chosen = [e for e, ok in zip(episodes, judged) if ok]
    stats = {"episodes_selected": float(len(chosen)), "episodes_seen": float(len(episodes))}
    # how good the labeller was, where the simulator's verdict is known (sim; not on a robot)
    known = [e["meta"].get("extra", e["meta"]).get("env_success") for e in episodes]
    if all(k is not None for k in known):
        stats["selected_env_successes"] = float(sum(bool(k) for k, ok in zip(known, judged) if ok))
        stats["env_successes_seen"] = float(sum(bool(k) for k in known))
    stats.update(_clone(model, chosen, cfg, seed))
    return stats


def _clone(model, chosen: Sequence[dict], cfg: LearnerConfig, seed: int,
           extra: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Dict[str, float]:
    """`cfg.bc_epochs` passes of behaviour cloning on the steps of `chosen` and the `extra`
    (features, actions) steps (none of either: no change)."""
    from lrm_ros.policy.tiny_vla import train_bc
    parts = [(e["features"], e["action"]) for e in chosen] + ([extra] if extra is not None else [])
    if not parts:
        return {"steps": 0.0}
    feats = np.concatenate([f for f, _ in parts]).astype(np.float32)
    acts = np.concatenate([a for _, a in parts]).astype(np.float32)
    img, txt, pro = (a.numpy() for a in model.split(_torch().as_tensor(feats)))
    _, hist = train_bc(img, txt, pro, acts, epochs=cfg.bc_epochs, lr=cfg.bc_lr, seed=seed,
                       progress=False, model=model)
    return {"steps": float(len(acts)), "bc_nll": hist["nll"][-1], "bc_mse": hist["mse"][-1]}


def episode_return(ep: dict, cfg: LearnerConfig, gamma: float) -> float:
    """An episode's undiscounted return under the rewards PPO trains on (`training_rewards`)."""
    return float(np.sum(training_rewards(ep, cfg, gamma)))


def top_returns(returns: Dict, fraction: float) -> List:
    """The keys whose return ranks in the top `fraction` of `returns` (at least one; ties: the
    earlier key in sorted order), best first: the episodes PPO's self-imitation clones."""
    if not returns or fraction <= 0:
        return []
    k = max(1, int(round(fraction * len(returns))))
    return sorted(returns, key=lambda name: (-returns[name], name))[:k]


def self_imitation_update(model, episodes: Sequence[dict], cfg: LearnerConfig, seed: int = 0,
                          demos: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Dict[str, float]:
    """PPO's self-imitation step (`PPOConfig.sil_top_fraction`): behaviour cloning on the given
    best-return episodes, together with the `demos` steps (features, actions) when given (the
    demonstrations the IL policy was cloned from: they hold the policy near what it was taught
    while it imitates its own best rollouts); reports how many of the episodes the simulator
    calls successful, where known."""
    known = [e["meta"].get("extra", e["meta"]).get("env_success") for e in episodes]
    stats = {"sil_episodes": float(len(episodes))}
    if episodes and all(k is not None for k in known):
        stats["sil_env_successes"] = float(sum(bool(k) for k in known))
    if demos is not None:
        if len(demos[0]) != len(demos[1]) or demos[0].shape[-1] != model.feature_dim:
            raise ValueError(f"self-imitation demos: {len(demos[0])} feature rows of width "
                             f"{demos[0].shape[-1]} for {len(demos[1])} actions; the policy takes "
                             f"{model.feature_dim} features per step")
        stats["sil_demo_steps"] = float(len(demos[1]))
    stats.update({f"sil_{k}": v for k, v in _clone(model, episodes, cfg, seed, extra=demos).items()})
    return stats
