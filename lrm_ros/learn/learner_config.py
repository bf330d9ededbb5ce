"""The learner node's parameters (`LearnerConfig`; PPO's own are `lrm_ros.learn.ppo.PPOConfig`)."""
from __future__ import annotations

from dataclasses import dataclass, field

ALGORITHMS = ("ppo", "filtered_bc")
REWARD_TRANSFORMS = ("value", "delta")
SUCCESS_SOURCES = ("completion", "env")


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
    success_top_fraction: float = field(default=0.0, metadata={"help": (
        "filtered_bc with success_source completion: > 0 counts as successes the episodes of an "
        "iteration whose final completion ranks in this top fraction (at least one; never one "
        "without a valid completion), instead of success_threshold. For a labeller that ranks "
        "rollouts but whose probabilities are not calibrated on the policy's own rollouts")})
    bc_epochs: int = field(default=2, metadata={"help": (
        "filtered_bc (and PPO's self-imitation, ppo.sil_top_fraction): passes over the selected "
        "steps per iteration")})
    bc_replay: bool = field(default=True, metadata={"help": (
        "filtered_bc: each iteration trains on every episode judged successful so far, not only "
        "on this iteration's (measured on PushCube with the simulator's success, 30 x 8 rollouts, "
        "2 epochs: 0.20 -> 0.37, bench/results/rl_diagnosis_PushCube.md)")})
    bc_lr: float = field(default=3e-4, metadata={"help": "filtered_bc and PPO's self-imitation: Adam learning rate"})
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
        if not 0.0 <= self.success_top_fraction <= 1.0:
            raise ValueError(f"success_top_fraction must be in [0, 1] (0 = use success_threshold), "
                             f"got {self.success_top_fraction}")
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
