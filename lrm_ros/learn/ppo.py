"""PPO pieces for the online learner (issue 5 builds the learner around them).

Readable top to bottom, CleanRL style: the configuration with a docstring per field, GAE,
the clipped surrogate, the value loss, and a KL penalty that keeps the policy near the
imitation-learned one it started from. Rewards come from the reward model's held values;
ticks whose held reward is stale are handled explicitly (`stale_weights`), never trained on
silently.
"""
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

STALE_MODES = ("skip", "flag")
ADVANTAGE_MODES = ("gae", "group")


@dataclass(frozen=True)
class PPOConfig:
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE lambda (bias/variance trade-off of the advantage estimate)"""
    clip_coef: float = 0.2
    """PPO ratio clipping: the surrogate ignores ratio changes beyond 1 +- clip_coef"""
    vf_coef: float = 0.5
    """weight of the value loss"""
    ent_coef: float = 0.0
    """weight of the entropy bonus"""
    kl_coef: float = 0.02
    """weight of KL(policy || initial IL policy): stay close to what imitation learned"""
    learning_rate: float = 1e-4
    """Adam learning rate. Behaviour cloning leaves action spreads near min_log_std (0.05):
    at 3e-4 a single Adam step moved the policy by an approximate KL of 0.34 (8 PushCube
    episodes), so target_kl ended each iteration after one step. The defaults here (1e-4,
    kl_coef 0.02, target_kl 0.05, minibatches of 256, group advantages, self-imitation of
    the top quarter) are the setting measured to improve tiny_vla on PushCube and PullCube
    (bench/results/rl_diagnosis_PushCube.md); the benchmark and the graph's learner share them"""
    update_epochs: int = 4
    """passes over each iteration's data"""
    minibatch_size: int = 256
    """steps per gradient step"""
    max_grad_norm: float = 0.5
    """gradient clipping"""
    norm_adv: bool = True
    """normalise advantages per minibatch"""
    target_kl: float = 0.05
    """stop an iteration's updates once a minibatch's approximate KL to the data-collecting
    policy exceeds 1.5 x this (0 = never): with the small action spreads behaviour cloning
    leaves, a few Adam steps can otherwise move the policy far outside the clip range"""
    value_prefit_epochs: int = 10
    """before each iteration's GAE, passes of value regression onto the batch's discounted
    returns (0 = off). Behaviour cloning leaves the critic untrained; advantages from an
    untrained critic are mostly noise, and PPO then walks the imitation policy away from what
    it does well"""
    train_projections: bool = True
    """also update the actor's input projections (image 1280 -> 128, text 384 -> 64) with PPO,
    not only the MLP head. Off: the projections behaviour cloning learned stay fixed. Measured
    on PushCube (bench/results/rl_diagnosis_PushCube.md): off did not help; PPO iterations
    still hit target_kl after 1-11 of ~44 minibatch steps, and the deterministic policy fell
    from 0.20 to 0.05 success"""
    explore_std: float = 0.0
    """raise the imitation policy's action std to at least this before RL (0 = keep it).
    Behaviour cloning leaves it at the floor (~0.05): the rollouts hardly explore, and a step
    that moves the mean by 0.01 already costs a KL of 0.02 per action dimension. The KL
    reference (the initial policy) gets the same spread, so the KL term constrains the mean"""
    iterations: int = 30
    """RL iterations (the LRM paper: 30)"""
    advantage: str = "group"
    """how each step's advantage is estimated. 'gae': GAE(gamma, lambda) on the critic's values
    (refitted first, `value_prefit_epochs`). 'group': no critic: the step's discounted return-to-go
    minus the mean return-to-go, at the same step, of the other episodes that started from the
    same initial state (same seed; episodes without a seed are compared with the whole batch),
    a leave-one-out baseline as in RLOO/GRPO. Paired starts remove the variance between initial
    states, which a critic fitted on 8 episodes cannot (bench/results/rl_diagnosis_PushCube.md).
    In the graph the bridges do not reseed each episode, so there the baseline is the batch's"""
    sil_top_fraction: float = 0.25
    """self-imitation (SIL, Oh et al. 2018, in its simplest form): after each PPO update,
    behaviour cloning (`LearnerConfig.bc_epochs`, `bc_lr`) on the episodes whose return under
    the training reward ranks in this top fraction of every episode trained on so far
    (0 = off). PPO's per-step gradient from 8 episodes is mostly noise, while imitating the
    best rollouts is a low-variance use of the same reward (bench/results/rl_diagnosis_PushCube.md:
    filtered BC on the simulator's success improved the policy where PPO did not). The
    selection uses the reward only, never the simulator's success, so it works for any signal"""
    stale_rewards: str = "skip"
    """ticks whose held reward is stale: 'skip' (zero weight in the losses) or 'flag' (train
    on them, count them in the statistics)"""

    def __post_init__(self):
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"need 0 < gamma <= 1 and 0 <= gae_lambda <= 1, got "
                             f"{self.gamma}, {self.gae_lambda}")
        if self.clip_coef <= 0:
            raise ValueError(f"clip_coef must be > 0, got {self.clip_coef}")
        if self.stale_rewards not in STALE_MODES:
            raise ValueError(f"stale_rewards must be one of {STALE_MODES}, got {self.stale_rewards!r}")
        if self.advantage not in ADVANTAGE_MODES:
            raise ValueError(f"advantage must be one of {ADVANTAGE_MODES}, got {self.advantage!r}")
        if not 0.0 <= self.sil_top_fraction <= 1.0:
            raise ValueError(f"sil_top_fraction must be in [0, 1] (0 = off), got {self.sil_top_fraction}")
        if self.value_prefit_epochs < 0:
            raise ValueError(f"value_prefit_epochs must be >= 0, got {self.value_prefit_epochs}")
        if not 0 <= self.explore_std < 10:
            raise ValueError(f"explore_std must be in [0, 10) (0 = keep), got {self.explore_std}")
        if self.target_kl < 0:
            raise ValueError(f"target_kl must be >= 0 (0 = off), got {self.target_kl}")
        if self.update_epochs < 1 or self.minibatch_size < 1 or self.iterations < 1:
            raise ValueError("update_epochs, minibatch_size and iterations must be >= 1")


def compute_gae(rewards, values, dones, last_value: float, last_done: bool,
                gamma: float, lam: float) -> Tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over one rollout of T steps (one environment).

    rewards[t], values[t]: reward after and value at step t; dones[t] is True when the
    episode ended at step t (no bootstrap past it).
    last_value / last_done: the value of the state after the last step and whether the
    rollout ended an episode there. Returns (advantages, returns), both (T,).
    """
    rewards = np.asarray(rewards, np.float64)
    values = np.asarray(values, np.float64)
    dones = np.asarray(dones, bool)
    T = len(rewards)
    adv = np.zeros(T)
    gae = 0.0
    for t in reversed(range(T)):
        if t == T - 1:
            next_value, next_nonterminal = last_value, 0.0 if last_done else 1.0
        else:
            next_value, next_nonterminal = values[t + 1], 1.0
        if dones[t]:
            next_nonterminal = 0.0
        delta = rewards[t] + gamma * next_value * next_nonterminal - values[t]
        gae = delta + gamma * lam * next_nonterminal * gae
        adv[t] = gae
    return adv, adv + values


def gae_direct(rewards, values, dones, last_value: float, last_done: bool,
               gamma: float, lam: float) -> np.ndarray:
    """The same advantages from the definition: A_t = sum_l (gamma lam)^l delta_{t+l},
    summed within the episode. O(T^2); for tests."""
    rewards = np.asarray(rewards, np.float64)
    values = np.asarray(values, np.float64)
    dones = np.asarray(dones, bool)
    T = len(rewards)
    nxt = np.append(values[1:], last_value)
    end = dones.copy()
    end[-1] = end[-1] or last_done
    deltas = rewards + gamma * nxt * (~end) - values
    adv = np.zeros(T)
    for t in range(T):
        total, weight = 0.0, 1.0
        for k in range(t, T):
            total += weight * deltas[k]
            if dones[k]:
                break
            weight *= gamma * lam
        adv[t] = total
    return adv


def discounted_returns(rewards, dones, gamma: float, last_value: float = 0.0) -> np.ndarray:
    """Monte-Carlo returns within episodes: G_t = r_t + gamma G_{t+1}, cut at dones; the
    step after the last one is worth `last_value` unless the last step is done."""
    rewards = np.asarray(rewards, np.float64)
    dones = np.asarray(dones, bool)
    out = np.zeros(len(rewards))
    g = float(last_value)
    for t in reversed(range(len(rewards))):
        if dones[t]:
            g = 0.0
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def stale_weights(stale, mode: str) -> np.ndarray:
    """Per-step loss weights: 0 for stale-reward steps in 'skip' mode, else 1."""
    stale = np.asarray(stale, bool)
    if mode not in STALE_MODES:
        raise ValueError(f"mode must be one of {STALE_MODES}, got {mode!r}")
    return np.where(stale & (mode == "skip"), 0.0, 1.0)


def gaussian_kl(mu_p, log_std_p, mu_q, log_std_q):
    """KL(p || q) of diagonal Gaussians, summed over the action dimension (torch or numpy)."""
    var_p = (2 * log_std_p).exp() if hasattr(log_std_p, "exp") else np.exp(2 * log_std_p)
    var_q = (2 * log_std_q).exp() if hasattr(log_std_q, "exp") else np.exp(2 * log_std_q)
    kl = log_std_q - log_std_p + (var_p + (mu_p - mu_q) ** 2) / (2 * var_q) - 0.5
    return kl.sum(-1)


def ppo_losses(new_logp, old_logp, advantages, new_values, returns, entropy, kl_to_init,
               weights, cfg: PPOConfig) -> Dict[str, object]:
    """The PPO objective on one minibatch (torch tensors, shape (B,)). `weights` are the
    stale-reward weights. Returns the total loss and its parts (for logging)."""
    import torch
    w = weights / weights.sum().clamp(min=1.0)
    adv = advantages
    if cfg.norm_adv and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    log_ratio = new_logp - old_logp
    ratio = log_ratio.exp()
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef)
    pg_loss = (torch.max(pg1, pg2) * w).sum()
    v_loss = 0.5 * (((new_values - returns) ** 2) * w).sum()
    ent = (entropy * w).sum()
    kl = (kl_to_init * w).sum()
    loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * ent + cfg.kl_coef * kl
    with torch.no_grad():
        approx_kl = (((ratio - 1) - log_ratio) * w).sum()
        clipfrac = (((ratio - 1).abs() > cfg.clip_coef).float() * w).sum()
    return {"loss": loss, "pg_loss": pg_loss, "v_loss": v_loss, "entropy": ent,
            "kl_to_init": kl, "approx_kl": approx_kl, "clipfrac": clipfrac}
