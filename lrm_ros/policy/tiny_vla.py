"""The embedded `tiny_vla` policy: frozen EfficientNet-Lite0 image features + frozen MiniLM
instruction embedding + proprioception -> small MLP -> diagonal Gaussian action, plus a
value head for PPO. Behaviour-cloned from motion-planning demonstrations (`train_bc`), then
refined online by the learner (issue 5).

The network sees features, not pixels: `lrm_ros.vision.features` computes them (and caches
them), so the same checkpoint serves the policy node and the learner's updates.
"""
import hashlib
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

IMAGE_DIM, TEXT_DIM = 1280, 384
FORMAT = "lrm_ros.tiny_vla/1"


@dataclass(frozen=True)
class TinyVLAConfig:
    action_dim: int = 7
    proprio_dim: int = 9
    hidden: int = 256
    image_proj: int = 128
    text_proj: int = 64
    init_log_std: float = -1.0
    min_log_std: float = -3.0
    """floor of the action log-std (std 0.05 in the [-1, 1] action range): behaviour cloning
    would otherwise shrink the spread of constant action components towards zero, leaving RL
    nothing to explore and log-probabilities that explode"""

    def __post_init__(self):
        for name in ("action_dim", "proprio_dim", "hidden", "image_proj", "text_proj"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TinyVLAConfig.{name} must be >= 1, got {getattr(self, name)}")


def _torch():
    import torch
    return torch


class TinyVLA(_torch().nn.Module):
    def __init__(self, config: TinyVLAConfig):
        torch = _torch()
        nn = torch.nn
        super().__init__()
        self.config = config
        c = config
        self.image_proj = nn.Sequential(nn.Linear(IMAGE_DIM, c.image_proj), nn.LayerNorm(c.image_proj))
        self.text_proj = nn.Sequential(nn.Linear(TEXT_DIM, c.text_proj), nn.LayerNorm(c.text_proj))
        trunk_in = c.image_proj + c.text_proj + c.proprio_dim
        self.actor = nn.Sequential(nn.Linear(trunk_in, c.hidden), nn.GELU(),
                                   nn.Linear(c.hidden, c.hidden), nn.GELU(),
                                   nn.Linear(c.hidden, c.action_dim))
        self.critic = nn.Sequential(nn.Linear(trunk_in, c.hidden), nn.GELU(),
                                    nn.Linear(c.hidden, 1))
        self.log_std = nn.Parameter(torch.full((c.action_dim,), float(c.init_log_std)))

    @property
    def feature_dim(self) -> int:
        """Length of the flat input vector: [image 1280 | text 384 | proprio]."""
        return IMAGE_DIM + TEXT_DIM + self.config.proprio_dim

    def split(self, features):
        """Flat (B, feature_dim) inputs -> (image, text, proprio)."""
        if features.shape[-1] != self.feature_dim:
            raise ValueError(f"tiny_vla expects {self.feature_dim} input features "
                             f"(1280 image + 384 text + {self.config.proprio_dim} proprio), "
                             f"got {features.shape[-1]}")
        return (features[..., :IMAGE_DIM], features[..., IMAGE_DIM:IMAGE_DIM + TEXT_DIM],
                features[..., IMAGE_DIM + TEXT_DIM:])

    def _trunk(self, image, text, proprio):
        torch = _torch()
        return torch.cat([self.image_proj(image), self.text_proj(text), proprio], dim=-1)

    def forward(self, image, text, proprio):
        """(mean (B, A), log_std (A,), value (B,))."""
        h = self._trunk(image, text, proprio)
        # the critic reads the projections without moving them: early PPO value errors are
        # large and would otherwise drag the actor's input features around
        return self.actor(h), self.effective_log_std(), self.critic(h.detach()).squeeze(-1)

    def distribution(self, image, text, proprio):
        torch = _torch()
        mean, log_std, value = self(image, text, proprio)
        return torch.distributions.Normal(mean, log_std.exp().expand_as(mean)), value

    def effective_log_std(self):
        return self.log_std.clamp(min=self.config.min_log_std)

    def act(self, image, text, proprio, deterministic: bool = False):
        """(action, log_prob, value) for a batch; deterministic = the mean (evaluation)."""
        torch = _torch()
        with torch.no_grad():
            dist, value = self.distribution(image, text, proprio)
            action = dist.mean if deterministic else dist.sample()
            return action, dist.log_prob(action).sum(-1), value

    def evaluate_actions(self, image, text, proprio, actions):
        """(log_prob, entropy, value, mean) of given actions: what PPO differentiates."""
        dist, value = self.distribution(image, text, proprio)
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1), value, dist.mean


class PolicyCheckpointError(ValueError):
    """A policy checkpoint cannot be used; the message says why."""


def save_policy(model: TinyVLA, path, meta: Optional[dict] = None) -> str:
    """Write atomically (lrm_ros.common.atomic); returns the file's SHA-256."""
    from lrm_ros.common.atomic import atomic_write_bytes
    torch = _torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "config": asdict(model.config), "state_dict": model.state_dict(),
                "meta": dict(meta or {})}, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_policy(path, expected_sha256: str = "") -> Tuple[TinyVLA, dict]:
    """Load and validate a checkpoint. Raises PolicyCheckpointError (file missing, checksum
    mismatch, not a tiny_vla checkpoint, wrong shapes, non-finite weights): the caller keeps
    its current policy."""
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise PolicyCheckpointError(f"policy checkpoint {path} does not exist")
    data = path.read_bytes()
    if expected_sha256 and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise PolicyCheckpointError(f"policy checkpoint {path}: SHA-256 does not match the one "
                                    "announced (file changed or half written)")
    try:
        import io
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PolicyCheckpointError(f"policy checkpoint {path} cannot be read: {exc}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise PolicyCheckpointError(f"{path} is not a tiny_vla checkpoint ({FORMAT})")
    try:
        model = TinyVLA(TinyVLAConfig(**blob["config"]))
        model.load_state_dict(blob["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise PolicyCheckpointError(f"policy checkpoint {path} does not fit: {exc}") from None
    for name, tensor in model.state_dict().items():
        if not torch.isfinite(tensor).all():
            raise PolicyCheckpointError(f"policy checkpoint {path}: non-finite values in {name}")
    model.eval()
    return model, dict(blob.get("meta", {}))


def train_bc(image_feats: np.ndarray, text_feats: np.ndarray, proprio: np.ndarray,
             actions: np.ndarray, config: Optional[TinyVLAConfig] = None, epochs: int = 50,
             batch_size: int = 256, lr: float = 1e-3, seed: int = 0, progress: bool = True,
             model: Optional[TinyVLA] = None) -> Tuple[TinyVLA, Dict[str, list]]:
    """Behaviour cloning: maximise the log-likelihood of the demonstrated actions (the mean
    regresses onto them, the std shrinks to their spread). Inputs are per-step arrays:
    image_feats (N, 1280), text_feats (N, 384), proprio (N, P), actions (N, A)."""
    torch = _torch()
    from tqdm.auto import tqdm
    n = len(actions)
    if not (len(image_feats) == len(text_feats) == len(proprio) == n) or n == 0:
        raise ValueError(f"train_bc: need equal, non-zero lengths, got image {len(image_feats)}, "
                         f"text {len(text_feats)}, proprio {len(proprio)}, actions {n}")
    cfg = config or TinyVLAConfig(action_dim=actions.shape[1], proprio_dim=proprio.shape[1])
    torch.manual_seed(seed)
    model = model or TinyVLA(cfg)
    model.train()
    tensors = [torch.as_tensor(np.asarray(a), dtype=torch.float32)
               for a in (image_feats, text_feats, proprio, actions)]
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    history = {"nll": [], "mse": []}
    for _ in tqdm(range(epochs), desc="behaviour cloning", unit="epoch", disable=not progress):
        order = rng.permutation(n)
        nll_sum = mse_sum = 0.0
        for start in range(0, n, batch_size):
            idx = torch.as_tensor(order[start:start + batch_size])
            img, txt, pro, act = (t[idx] for t in tensors)
            logp, _, _, mean = model.evaluate_actions(img, txt, pro, act)
            loss = -logp.mean()
            optim.zero_grad()
            loss.backward()
            optim.step()
            nll_sum += float(loss.detach()) * len(idx)
            mse_sum += float(((mean.detach() - act) ** 2).mean()) * len(idx)
        history["nll"].append(nll_sum / n)
        history["mse"].append(mse_sum / n)
    model.eval()
    return model, history


def bc_arrays_from_episodes(episodes: Sequence, image_encoder=None, text_encoder=None):
    """Per-step BC arrays from demonstration episodes (lrm_ros.bags.reader.Episode): the
    observation of tick t and the command applied at tick t."""
    from lrm_ros.vision import features
    image_encoder = image_encoder or features.image_encoder()
    text_encoder = text_encoder or features.text_encoder()
    img, txt, pro, act = [], [], [], []
    for ep in episodes:
        steps = len(ep.actions)
        if steps == 0:
            continue
        img.append(image_encoder.encode(ep.frames[:steps]))
        txt.append(np.repeat(text_encoder.encode(ep.instruction)[None], steps, axis=0))
        pro.append(ep.joint_positions[:steps])
        act.append(ep.actions)
    if not act:
        raise ValueError("bc_arrays_from_episodes: no steps in the given episodes")
    return (np.concatenate(img).astype(np.float32), np.concatenate(txt).astype(np.float32),
            np.concatenate(pro).astype(np.float32), np.concatenate(act).astype(np.float32))
