"""The policy interface the policy node drives, and the embedded `tiny_vla` behind it.

An adapter turns one observation (the camera frame at model resolution, the instruction and
the joint positions) into an action. External VLAs (pi0.5 and the like, on a GPU machine)
plug in by subclassing `PolicyAdapter` and naming the class in the node's `adapter`
parameter as ``package.module:ClassName``; the class is built with
``ClassName.from_checkpoint(path, device=...)``.

What the learner needs from an adapter for PPO: `PolicyOutput.features` (the exact input
vector the trainable part saw), `raw_action` (the sample whose `log_prob` is reported) and
`value`. An adapter that cannot give them (a frozen external VLA) still runs: its features
are empty and the learner refuses to train on its steps, saying why.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from lrm_ros.models import MODELS_DIR

DEFAULT_CHECKPOINT = MODELS_DIR / "tiny_vla.pt"


@dataclass
class PolicyObservation:
    frame: np.ndarray              # (H, W, 3) uint8 RGB at model resolution
    instruction: str
    joint_positions: np.ndarray    # (J,) float


@dataclass
class PolicyOutput:
    action: np.ndarray             # what is sent: raw_action clipped to the action bounds
    raw_action: np.ndarray         # the sample (or the mean when deterministic)
    log_prob: float                # log-probability of raw_action under the policy
    value: float                   # the critic's estimate (NaN when the policy has none)
    features: np.ndarray           # float32 input vector of the trainable part (may be empty)
    deterministic: bool


class PolicyAdapter(ABC):
    """One policy the node can run. Subclasses set `name` and implement `act_batch`."""
    name = "policy"

    def __init__(self, action_low: float = -1.0, action_high: float = 1.0):
        if not action_low < action_high:
            raise ValueError(f"action bounds must satisfy low < high, got {action_low}, {action_high}")
        self.action_low, self.action_high = float(action_low), float(action_high)

    @abstractmethod
    def act_batch(self, observations: Sequence[PolicyObservation],
                  deterministic: bool = False) -> List[PolicyOutput]:
        """One output per observation, in order."""

    def act(self, observation: PolicyObservation, deterministic: bool = False) -> PolicyOutput:
        return self.act_batch([observation], deterministic)[0]

    @classmethod
    def from_checkpoint(cls, path: str, device: str = "cpu", **kwargs) -> "PolicyAdapter":
        raise NotImplementedError(f"{cls.__name__} cannot load checkpoints")

    def clip(self, raw: np.ndarray) -> np.ndarray:
        return np.clip(raw, self.action_low, self.action_high)

    @property
    def meta(self) -> dict:
        return {}


class TinyVLAAdapter(PolicyAdapter):
    """The embedded policy: frozen EfficientNet-Lite0 + MiniLM features + proprioception ->
    `TinyVLA` (Gaussian actions and a value)."""
    name = "tiny_vla"

    def __init__(self, model, meta: Optional[dict] = None, image_encoder=None, text_encoder=None,
                 seed: int = 0, **bounds):
        super().__init__(**bounds)
        from lrm_ros.vision import features
        import torch
        self.model = model
        self._meta = dict(meta or {})
        self.image_encoder = image_encoder or features.image_encoder()
        self.text_encoder = text_encoder or features.text_encoder()
        self._gen = torch.Generator().manual_seed(int(seed))

    @classmethod
    def from_checkpoint(cls, path: str = "", device: str = "cpu", expected_sha256: str = "",
                        **kwargs) -> "TinyVLAAdapter":
        from lrm_ros.policy.tiny_vla import PolicyCheckpointError, load_policy
        path = Path(path) if path else DEFAULT_CHECKPOINT
        if not path.is_file():
            raise PolicyCheckpointError(
                f"policy checkpoint {path} does not exist; set the node's `checkpoint` parameter "
                "to a tiny_vla .pt file (train one with `lrm-ros train-bc`), or leave it empty "
                "for the shipped one")
        model, meta = load_policy(path, expected_sha256)
        return cls(model, meta, **kwargs)

    def with_model(self, model, meta: Optional[dict] = None) -> "TinyVLAAdapter":
        """A new adapter around other weights, sharing the frozen encoders and continuing the
        sampling stream (so environments keep distinct noise across swaps)."""
        new = TinyVLAAdapter(model, meta, self.image_encoder, self.text_encoder,
                             action_low=self.action_low, action_high=self.action_high)
        new._gen = self._gen
        return new

    @property
    def meta(self) -> dict:
        return dict(self._meta)

    def features(self, observations: Sequence[PolicyObservation]) -> np.ndarray:
        """(N, feature_dim) float32: [image | text | proprio]."""
        P = self.model.config.proprio_dim
        img = self.image_encoder.encode(np.stack([np.asarray(o.frame) for o in observations]))
        txt = np.stack([self.text_encoder.encode(o.instruction) for o in observations])
        pro = []
        for o in observations:
            q = np.asarray(o.joint_positions, np.float32).reshape(-1)
            if q.size != P:
                raise ValueError(f"tiny_vla was trained on {P} joint positions, the robot sent "
                                 f"{q.size}; use a checkpoint trained for this robot")
            pro.append(q)
        return np.concatenate([img, txt, np.stack(pro)], axis=1).astype(np.float32)

    def act_features(self, feats: np.ndarray, deterministic: bool = False):
        """(raw actions (N, A), log_probs (N,), values (N,)) from input vectors."""
        import torch
        x = torch.as_tensor(np.asarray(feats, np.float32))
        with torch.no_grad():
            dist, value = self.model.distribution(*self.model.split(x))
            raw = dist.mean if deterministic else dist.mean + dist.stddev * torch.randn(
                dist.mean.shape, generator=self._gen)
            logp = dist.log_prob(raw).sum(-1)
        return raw.numpy().astype(np.float64), logp.numpy().astype(np.float64), \
            value.numpy().astype(np.float64)

    def act_batch(self, observations, deterministic=False):
        feats = self.features(observations)
        raw, logp, value = self.act_features(feats, deterministic)
        return [PolicyOutput(action=self.clip(raw[i]), raw_action=raw[i], log_prob=float(logp[i]),
                             value=float(value[i]), features=feats[i], deterministic=deterministic)
                for i in range(len(observations))]


ADAPTERS = {"tiny_vla": TinyVLAAdapter}


def adapter_class(spec: str):
    """'tiny_vla' or 'package.module:ClassName' -> the adapter class."""
    if spec in ADAPTERS:
        return ADAPTERS[spec]
    if ":" not in spec:
        raise ValueError(f"unknown policy adapter {spec!r}: use one of {sorted(ADAPTERS)} or "
                         "'package.module:ClassName' for an external VLA")
    module, _, name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"policy adapter {spec!r} cannot be imported: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, PolicyAdapter)):
        raise ValueError(f"policy adapter {spec!r} is not a lrm_ros PolicyAdapter subclass")
    return cls
