"""The `lite` reward backend: the embedded small reward model.

Frozen pretrained encoders (lrm_ros.vision.features: EfficientNet-Lite0 image features, 1280-d;
all-MiniLM-L6-v2 instruction embedding, 384-d) and small trained heads for LRM's three
signals (`LiteRewardModel`):

  progress     current frame [+ the episode's first frame] + instruction -> sigmoid in [0, 1]
  completion   current frame [+ the episode's first frame, with `completion_first`] +
               instruction -> logit; the result carries the probability
  contrastive  previous frame, current frame, instruction -> logit that the current frame is
               closer to done. Antisymmetric by construction: logit(a, b) = g(b, a) - g(a, b)
               with one network g, so swapping the frames negates the logit exactly and two
               identical frames give exactly 0.

Three parts, as every backend:
  input builder  `build_inputs`: the distinct frames of the batch (current, previous,
                 first) -> features, each distinct frame encoded once; features are also kept
                 in a small LRU cache keyed by frame content, so a frame seen in an earlier
                 batch (the episode's first frame; the previous frame, which was the current
                 frame K ticks ago) is not re-encoded. Instruction embeddings are cached per
                 string by the text encoder.
  model call     `run_model`: ONE batched image-encoder pass over the uncached frames and
                 ONE batched pass of the heads over all queries of the chunk.
  parser         `to_result`: model outputs -> RewardResult (never invalid: the heads always
                 produce numbers).

Values (RewardResult conventions, base.py):
  progress     the sigmoid output in [0, 1]
  completion   the probability in [0, 1] (the vlm backend's parsed answer is 1/0; the
               probability is the soft version of it)
  contrastive  the raw -1 / 0 / +1, as the vlm backend: +1 when P(current closer to done)
               > 0.5 + contrastive_margin, -1 when < 0.5 - contrastive_margin, else 0 ("no
               clear change": identical frames give P = 0.5 exactly). The first query of an
               episode (no previous frame) gives 0, as in vlm. The probability is in
               raw["contrastive_prob"].
  tri          tri_value(progress, completion probability, contrastive)

Checkpoint: one `.pt` file, `torch.save` of {"format", "version", "config" (head sizes),
"state_dict", "meta" (feature encoders, training tasks, metrics, date, ...)}, written
atomically; loaded with `weights_only=True` and validated (format, version, encoders,
every tensor shape). The shipped one is DEFAULT_CHECKPOINT (lrm_ros/models/lite_reward.pt),
trained by `lrm-ros train-lite` / `python -m lrm_ros.learn.train_lite`.

Why one file of about 530 lines: the model, its checkpoint format (validated against the
model's config) and the backend (the model's only runtime user) change together.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from lrm_ros.common.atomic import atomic_write
from lrm_ros.models import MODELS_DIR
from lrm_ros.vision.features import (IMAGE_ENCODER_ID, IMAGE_FEATURE_DIM, TEXT_ENCODER_ID,
                                     TEXT_FEATURE_DIM)

from .base import NAN, RewardBackend, RewardQuery, RewardResult, signal_needs, tri_value

LITE_SIGNALS = ("progress", "completion", "contrastive", "tri")
CHECKPOINT_FORMAT = "lrm_ros.lite_reward"
CHECKPOINT_VERSION = 1
DEFAULT_CHECKPOINT = MODELS_DIR / "lite_reward.pt"
TRAIN_HINT = ("train one with `lrm-ros train-lite` (python -m lrm_ros.learn.train_lite "
              "--examples EXAMPLES.npz --out CHECKPOINT.pt)")


class LiteCheckpointError(ValueError):
    """The checkpoint file is unreadable, not a lite reward checkpoint, or does not match."""


class LiteCheckpointMissing(FileNotFoundError):
    """No checkpoint file at the configured path."""


# ---------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LiteModelConfig:
    image_dim: int = IMAGE_FEATURE_DIM   # frozen image features in
    text_dim: int = TEXT_FEATURE_DIM     # frozen text embedding in
    image_proj: int = 128                # shared image projection
    text_proj: int = 64                  # shared text projection
    hidden: int = 256                    # width of each head's MLP (2 hidden layers)
    dropout: float = 0.1
    completion_first: bool = False       # the completion head also sees the episode's first frame
    absolute: bool = True                # heads see the frames' embeddings, not only differences

    def __post_init__(self):
        for f in ("image_dim", "text_dim", "image_proj", "text_proj", "hidden"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"LiteModelConfig.{f} must be >= 1, got {getattr(self, f)}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"LiteModelConfig.dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LiteModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}")
        return cls(**d)


def _mlp(n_in: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, 1))


class LiteRewardModel(nn.Module):
    """Small heads on frozen features. All methods take raw encoder features: image
    (N, image_dim), text (N, text_dim); they return (N,) tensors.

    Image features are standardised with `image_mean` / `image_std` (buffers, set from the
    training features by `set_feature_stats`, saved in the checkpoint), projected by a shared
    Linear+LayerNorm+GELU to `image_proj`; the text embedding likewise to `text_proj`."""

    def __init__(self, config: Optional[LiteModelConfig] = None):
        super().__init__()
        cfg = self.config = config or LiteModelConfig()
        p, t, h = cfg.image_proj, cfg.text_proj, cfg.hidden
        self.register_buffer("image_mean", torch.zeros(cfg.image_dim))
        self.register_buffer("image_std", torch.ones(cfg.image_dim))
        self.image_proj = nn.Sequential(nn.Linear(cfg.image_dim, p), nn.LayerNorm(p), nn.GELU())
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, t), nn.LayerNorm(t), nn.GELU())
        # with `absolute` false the heads see only differences of embeddings (cur - first,
        # a - b), never what a frame shows by itself: cues that do not depend on the scene
        wf = 3 * p + 1 if cfg.absolute else p + 1
        # progress: [cur, first, cur - first, has_first] + text
        self.progress_head = _mlp(wf + t, h, cfg.dropout)
        # completion: cur + text, or [cur, first, cur - first, has_first] + text
        self.completion_head = _mlp((wf if cfg.completion_first else p) + t, h, cfg.dropout)
        # contrastive pair scorer g(a, b, text): [a, b, a - b] + text
        self.pair_head = _mlp((3 * p if cfg.absolute else p) + t, h, cfg.dropout)

    def set_feature_stats(self, mean, std, eps: float = 1e-4) -> None:
        mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(np.asarray(std), dtype=torch.float32).reshape(-1)
        if mean.numel() != self.config.image_dim or std.numel() != self.config.image_dim:
            raise ValueError(f"feature stats must have {self.config.image_dim} entries")
        self.image_mean.copy_(mean)
        self.image_std.copy_(std.clamp(min=eps))

    # -- shared embeddings ------------------------------------------------------------
    def embed_image(self, feats: torch.Tensor) -> torch.Tensor:
        return self.image_proj((feats - self.image_mean) / self.image_std)

    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        return self.text_proj(text)

    # -- heads --------------------------------------------------------------------------
    def progress_logit(self, cur: torch.Tensor, text: torch.Tensor,
                       first: Optional[torch.Tensor] = None,
                       has_first: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`first` may be None (no first frame for any row) or given with a (N,) 0/1 mask
        `has_first` (rows without one: their first-frame inputs are zeroed)."""
        x = torch.cat([self._with_first(cur, first, has_first), self.embed_text(text)], dim=-1)
        return self.progress_head(x).squeeze(-1)

    def _with_first(self, cur, first, has_first) -> torch.Tensor:
        """[cur, first, cur - first, has_first] embeddings; rows without a first frame (or
        first=None: none at all) get zeros for the first-frame parts."""
        c = self.embed_image(cur)
        if first is None:
            f = torch.zeros_like(c)
            m = torch.zeros(c.shape[0], 1, dtype=c.dtype, device=c.device)
        else:
            m = (torch.ones(c.shape[0], 1, dtype=c.dtype, device=c.device) if has_first is None
                 else has_first.to(c.dtype).reshape(-1, 1))
            f = self.embed_image(first) * m
        if not self.config.absolute:
            return torch.cat([(c - f) * m, m], dim=-1)
        return torch.cat([c, f, (c - f) * m, m], dim=-1)

    def progress(self, cur, text, first=None, has_first=None) -> torch.Tensor:
        return torch.sigmoid(self.progress_logit(cur, text, first, has_first))

    def completion_logit(self, cur: torch.Tensor, text: torch.Tensor,
                         first: Optional[torch.Tensor] = None,
                         has_first: Optional[torch.Tensor] = None) -> torch.Tensor:
        """With `config.completion_first` the head compares with the first frame (as
        progress_logit; `first` None = none); otherwise `first` is ignored."""
        img = (self._with_first(cur, first, has_first) if self.config.completion_first
               else self.embed_image(cur))
        x = torch.cat([img, self.embed_text(text)], dim=-1)
        return self.completion_head(x).squeeze(-1)

    def _pair(self, a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = [a, b, a - b, t] if self.config.absolute else [a - b, t]
        return self.pair_head(torch.cat(x, dim=-1)).squeeze(-1)

    def contrastive_logit(self, prev: torch.Tensor, cur: torch.Tensor,
                          text: torch.Tensor) -> torch.Tensor:
        """Logit that `cur` is closer to done than `prev`; antisymmetric in (prev, cur)."""
        a, b, t = self.embed_image(cur), self.embed_image(prev), self.embed_text(text)
        return self._pair(a, b, t) - self._pair(b, a, t)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------
def save_checkpoint(model: LiteRewardModel, path, meta: Optional[dict] = None) -> Path:
    """Write `model` + metadata to one `.pt` file atomically (lrm_ros.common.atomic).
    `meta` must hold only plain Python values (str, int, float, bool, None, lists, dicts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "version": CHECKPOINT_VERSION,
        "image_encoder": IMAGE_ENCODER_ID,
        "text_encoder": TEXT_ENCODER_ID,
        "image_dim": model.config.image_dim,
        "text_dim": model.config.text_dim,
        "num_parameters": model.num_parameters(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    info.update(meta or {})
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": info,
    }
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def resolve_checkpoint(model_path: str = "") -> Path:
    """`model_path` ('' = the shipped DEFAULT_CHECKPOINT) -> an existing file, or a clear error."""
    path = Path(os.path.expanduser(model_path)) if model_path else DEFAULT_CHECKPOINT
    if path.is_dir():
        path = path / DEFAULT_CHECKPOINT.name
    if not path.is_file():
        if model_path:
            raise LiteCheckpointMissing(
                f"lite reward checkpoint {path} does not exist: set the reward node's "
                f"`model_path` parameter to a lite checkpoint file (.pt), or {TRAIN_HINT}")
        raise LiteCheckpointMissing(
            f"no lite reward checkpoint is shipped at {path} yet: set the reward node's "
            f"`model_path` parameter to a lite checkpoint file (.pt), or {TRAIN_HINT} and "
            f"save it as {DEFAULT_CHECKPOINT}")
    return path


def load_checkpoint(path, device: str = "cpu") -> Tuple[LiteRewardModel, dict]:
    """(model in eval mode, metadata) from a checkpoint file; LiteCheckpointError when the
    file is corrupt, not a lite reward checkpoint, or does not match the model/encoders."""
    path = Path(path)
    if not path.is_file():
        raise LiteCheckpointMissing(f"lite reward checkpoint {path} does not exist; {TRAIN_HINT}")
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LiteCheckpointError(
            f"{path} is not a readable lite reward checkpoint (corrupt or truncated file?): "
            f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise LiteCheckpointError(f"{path} is not a lite reward checkpoint (no "
                                  f"format={CHECKPOINT_FORMAT!r} entry)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise LiteCheckpointError(f"{path}: checkpoint version {payload.get('version')!r}, this "
                                  f"code reads version {CHECKPOINT_VERSION}; retrain ({TRAIN_HINT})")
    meta = payload.get("meta") or {}
    for key, want in (("image_encoder", IMAGE_ENCODER_ID), ("text_encoder", TEXT_ENCODER_ID)):
        if meta.get(key, want) != want:
            raise LiteCheckpointError(f"{path} was trained on {key} {meta.get(key)!r}, this code "
                                      f"computes {want!r}; retrain ({TRAIN_HINT})")
    try:
        config = LiteModelConfig.from_dict(dict(payload.get("config") or {}))
    except (TypeError, ValueError) as exc:
        raise LiteCheckpointError(f"{path}: bad model config: {exc}") from exc
    if (config.image_dim, config.text_dim) != (IMAGE_FEATURE_DIM, TEXT_FEATURE_DIM):
        raise LiteCheckpointError(
            f"{path}: feature dims {(config.image_dim, config.text_dim)} do not match the "
            f"encoders' {(IMAGE_FEATURE_DIM, TEXT_FEATURE_DIM)}")
    model = LiteRewardModel(config)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise LiteCheckpointError(f"{path}: no state_dict")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad = [f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
           if k in state and (not torch.is_tensor(state[k]) or state[k].shape != v.shape)]
    if missing or unexpected or bad:
        raise LiteCheckpointError(
            f"{path} does not match LiteRewardModel({config}): missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shapes {bad[:5]}")
    model.load_state_dict(state, strict=True)
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise LiteCheckpointError(f"{path}: weights contain NaN or inf")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device), dict(meta)


# ---------------------------------------------------------------------------------------
# the backend
# ---------------------------------------------------------------------------------------
@dataclass
class LiteConfig:
    """Node parameters of the `lite` backend."""
    model_path: str = ""              # checkpoint file ('' = the shipped DEFAULT_CHECKPOINT)
    signal: str = "progress"          # progress | completion | contrastive | tri
    use_first_frame: bool = True      # progress sees the episode's first frame too
    max_batch: int = 32               # queries per model call
    contrastive_margin: float = 0.05  # |P(closer) - 0.5| below this -> contrastive 0
    frame_cache_size: int = 256       # image features kept across batches (by frame content)
    device: str = "cpu"

    def __post_init__(self):
        if not self.signal:
            self.signal = "progress"
        if self.signal not in LITE_SIGNALS:
            raise ValueError(f"lite: signal must be one of {LITE_SIGNALS}, got {self.signal!r}")
        if int(self.max_batch) < 1:
            raise ValueError(f"lite: max_batch must be >= 1, got {self.max_batch}")
        if not 0.0 <= float(self.contrastive_margin) < 0.5:
            raise ValueError(f"lite: contrastive_margin must be in [0, 0.5), got "
                             f"{self.contrastive_margin}")
        if int(self.frame_cache_size) < 0:
            raise ValueError(f"lite: frame_cache_size must be >= 0, got {self.frame_cache_size}")
        self.max_batch = int(self.max_batch)
        self.frame_cache_size = int(self.frame_cache_size)
        self.model_path = str(self.model_path or "")

    @property
    def signals(self) -> Tuple[str, ...]:
        """Heads to run. Completion always runs (a few kFLOPs on the shared image features):
        the learner and the operator read it to decide which episodes succeeded."""
        if self.signal == "tri":
            return ("progress", "completion", "contrastive")
        return tuple(dict.fromkeys((self.signal, "completion")))


def frame_content_key(frame: np.ndarray) -> bytes:
    """Content key of a frame (hash of the pixels + shape/dtype)."""
    a = np.ascontiguousarray(frame)
    h = hashlib.blake2b(a.data, digest_size=16)
    h.update(repr((a.shape, a.dtype.str)).encode())
    return h.digest()


@dataclass
class LiteInputs:
    """The input builder's output for one chunk of queries: row indices into `image_feats`
    per query (-1 = absent) and the text embeddings."""
    image_feats: np.ndarray        # (U, 1280) distinct frames of the chunk
    cur: np.ndarray                # (Q,) int
    prev: np.ndarray               # (Q,) int, -1 = none / not needed
    first: np.ndarray              # (Q,) int, -1 = none / not needed
    text: np.ndarray               # (Q, 384)
    encoded: int = 0               # frames run through the image encoder for this chunk


class LiteRewardBackend(RewardBackend):
    name = "lite"

    def __init__(self, config: Optional[LiteConfig] = None, model: Optional[LiteRewardModel] = None,
                 image_enc=None, text_enc=None, **kwargs):
        self.config = config if config is not None else LiteConfig(**kwargs)
        cfg = self.config
        self.needs = signal_needs(cfg.signals, cfg.use_first_frame)
        self.max_batch = cfg.max_batch
        if model is None:
            self.checkpoint = resolve_checkpoint(cfg.model_path)
            model, self.meta = load_checkpoint(self.checkpoint, device=cfg.device)
        else:
            self.checkpoint = Path(cfg.model_path) if cfg.model_path else None
            self.meta = {}
            model.eval()
        self.model = model
        if getattr(model.config, "completion_first", False) and cfg.use_first_frame:
            self.needs = self.needs | {"first_frame"}
        if image_enc is None or text_enc is None:
            from lrm_ros.vision.features import image_encoder, text_encoder
            image_enc = image_enc or image_encoder()
            text_enc = text_enc or text_encoder()
        self.image_enc, self.text_enc = image_enc, text_enc
        self._feat_cache: "OrderedDict[bytes, np.ndarray]" = OrderedDict()
        self.frames_encoded = 0          # statistics: image-encoder work
        self.frames_from_cache = 0

    @property
    def model_id(self) -> str:
        return f"lite:{self.checkpoint.name if self.checkpoint else 'in-memory'}"

    # -- input builder -------------------------------------------------------------------
    def build_inputs(self, queries: Sequence[RewardQuery]) -> LiteInputs:
        cfg = self.config
        want_prev = "contrastive" in cfg.signals
        want_first = "first_frame" in self.needs
        by_id: Dict[int, int] = {}        # id(frame) -> row (same object in one chunk)
        by_key: Dict[bytes, int] = {}     # content -> row
        rows: List[Optional[np.ndarray]] = []
        todo: List[Tuple[int, bytes, np.ndarray]] = []
        cached = 0

        def row_of(frame: Optional[np.ndarray]) -> int:
            nonlocal cached
            if frame is None:
                return -1
            r = by_id.get(id(frame))
            if r is not None:
                return r
            key = frame_content_key(frame)
            r = by_key.get(key)
            if r is None:
                r = len(rows)
                hit = self._feat_cache.get(key)
                if hit is not None:
                    self._feat_cache.move_to_end(key)
                    cached += 1
                    rows.append(hit)
                else:
                    rows.append(None)
                    todo.append((r, key, frame))
                by_key[key] = r
            by_id[id(frame)] = r
            return r

        cur = np.array([row_of(q.frame) for q in queries], dtype=np.int64)
        prev = np.array([row_of(q.previous_frame) if want_prev else -1 for q in queries], np.int64)
        first = np.array([row_of(q.first_frame) if want_first else -1 for q in queries], np.int64)
        if todo:
            feats = self.image_enc.encode([f for _, _, f in todo])
            for (r, key, _), feat in zip(todo, feats):
                rows[r] = feat
                if cfg.frame_cache_size:
                    self._feat_cache[key] = feat
            while len(self._feat_cache) > cfg.frame_cache_size:
                self._feat_cache.popitem(last=False)
        self.frames_encoded += len(todo)
        self.frames_from_cache += cached
        image_feats = (np.stack(rows).astype(np.float32, copy=False) if rows
                       else np.empty((0, IMAGE_FEATURE_DIM), np.float32))
        text = self.text_enc.encode_many([q.instruction for q in queries])
        return LiteInputs(image_feats, cur, prev, first, np.asarray(text, np.float32),
                          encoded=len(todo))

    # -- model call ----------------------------------------------------------------------
    def run_model(self, inp: LiteInputs) -> Dict[str, np.ndarray]:
        """One batched pass of the heads the signal needs -> per-query numpy arrays."""
        cfg, m = self.config, self.model
        dev = next(m.parameters()).device
        feats = torch.from_numpy(inp.image_feats).to(dev)
        text = torch.from_numpy(inp.text).to(dev)
        cur = feats[torch.from_numpy(inp.cur).to(dev)]
        has_first = inp.first >= 0
        first = mask = None
        if has_first.any():
            first = feats[torch.from_numpy(np.where(has_first, inp.first, 0)).to(dev)]
            mask = torch.from_numpy(has_first).to(dev)
        out: Dict[str, np.ndarray] = {}
        with torch.inference_mode():
            if "progress" in cfg.signals:
                out["progress"] = m.progress(cur, text, first, mask).cpu().numpy()
            if "completion" in cfg.signals:
                out["completion"] = torch.sigmoid(m.completion_logit(cur, text, first, mask)).cpu().numpy()
            if "contrastive" in cfg.signals:
                has_prev = inp.prev >= 0
                prob = np.full(len(inp.cur), NAN, dtype=np.float32)
                if has_prev.any():
                    sel = np.flatnonzero(has_prev)
                    idx = torch.from_numpy(sel).to(dev)
                    prev = feats[torch.from_numpy(inp.prev[sel]).to(dev)]
                    logit = m.contrastive_logit(prev, cur[idx], text[idx])
                    prob[sel] = torch.sigmoid(logit).cpu().numpy()
                out["contrastive_prob"] = prob
        return out

    # -- parser --------------------------------------------------------------------------
    def to_result(self, outputs: Dict[str, np.ndarray], i: int) -> RewardResult:
        cfg = self.config
        prog = float(outputs["progress"][i]) if "progress" in outputs else NAN
        comp = float(outputs["completion"][i]) if "completion" in outputs else NAN
        contr = NAN
        raw: Dict[str, object] = {}
        if "contrastive_prob" in outputs:
            p = float(outputs["contrastive_prob"][i])
            if math.isnan(p):
                contr = 0.0
                raw["notes"] = {"contrastive": "no previous frame: 0"}
            else:
                raw["contrastive_prob"] = p
                m = cfg.contrastive_margin
                contr = 1.0 if p > 0.5 + m else (-1.0 if p < 0.5 - m else 0.0)
        if not math.isnan(comp):
            raw["completion_prob"] = comp
        if cfg.signal == "tri":
            value = tri_value(prog, comp, contr)
        else:
            value = {"progress": prog, "completion": comp, "contrastive": contr}[cfg.signal]
        return RewardResult(value=value, progress=prog, completion=comp, contrastive=contr,
                            valid=True, raw=raw)

    # -- the interface -------------------------------------------------------------------
    def score_batch(self, queries: Sequence[RewardQuery]) -> List[RewardResult]:
        results: List[RewardResult] = []
        for start in range(0, len(queries), self.max_batch):
            chunk = list(queries[start:start + self.max_batch])
            outputs = self.run_model(self.build_inputs(chunk))
            results.extend(self.to_result(outputs, i) for i in range(len(chunk)))
        return results

    def close(self) -> None:
        self._feat_cache.clear()
        self.model = None


def make(**config) -> LiteRewardBackend:
    model = config.pop("model", None)
    image_enc = config.pop("image_encoder", None)
    text_enc = config.pop("text_encoder", None)
    return LiteRewardBackend(LiteConfig(**config), model=model, image_enc=image_enc,
                             text_enc=text_enc)
