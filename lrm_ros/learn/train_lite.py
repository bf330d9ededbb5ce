"""Train the `lite` reward model's heads (lrm_ros.rewards.lite.LiteRewardModel) on frozen
features, from labelled examples (lrm_ros.data.lite_data.LiteExamples).

1. Image features of the frame table are computed ONCE with the frozen EfficientNet-Lite0
   (batched, tqdm bar) and cached on disk as `<cache_dir>/lite_feats_<hash>.npz`, the hash
   covering the frame pixels and the encoder id, so re-training on the same examples skips
   the encoder. Instruction embeddings (MiniLM) are computed once per distinct string.
2. The heads train with Adam: every step draws one mini-batch of each example kind and sums
   the losses: progress MSE on the sigmoid output (weighted), completion and contrastive
   BCE on the logits (weighted). Progress examples drop their first frame with probability
   `first_frame_dropout`, so the model also serves `use_first_frame:=false` and queries
   without a first frame.
3. Validation (held-out tasks `val_tasks`, or a random `val_fraction` of the examples):
   progress MAE, completion / contrastive accuracy and losses per epoch; with a validation
   set the checkpoint keeps the epoch of lowest validation loss.
4. The checkpoint is written atomically (lrm_ros.common.atomic) with metadata: training
   tasks, example counts, metrics, config, date.

CLI:  python -m lrm_ros.learn.train_lite --examples X.npz --out ckpt.pt --epochs 30

Why one file of about 430 lines: the feature cache, each head's loss, the training loop
and the evaluation share TrainConfig and the LiteExamples layout; the CLI is the last 60 lines.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from lrm_ros.common.atomic import atomic_write
from lrm_ros.data.lite_data import KINDS, LiteExamples


def default_cache_dir() -> Path:
    base = os.environ.get("LRM_ROS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lrm_ros")
    return Path(base) / "lite_features"


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    first_frame_dropout: float = 0.25
    loss_weights: Dict[str, float] = field(default_factory=lambda: {
        "progress": 1.0, "completion": 1.0, "contrastive": 1.0})
    val_tasks: Tuple[str, ...] = ()       # held-out tasks (by name) for validation
    val_fraction: float = 0.0             # else: a random fraction of the examples
    keep_best: bool = True                # with validation: keep the lowest val-loss epoch
    # model size (LiteModelConfig)
    image_proj: int = 128
    text_proj: int = 64
    hidden: int = 256
    dropout: float = 0.1
    completion_first: bool = False        # LiteModelConfig.completion_first
    absolute: bool = True                 # LiteModelConfig.absolute
    # features
    cache_dir: Optional[str] = None       # None = default_cache_dir(); "" = no disk cache
    feature_batch: int = 0                # frames per encoder pass (0 = the encoder's default)
    show_progress: bool = True

    def __post_init__(self):
        if int(self.epochs) < 1 or int(self.batch_size) < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.first_frame_dropout <= 1.0:
            raise ValueError("first_frame_dropout must be in [0, 1]")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")
        unknown = set(self.loss_weights) - set(KINDS)
        if unknown:
            raise ValueError(f"loss_weights: unknown kinds {sorted(unknown)}")
        self.val_tasks = tuple(self.val_tasks)


# ---------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------
def frames_hash(frames: np.ndarray, encoder_id: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((frames.shape, frames.dtype.str, encoder_id)).encode())
    a = np.ascontiguousarray(frames)
    step = 256
    for s in range(0, len(a), step):
        h.update(a[s:s + step].data)
    return h.hexdigest()


def compute_features(examples: LiteExamples, encoder=None, cache_dir: Optional[str] = None,
                     batch_size: int = 0, show_progress: bool = True) -> np.ndarray:
    """(F, 1280) image features of the frame table: the precomputed `features` if present,
    else from the disk cache, else computed (and cached)."""
    if examples.features is not None:
        return np.asarray(examples.features, dtype=np.float32)
    from lrm_ros.vision.features import IMAGE_ENCODER_ID, IMAGE_FEATURE_DIM
    frames = examples.frames
    cache_path = None
    if cache_dir != "":
        cdir = Path(cache_dir) if cache_dir else default_cache_dir()
        cache_path = cdir / f"lite_feats_{frames_hash(frames, IMAGE_ENCODER_ID)}.npz"
        if cache_path.is_file():
            try:
                with np.load(cache_path, allow_pickle=False) as z:
                    feats = z["features"]
                if feats.shape == (len(frames), IMAGE_FEATURE_DIM):
                    return feats.astype(np.float32, copy=False)
            except Exception:  # unreadable cache entry: recompute and overwrite
                pass
    if encoder is None:
        from lrm_ros.vision.features import image_encoder
        encoder = image_encoder()
    from tqdm.auto import tqdm
    batch_size = int(batch_size) or int(getattr(encoder, "batch_size", 4) or 4)
    out = np.empty((len(frames), IMAGE_FEATURE_DIM), np.float32)
    with tqdm(total=len(frames), desc="image features", unit="frame",
              disable=not show_progress) as bar:
        for s in range(0, len(frames), batch_size):
            out[s:s + batch_size] = encoder.encode(frames[s:s + batch_size], batch_size=batch_size)
            bar.update(min(batch_size, len(frames) - s))
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache_path, lambda f: np.savez(f, features=out))
    return out


def text_features(instructions: Sequence[str], encoder=None) -> np.ndarray:
    from lrm_ros.vision.features import TEXT_FEATURE_DIM
    if not instructions:
        return np.zeros((0, TEXT_FEATURE_DIM), np.float32)
    if encoder is None:
        from lrm_ros.vision.features import text_encoder
        encoder = text_encoder()
    return np.asarray(encoder.encode_many(list(instructions)), dtype=np.float32)


# ---------------------------------------------------------------------------------------
# losses / evaluation
# ---------------------------------------------------------------------------------------
def _wmean(loss, w):
    return (loss * w).sum() / w.sum().clamp(min=1e-8)


def _first_frames(first: np.ndarray, dropout: float, rng: Optional[np.random.Generator]):
    """(frame row per example, 0 where none; has-first mask): examples without a first frame
    (-1), and with probability `dropout` examples that have one, are shown none."""
    has = first >= 0
    if dropout > 0 and rng is not None:
        has &= rng.random(first.size) >= dropout
    return np.where(has, first, 0), has


def _batch_losses(model, feats, text, ex: LiteExamples, idx: Dict[str, np.ndarray],
                  first_dropout: float = 0.0, rng: Optional[np.random.Generator] = None):
    """{kind: (weighted loss, predictions, targets)} for the example indices `idx`."""
    import torch
    import torch.nn.functional as F
    out = {}
    t = lambda a: torch.from_numpy(np.asarray(a))  # noqa: E731
    i = idx.get("progress")
    if i is not None and i.size:
        first, has = _first_frames(ex.progress_first[i], first_dropout, rng)
        pred = model.progress(feats[t(ex.progress_frame[i])], text[t(ex.progress_instr[i])],
                              feats[t(first)], t(has))
        target = t(ex.progress_target[i])
        loss = _wmean((pred - target) ** 2, t(ex.progress_weight[i]))
        out["progress"] = (loss, pred, target)
    i = idx.get("completion")
    if i is not None and i.size:
        first, has = _first_frames(ex.completion_first[i], first_dropout, rng)
        logit = model.completion_logit(feats[t(ex.completion_frame[i])], text[t(ex.completion_instr[i])],
                                       feats[t(first)], t(has))
        target = t(ex.completion_label[i])
        loss = _wmean(F.binary_cross_entropy_with_logits(logit, target, reduction="none"),
                      t(ex.completion_weight[i]))
        out["completion"] = (loss, logit, target)
    i = idx.get("contrastive")
    if i is not None and i.size:
        logit = model.contrastive_logit(feats[t(ex.contrastive_prev[i])], feats[t(ex.contrastive_cur[i])],
                                        text[t(ex.contrastive_instr[i])])
        target = t(ex.contrastive_label[i])
        loss = _wmean(F.binary_cross_entropy_with_logits(logit, target, reduction="none"),
                      t(ex.contrastive_weight[i]))
        out["contrastive"] = (loss, logit, target)
    return out


def evaluate(model, feats, text, ex: LiteExamples, loss_weights: Optional[Dict[str, float]] = None,
             batch_size: int = 4096) -> Dict[str, float]:
    """Metrics on a whole example set (eval mode, first frames used where given)."""
    import torch
    was_training = model.training
    model.eval()
    lw = loss_weights or {}
    sums: Dict[str, list] = {k: [] for k in KINDS}
    with torch.no_grad():
        for kind in KINDS:
            n = ex.count(kind)
            for s in range(0, n, batch_size):
                part = _batch_losses(model, feats, text, ex, {kind: np.arange(s, min(n, s + batch_size))})
                _, pred, target = part[kind]
                sums[kind].append((pred, target))
    model.train(was_training)
    m: Dict[str, float] = {}
    total = 0.0
    import torch.nn.functional as F
    for kind, chunks in sums.items():
        if not chunks:
            continue
        pred = torch.cat([c[0] for c in chunks])
        target = torch.cat([c[1] for c in chunks])
        w = torch.from_numpy(getattr(ex, f"{kind}_weight"))
        if kind == "progress":
            loss = float(_wmean((pred - target) ** 2, w))
            m["progress_mae"] = float((pred - target).abs().mean())
            if pred.numel() > 1 and float(pred.std()) > 0 and float(target.std()) > 0:
                m["progress_corr"] = float(torch.corrcoef(torch.stack([pred, target]))[0, 1])
        else:
            loss = float(_wmean(F.binary_cross_entropy_with_logits(pred, target, reduction="none"), w))
            m[f"{kind}_acc"] = float(((pred > 0).float() == (target > 0.5).float()).float().mean())
        m[f"{kind}_loss"] = loss
        total += lw.get(kind, 1.0) * loss
    m["loss"] = total
    return m


# ---------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------
def _split(ex: LiteExamples, cfg: TrainConfig):
    if cfg.val_tasks:
        unknown = set(cfg.val_tasks) - set(ex.tasks)
        if unknown:
            raise ValueError(f"val_tasks {sorted(unknown)} not among the example tasks {ex.tasks}")
        return ex.select_tasks(cfg.val_tasks, exclude=True), ex.select_tasks(cfg.val_tasks)
    if cfg.val_fraction > 0:
        return ex.split_random(cfg.val_fraction, seed=cfg.seed)
    return ex, None


def _tasks_used(ex: LiteExamples) -> List[str]:
    used = set()
    for k in KINDS:
        used.update(int(i) for i in np.unique(getattr(ex, f"{k}_task")))
    return [ex.tasks[i] for i in sorted(used)]


def train(examples: LiteExamples, config: Optional[TrainConfig] = None, out: Optional[str] = None,
          image_enc=None, text_enc=None, model=None, extra_meta: Optional[dict] = None):
    """Train the heads -> (model, history). `history` is a list of per-epoch dicts (train
    losses, validation metrics, seconds). Writes the checkpoint to `out` when given, its
    metadata updated with `extra_meta` (plain values)."""
    import torch

    from lrm_ros.rewards.lite import LiteModelConfig, LiteRewardModel, save_checkpoint
    from tqdm.auto import tqdm

    cfg = config or TrainConfig()
    if len(examples) == 0:
        raise ValueError("no training examples")
    t_start = time.time()
    feats_np = compute_features(examples, image_enc, cfg.cache_dir, cfg.feature_batch,
                                cfg.show_progress)
    text_np = text_features(examples.instructions, text_enc)
    feats, text = torch.from_numpy(feats_np), torch.from_numpy(text_np)
    t_feat = time.time() - t_start

    train_ex, val_ex = _split(examples, cfg)
    if len(train_ex) == 0:
        raise ValueError("the training split is empty")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if model is None:
        model = LiteRewardModel(LiteModelConfig(image_dim=feats.shape[1], text_dim=text.shape[1],
                                                image_proj=cfg.image_proj, text_proj=cfg.text_proj,
                                                hidden=cfg.hidden, dropout=cfg.dropout,
                                                completion_first=cfg.completion_first,
                                                absolute=cfg.absolute))
        model.set_feature_stats(feats_np.mean(0), feats_np.std(0))
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    counts = train_ex.counts()
    bs = int(cfg.batch_size)
    steps = max(1, math.ceil(max(counts.values()) / bs))
    history: List[dict] = []
    best = (math.inf, None, -1)
    model.train()
    bar = tqdm(range(cfg.epochs), desc="train lite", unit="epoch", disable=not cfg.show_progress)
    for epoch in bar:
        t0 = time.time()
        order = {k: np.concatenate([rng.permutation(n) for _ in range(math.ceil(steps * bs / n))])
                 for k, n in counts.items() if n}
        sums = {k: 0.0 for k in counts}
        total = 0.0
        for s in range(steps):
            idx = {}
            for k, n in counts.items():
                if n:
                    idx[k] = order[k][s * bs:(s + 1) * bs] if n >= bs else order[k][s * n:(s + 1) * n]
            parts = _batch_losses(model, feats, text, train_ex, idx, cfg.first_frame_dropout, rng)
            loss = sum(cfg.loss_weights.get(k, 1.0) * v[0] for k, v in parts.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            for k, v in parts.items():
                sums[k] += float(v[0].detach())
        rec = {"epoch": epoch + 1, "train_loss": total / steps}
        rec.update({f"train_{k}_loss": v / steps for k, v in sums.items() if counts[k]})
        if val_ex is not None and len(val_ex):
            vm = evaluate(model, feats, text, val_ex, cfg.loss_weights)
            rec.update({f"val_{k}": v for k, v in vm.items()})
            if cfg.keep_best and vm["loss"] < best[0]:
                best = (vm["loss"], copy.deepcopy(model.state_dict()), epoch + 1)
        rec["seconds"] = time.time() - t0
        history.append(rec)
        bar.set_postfix(loss=f"{rec['train_loss']:.4f}",
                        **({"val": f"{rec['val_loss']:.4f}"} if "val_loss" in rec else {}))
    bar.close()
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if out:
        metrics = {"train": evaluate(model, feats, text, train_ex, cfg.loss_weights)}
        if val_ex is not None and len(val_ex):
            metrics["val"] = evaluate(model, feats, text, val_ex, cfg.loss_weights)
        meta = {
            "training_tasks": _tasks_used(train_ex),
            "validation_tasks": _tasks_used(val_ex) if val_ex is not None and len(val_ex) else [],
            "instructions": list(examples.instructions)[:200],
            "examples": {"train": train_ex.counts(),
                         "val": val_ex.counts() if val_ex is not None else {}},
            "frames": examples.num_frames,
            "epochs": cfg.epochs,
            "best_epoch": best[2] if best[1] is not None else cfg.epochs,
            "metrics": metrics,
            "train_config": _plain(asdict(cfg)),
            "seconds": {"features": round(t_feat, 2), "total": round(time.time() - t_start, 2)},
        }
        meta.update(_plain(extra_meta or {}))
        save_checkpoint(model, out, meta)
    return model, history


def _plain(obj):
    """JSON-like plain Python values only (checkpoints load with weights_only=True)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m lrm_ros.learn.train_lite",
        description="Train the lite reward model's heads on frozen EfficientNet-Lite0 + MiniLM "
                    "features from labelled examples (.npz files of LiteExamples).")
    p.add_argument("--examples", nargs="+", required=True, help="LiteExamples .npz file(s)")
    p.add_argument("--out", required=True, help="checkpoint file to write (.pt)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--first-frame-dropout", type=float, default=d.first_frame_dropout)
    p.add_argument("--val-tasks", default="", help="comma-separated task names held out for validation")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="random fraction of examples held out (when no --val-tasks)")
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--image-proj", type=int, default=d.image_proj)
    p.add_argument("--text-proj", type=int, default=d.text_proj)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--cache-dir", default=None,
                   help=f"feature cache directory (default {default_cache_dir()}; '' = none)")
    p.add_argument("--feature-batch", type=int, default=d.feature_batch,
                   help="frames per image-encoder pass (0 = encoder default: 4 on a CPU)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parts = [LiteExamples.load(p) for p in args.examples]
    examples = parts[0] if len(parts) == 1 else LiteExamples.concatenate(parts)
    cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        seed=args.seed, first_frame_dropout=args.first_frame_dropout,
        val_tasks=tuple(t for t in args.val_tasks.split(",") if t),
        val_fraction=args.val_fraction, hidden=args.hidden, image_proj=args.image_proj,
        text_proj=args.text_proj, dropout=args.dropout, cache_dir=args.cache_dir,
        feature_batch=args.feature_batch, show_progress=not args.quiet)
    print(f"lite: {examples.num_frames} frames, examples {examples.counts()}, "
          f"tasks {examples.tasks}", file=sys.stderr)
    _, history = train(examples, cfg, out=args.out)
    from lrm_ros.rewards.lite import load_checkpoint
    _, meta = load_checkpoint(args.out)
    size = Path(args.out).stat().st_size
    print(json.dumps({"checkpoint": str(args.out), "bytes": size, "best_epoch": meta.get("best_epoch"),
                      "metrics": meta.get("metrics"), "last_epoch": history[-1]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
