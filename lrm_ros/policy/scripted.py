"""Scripted policies that exercise the graph before a learned policy exists."""
from dataclasses import dataclass, field

import numpy as np

KINDS = ("random", "zero")


@dataclass(frozen=True)
class ScriptedPolicyConfig:
    """Parameters of the scripted_policy node."""
    kind: str = field(default="random", metadata={"help": "random (uniform in [-scale, scale]) or zero"})
    action_dim: int = field(default=7, metadata={"help": "size of the bridge's action (7 for Panda pd_ee_delta_pose)"})
    scale: float = field(default=0.3, metadata={"help": "amplitude of random actions"})
    seed: int = field(default=0, metadata={"help": "random seed (env_index is added)"})
    env_index: int = field(default=0, metadata={"help": "index of the environment"})

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.action_dim < 1:
            raise ValueError(f"action_dim must be >= 1, got {self.action_dim}")
        if not 0 <= self.scale <= 1e6:
            raise ValueError(f"scale must be >= 0, got {self.scale}")


class ScriptedPolicy:
    def __init__(self, config: ScriptedPolicyConfig):
        self.config = config
        self._rng = np.random.default_rng(config.seed + 7919 * config.env_index)

    def act(self) -> np.ndarray:
        if self.config.kind == "zero":
            return np.zeros(self.config.action_dim)
        return self._rng.uniform(-self.config.scale, self.config.scale, self.config.action_dim)
