"""Loading Qwen-VL models (Qwen3-VL, Qwen2.5-VL) from local files, and a tiny random one.

* `load_qwen_vl(model_path, adapter_path)` -> (model, processor). Local only: a directory
  with config.json + weights, or a hub id that is already in the local Hugging Face cache
  (`local_files_only=True`; nothing is ever downloaded). An optional peft LoRA adapter is
  applied from a local directory.
* `QwenVLProcessor`: our own small processor. The stock Qwen-VL processors insist on a video
  processor, which needs torchvision (not installable here), so this one is built from the
  PIL image processor (`Qwen2VLImageProcessorPil`) and the tokenizer. It renders chat
  messages, expands each image placeholder to its number of visual tokens, and returns
  `input_ids`, `attention_mask`, `mm_token_type_ids`, `pixel_values`, `image_grid_thw`,
  left- or right-padded. The image resolution is configurable (min/max pixels) so that a
  224x224 frame gives few visual tokens.
* The tiny random checkpoint for tests, benchmarks and machines without real weights is
  in `lrm_ros.rewards.qwen_tiny`.

Nothing here imports torch or transformers at module import time.

Why one file of about 540 lines: QwenVLProcessor (about 210 lines) stands in for the stock
processor, which needs torchvision; loading, adapters and the processor must agree on the
checkpoint's pixel limits and chat template.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


#: A Qwen3-VL style chat template (ChatML; images as <|vision_start|><|image_pad|><|vision_end|>).
#: Written for lrm_ros; used for the tiny checkpoint and when a checkpoint ships no template.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: model_type -> transformers class name
_MODEL_CLASSES = {
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
}

#: default resolution of frames fed to the model: 224x224 -> 7x7 = 49 visual tokens with
#: Qwen3-VL's 16-px patches merged 2x2; smaller max_pixels -> fewer tokens
DEFAULT_MIN_PIXELS = 32 * 32
DEFAULT_MAX_PIXELS = 224 * 224


class ModelNotFoundError(FileNotFoundError):
    """A model or adapter could not be found locally (nothing is downloaded)."""


def _hint(param: str, what: str) -> str:
    if param.startswith("adapter"):
        return (f"Set the node parameter `{param}` to a local directory holding a peft LoRA "
                f"adapter (adapter_config.json + adapter_model.safetensors), or leave it empty "
                f"for the base model. Got: {what!r}.")
    return (f"Set the node parameter `model_path` to a local directory holding the model "
            f"(config.json + *.safetensors weights + tokenizer files), or to a hub id that is "
            f"already in the local Hugging Face cache, e.g. `Qwen/Qwen3-VL-8B-Instruct` "
            f"downloaded beforehand on a machine with internet with "
            f"`huggingface-cli download Qwen/Qwen3-VL-8B-Instruct` (and copied into "
            f"$HF_HOME/hub). Nothing is downloaded at run time. Got: {what!r}.")


def resolve_local(path_or_id: str, param: str = "model_path") -> Path:
    """A local directory for a model (or adapter): the path itself, or the snapshot of a hub
    id in the local Hugging Face cache. Raises ModelNotFoundError naming `param`."""
    if not path_or_id:
        raise ModelNotFoundError(f"lrm_ros: no model given. {_hint(param, path_or_id)}")
    p = Path(os.path.expanduser(path_or_id))
    marker = "adapter_config.json" if param.startswith("adapter") else "config.json"
    if p.is_dir():
        if (p / marker).is_file():
            return p
        raise ModelNotFoundError(
            f"lrm_ros: directory {p} has no {marker}. {_hint(param, path_or_id)}")
    if p.exists() or path_or_id.startswith((".", "/", "~")) or path_or_id.count("/") != 1:
        raise ModelNotFoundError(f"lrm_ros: {path_or_id!r} is not a model directory. "
                                 f"{_hint(param, path_or_id)}")
    try:  # a hub id: only the local cache
        from huggingface_hub import snapshot_download
        local = snapshot_download(path_or_id, local_files_only=True)
    except Exception as exc:  # LocalEntryNotFoundError and friends
        raise ModelNotFoundError(
            f"lrm_ros: {path_or_id!r} is not in the local Hugging Face cache "
            f"({type(exc).__name__}). {_hint(param, path_or_id)}") from None
    if not (Path(local) / marker).is_file():
        raise ModelNotFoundError(f"lrm_ros: cached {path_or_id!r} has no {marker}. "
                                 f"{_hint(param, path_or_id)}")
    return Path(local)


@dataclass
class Encoded:
    """A tokenized prompt: token ids and the modality of each (0 text, 1 image)."""
    ids: List[int]
    mm: List[int]


class QwenVLProcessor:
    """Chat rendering + tokenization + image preprocessing for Qwen-VL models, without the
    video processor (and so without torchvision)."""

    def __init__(self, tokenizer, image_processor, chat_template: Optional[str] = None,
                 video_pixels: Tuple[int, int] = (0, 0)):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        # video frames: resized by the video rule (below), then patched like images
        self.video_min_pixels, self.video_max_pixels = (
            int(video_pixels[0] or QWEN3VL_VIDEO_MIN_PIXELS),
            int(video_pixels[1] or QWEN3VL_VIDEO_MAX_PIXELS))
        self._frame_processor = None
        self._close_brace_ids = None
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None) or CHAT_TEMPLATE
        tid = tokenizer.convert_tokens_to_ids
        self.image_token = "<|image_pad|>"
        self.image_token_id = tid(self.image_token)
        self.video_token_id = tid("<|video_pad|>")
        self.vision_start_id = tid("<|vision_start|>")
        self.vision_end_id = tid("<|vision_end|>")
        self.merge_size = int(image_processor.merge_size)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tid("<|endoftext|>")

    # -- text ----------------------------------------------------------------------------
    def render(self, messages: List[dict], add_generation_prompt: bool = True) -> str:
        """Chat messages (content: str or a list of {"type": "image"} / {"type": "text",
        "text": ...}) -> the prompt text, one <|image_pad|> per image."""
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False,
            add_generation_prompt=add_generation_prompt)

    def encode_text(self, text: str, image_tokens: Sequence[int] = ()) -> Encoded:
        """Tokenize `text`, expanding its k-th <|image_pad|> to image_tokens[k] tokens."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        out_ids: List[int] = []
        mm: List[int] = []
        k = 0
        for t in ids:
            if t == self.image_token_id:
                if k >= len(image_tokens):
                    raise ValueError("more image placeholders in the prompt than images")
                out_ids.extend([t] * image_tokens[k])
                mm.extend([1] * image_tokens[k])
                k += 1
            else:
                out_ids.append(t)
                mm.append(0)
        if k != len(image_tokens):
            raise ValueError(f"prompt has {k} image placeholders but {len(image_tokens)} images")
        return Encoded(out_ids, mm)

    # -- images --------------------------------------------------------------------------
    def preprocess_images(self, images: Sequence[np.ndarray]):
        """RGB uint8 frames -> (pixel_values (N_patches, D), image_grid_thw (n, 3)) tensors."""
        import torch
        if not images:
            return None, None
        out = self.image_processor(images=[np.asarray(im) for im in images], return_tensors="np")
        return (torch.from_numpy(np.asarray(out["pixel_values"])),
                torch.from_numpy(np.asarray(out["image_grid_thw"])).long())

    @property
    def close_brace_ids(self):
        """Token ids whose text holds a '}' (a long tensor; computed once)."""
        if self._close_brace_ids is None:
            import torch
            self._close_brace_ids = torch.tensor(
                sorted(i for t, i in self.tokenizer.get_vocab().items() if "}" in t),
                dtype=torch.long)
        return self._close_brace_ids

    def tokens_per_image(self, grid_thw) -> List[int]:
        return [int(g.prod()) // (self.merge_size ** 2) for g in grid_thw]

    # -- videos (Qwen3-VL) -----------------------------------------------------------------
    # What Qwen3-VL's video processor does, without torchvision: the frame count is padded to
    # an even number by repeating the last frame (as qwen-vl-utils and the TOPReward code do
    # before the processor sees the frames); all frames are resized to one size chosen by the
    # video rule (`video_size`: multiples of 32 px, bounds on frames x height x width); two
    # consecutive frames make one temporal patch. Each pair becomes
    #     "<{t:.1f} seconds><|vision_start|>" + <|video_pad|> x (h/32 * w/32) + "<|vision_end|>"
    # with t the mean time of its two frames (frame i at i / fps), replacing the chat
    # template's <|vision_start|><|video_pad|><|vision_end|> (Qwen3VLProcessor in transformers
    # 4.57, which the published TOPReward and LRM code ran with).
    VIDEO_TRIPLE = "<|vision_start|><|video_pad|><|vision_end|>"

    @property
    def temporal_patch_size(self) -> int:
        return int(getattr(self.image_processor, "temporal_patch_size", 2) or 2)

    def video_size(self, n_frames: int, height: int, width: int) -> Tuple[int, int]:
        """(height, width) every frame of an n-frame video is resized to (transformers'
        Qwen3-VL video smart_resize: factor = patch x merge = 32)."""
        import math
        factor = int(self.image_processor.patch_size) * self.merge_size
        tf = self.temporal_patch_size
        if height < factor or width < factor:
            scale = max(factor / height, factor / width)
            height, width = int(height * scale), int(width * scale)
        h_bar = round(height / factor) * factor
        w_bar = round(width / factor) * factor
        t_bar = max(tf, round(n_frames / tf) * tf)
        if t_bar * h_bar * w_bar > self.video_max_pixels:
            beta = math.sqrt((n_frames * height * width) / self.video_max_pixels)
            h_bar = max(factor, math.floor(height / beta / factor) * factor)
            w_bar = max(factor, math.floor(width / beta / factor) * factor)
        elif t_bar * h_bar * w_bar < self.video_min_pixels:
            beta = math.sqrt(self.video_min_pixels / (n_frames * height * width))
            h_bar = math.ceil(height * beta / factor) * factor
            w_bar = math.ceil(width * beta / factor) * factor
        return int(h_bar), int(w_bar)

    def video_timestamps(self, n_frames: int, fps: float) -> List[float]:
        """Mean time of each temporal patch's frames (frame i at i / fps; an odd count repeats
        its last index)."""
        tf = self.temporal_patch_size
        idx = list(range(n_frames))
        idx += [n_frames - 1] * (-n_frames % tf)
        return [(idx[i] + idx[i + tf - 1]) / 2.0 / fps for i in range(0, len(idx), tf)]

    def video_text(self, timestamps: Sequence[float], tokens_per_pair: int) -> str:
        return "".join(f"<{t:.1f} seconds><|vision_start|>" + "<|video_pad|>" * tokens_per_pair
                       + "<|vision_end|>" for t in timestamps)

    def preprocess_pairs(self, pairs: Sequence[Tuple[np.ndarray, np.ndarray]],
                         size: Tuple[int, int]):
        """Temporal patches (two frames each) resized to `size` -> (pixel_values_videos,
        video_grid_thw with one (1, h/16, w/16) row per pair)."""
        import torch
        from PIL import Image
        if not pairs:
            return None, None
        if self._frame_processor is None:   # patches frames already at a valid size as they are
            ip = self.image_processor
            self._frame_processor = type(ip)(
                patch_size=ip.patch_size, temporal_patch_size=ip.temporal_patch_size,
                merge_size=ip.merge_size, image_mean=ip.image_mean, image_std=ip.image_std,
                min_pixels=1, max_pixels=1 << 40)
        h, w = size
        frames = []
        for a, b in pairs:
            for f in (a, b):
                f = np.asarray(f)
                if f.shape[:2] != (h, w):
                    f = np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC))
                frames.append(f)
        out = self._frame_processor(images=frames, return_tensors="np")
        pv = np.asarray(out["pixel_values"])
        grid = np.asarray(out["image_grid_thw"])
        ps = int(self.image_processor.patch_size)
        if not (grid[:, 1:] == grid[0, 1:]).all() or (int(grid[0, 1]) * ps, int(grid[0, 2]) * ps) != (h, w):
            raise RuntimeError(f"video frames of size {size} were not patched as they are "
                               f"(grids {grid[:, 1:].tolist()})")
        n = int(grid[0].prod())
        tf = self.temporal_patch_size
        C = 3
        p = pv.shape[1] // (C * tf)
        rows = pv.reshape(len(frames), n, C, tf, p)
        # each frame was patched as a still (its patch holds the frame tf times): take one
        # copy from each frame of the pair
        video = np.concatenate([rows[0::2, :, :, :1], rows[1::2, :, :, :1]], axis=3)
        video = video.reshape(len(pairs) * n, C * tf * p)
        thw = np.tile(grid[:1], (len(pairs), 1))
        return torch.from_numpy(np.ascontiguousarray(video)), torch.from_numpy(thw).long()

    # -- whole batches -------------------------------------------------------------------
    def __call__(self, texts: Sequence[str], images: Sequence[Sequence[np.ndarray]],
                 padding_side: str = "left") -> Dict[str, object]:
        """Rendered prompts (one <|image_pad|> per image) + their images -> padded model
        inputs. images[i] are the images of texts[i], in order."""
        flat = [im for ims in images for im in ims]
        pixel_values, grid = self.preprocess_images(flat)
        n_tok = self.tokens_per_image(grid) if grid is not None else []
        encs, k = [], 0
        for text, ims in zip(texts, images):
            encs.append(self.encode_text(text, n_tok[k:k + len(ims)]))
            k += len(ims)
        batch = self.pad(encs, padding_side)
        if pixel_values is not None:
            batch["pixel_values"] = pixel_values
            batch["image_grid_thw"] = grid
        return batch

    def pad(self, encs: Sequence[Encoded], padding_side: str = "left") -> Dict[str, object]:
        import torch
        n = max(len(e.ids) for e in encs)
        ids = torch.full((len(encs), n), self.pad_token_id, dtype=torch.long)
        att = torch.zeros((len(encs), n), dtype=torch.long)
        mm = torch.zeros((len(encs), n), dtype=torch.long)
        for i, e in enumerate(encs):
            L = len(e.ids)
            sl = slice(n - L, n) if padding_side == "left" else slice(0, L)
            ids[i, sl] = torch.tensor(e.ids, dtype=torch.long)
            att[i, sl] = 1
            mm[i, sl] = torch.tensor(e.mm, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": att, "mm_token_type_ids": mm}

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


#: Qwen3-VL's image processor defaults (its preprocessor_config.json: size.shortest_edge /
#: size.longest_edge), used when a checkpoint says nothing
QWEN3VL_MIN_PIXELS = 65536
QWEN3VL_MAX_PIXELS = 16777216
#: Qwen3-VL-8B-Instruct's video_preprocessor_config.json size bounds (frames x h x w)
QWEN3VL_VIDEO_MIN_PIXELS = 4096
QWEN3VL_VIDEO_MAX_PIXELS = 25165824


def checkpoint_pixels(cfg: dict) -> Tuple[int, int]:
    """(min_pixels, max_pixels) a processor config asks for: min_pixels/max_pixels keys
    (Qwen2-VL style) or size.shortest_edge/longest_edge (Qwen3-VL style)."""
    size = cfg.get("size") or {}
    lo = cfg.get("min_pixels") or size.get("shortest_edge") or size.get("min_pixels")
    hi = cfg.get("max_pixels") or size.get("longest_edge") or size.get("max_pixels")
    return int(lo or QWEN3VL_MIN_PIXELS), int(hi or QWEN3VL_MAX_PIXELS)


def _make_image_processor(model_dir: Path, min_pixels: Optional[int], max_pixels: Optional[int]):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    cfg = {}
    for name in ("preprocessor_config.json", "processor_config.json"):
        f = model_dir / name
        if f.is_file():
            data = json.loads(f.read_text())
            cfg = data.get("image_processor", data)
            break
    kwargs = {k: cfg[k] for k in ("patch_size", "temporal_patch_size", "merge_size",
                                  "image_mean", "image_std") if k in cfg}
    if "patch_size" not in kwargs:  # no config: Qwen3-VL's values
        kwargs.update(patch_size=16, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    # 0/None = the checkpoint's own bounds (what the stock processor would use), else
    # Qwen3-VL's defaults
    own_min, own_max = checkpoint_pixels(cfg)
    kwargs["min_pixels"] = int(min_pixels or own_min)
    kwargs["max_pixels"] = int(max_pixels or own_max)
    if kwargs["min_pixels"] > kwargs["max_pixels"]:
        raise ValueError(f"image min_pixels {kwargs['min_pixels']} > max_pixels {kwargs['max_pixels']}")
    return Qwen2VLImageProcessorPil(**kwargs)


def _read_chat_template(model_dir: Path) -> Optional[str]:
    for name in ("chat_template.jinja",):
        if (model_dir / name).is_file():
            return (model_dir / name).read_text()
    f = model_dir / "chat_template.json"
    if f.is_file():
        return json.loads(f.read_text()).get("chat_template")
    return None


def _video_pixels(model_dir: Path) -> Tuple[int, int]:
    f = model_dir / "video_preprocessor_config.json"
    if f.is_file():
        size = json.loads(f.read_text()).get("size") or {}
        return int(size.get("shortest_edge") or 0), int(size.get("longest_edge") or 0)
    return 0, 0


def load_processor(model_path: str, min_pixels: Optional[int] = None,
                   max_pixels: Optional[int] = None) -> QwenVLProcessor:
    from transformers import AutoTokenizer
    model_dir = resolve_local(model_path, "model_path")
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    return QwenVLProcessor(tok, _make_image_processor(model_dir, min_pixels, max_pixels),
                           chat_template=_read_chat_template(model_dir) or tok.chat_template,
                           video_pixels=_video_pixels(model_dir))


def load_qwen_vl(model_path: str, adapter_path: str = "", dtype="auto", device: str = "cpu",
                 min_pixels: Optional[int] = None, max_pixels: Optional[int] = None):
    """(model, processor) from a local directory or the local HF cache; optional LoRA adapter.

    dtype: "auto" (the checkpoint's own), or a torch dtype / its name ("bfloat16").
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = resolve_local(model_path, "model_path")
    adapter_dir = resolve_local(adapter_path, "adapter_path") if adapter_path else None
    import torch
    import transformers
    cfg = json.loads((model_dir / "config.json").read_text())
    model_type = cfg.get("model_type", "")
    if model_type not in _MODEL_CLASSES:
        raise ValueError(f"lrm_ros: {model_dir} holds a {model_type!r} model; supported: "
                         f"{sorted(_MODEL_CLASSES)} (check the node parameter `model_path`)")
    cls = getattr(transformers, _MODEL_CLASSES[model_type])
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    model = cls.from_pretrained(str(model_dir), dtype=dtype, local_files_only=True)
    if adapter_dir is not None:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, str(adapter_dir), local_files_only=True,
                                          config=_adapter_config(adapter_dir, model))
        verify_adapter(model, "default", adapter_dir)
        model = model.merge_and_unload()  # plain model: same forward, no adapter overhead
    model.to(device)
    model.eval()
    return model, load_processor(str(model_dir), min_pixels, max_pixels)


def load_from_config(cfg, min_pixels: Optional[int] = None, max_pixels: Optional[int] = None):
    """(model, processor) for a backend config with model_path, adapter_path, dtype, device
    (the vlm and topreward backends); pixel bounds as resolved by the backend."""
    return load_qwen_vl(cfg.model_path, cfg.adapter_path, dtype=cfg.dtype, device=cfg.device,
                        min_pixels=min_pixels, max_pixels=max_pixels)


# -- several LoRA adapters on one base model ----------------------------------------------

ADAPTER_SIGNALS = ("progress", "completion", "contrastive")


def find_adapters(adapter_path: str = "", per_signal: Optional[Dict[str, str]] = None
                  ) -> Dict[str, Path]:
    """signal -> adapter directory. Explicit per-signal paths win; else `adapter_path` is one
    adapter (it holds adapter_config.json: key "*") or a folder with one adapter per signal
    in sub-folders named progress/, completion/, contrastive/ (how the LRM adapters are
    published). {} = no adapter."""
    out: Dict[str, Path] = {}
    per_signal = {k: v for k, v in (per_signal or {}).items() if v}
    for sig, path in per_signal.items():
        if sig not in ADAPTER_SIGNALS:
            raise ValueError(f"unknown adapter signal {sig!r}; known: {ADAPTER_SIGNALS}")
        out[sig] = resolve_local(path, f"adapter_{sig}")
    if out or not adapter_path:
        if adapter_path:
            raise ValueError("give either adapter_path or the per-signal adapter_<signal> "
                             "paths, not both")
        return out
    p = Path(os.path.expanduser(adapter_path))
    subs = {s: p / s for s in ADAPTER_SIGNALS if (p / s / "adapter_config.json").is_file()}
    if p.is_dir() and not (p / "adapter_config.json").is_file() and subs:
        return subs
    return {"*": resolve_local(adapter_path, "adapter_path")}


def adapter_profile(adapters: Dict[str, Path]) -> str:
    """The prompt profile an adapter set was trained with: the one named in the
    `lrm_ros_sft.json` beside it (written by lrm_ros's own LoRA training), else
    "lrm_released" (an adapter from elsewhere, e.g. the published LRM ones)."""
    for path in adapters.values():
        f = Path(path) / "lrm_ros_sft.json"
        if f.is_file():
            try:
                return str(json.loads(f.read_text()).get("prompts") or "lrm_ros")
            except (ValueError, TypeError, AttributeError):
                raise ValueError(f"{f}: not a JSON object naming its \"prompts\" profile") from None
    return "lrm_released"


def _adapter_config(adapter_dir: Path, model):
    """The adapter's peft config, with modules_to_save that peft can wrap: an entry naming a
    module inside another listed module (the published progress adapter lists both the
    vision tower `visual` and its `merger`) is dropped, its weights being part of the outer
    module's saved copy."""
    from peft import PeftConfig
    cfg = PeftConfig.from_pretrained(str(adapter_dir))
    mts = list(getattr(cfg, "modules_to_save", None) or [])
    if len(mts) > 1:
        names = [n for n, _ in model.named_modules()]
        owners = {e: [n for n in names if n == e or n.endswith("." + e)] for e in mts}

        def nested(e: str) -> bool:   # every module e names lies inside another entry's
            outers = [o for other in mts if other != e for o in owners[other]]
            return bool(owners[e]) and all(any(m.startswith(o + ".") for o in outers)
                                           for m in owners[e])

        cfg.modules_to_save = [e for e in mts if not nested(e)]
    return cfg


def verify_adapter(peft_model, name: str, adapter_dir: Path) -> None:
    """Every tensor of the adapter's file is in the model, unchanged: raises otherwise (a
    key layout that does not match the model leaves LoRA weights at their initial values
    without an error from peft)."""
    import torch
    from peft.utils import get_peft_model_state_dict
    f = Path(adapter_dir) / "adapter_model.safetensors"
    if not f.is_file():
        return  # a .bin adapter: nothing cheap to compare against
    from safetensors.torch import load_file
    saved = load_file(str(f))
    got = get_peft_model_state_dict(peft_model, adapter_name=name)
    missing = [k for k in saved if k not in got]
    differ = [k for k in saved if k in got and not torch.equal(
        saved[k].to(got[k].dtype).cpu(), got[k].detach().cpu())]
    if missing or differ:
        raise ValueError(
            f"lrm_ros: LoRA adapter {adapter_dir} did not load into the model: "
            f"{len(missing)} of its {len(saved)} tensors have no place in the model "
            f"(e.g. {missing[:2]}), {len(differ)} differ after loading (e.g. {differ[:2]}). "
            f"Was it trained on this base model (check `model_path`)?")


def load_adapters(model, adapters: Dict[str, Path]):
    """A peft model holding each adapter under its signal's name (not merged), switched with
    `set_adapter`. Each adapter is checked with verify_adapter."""
    from peft import PeftModel
    names = list(adapters)
    first = names[0]
    peft_model = PeftModel.from_pretrained(model, str(adapters[first]), adapter_name=first,
                                           is_trainable=False, local_files_only=True,
                                           config=_adapter_config(adapters[first], model))
    for name in names[1:]:
        peft_model.add_adapter(name, _adapter_config(adapters[name], model))
        peft_model.load_adapter(str(adapters[name]), adapter_name=name, is_trainable=False,
                                local_files_only=True)
    for name in names:
        verify_adapter(peft_model, name, adapters[name])
    peft_model.eval()
    return peft_model


# -- the tiny test model ------------------------------------------------------------------


def check_pixels(backend: str, min_pixels: int, max_pixels: int) -> None:
    """Pixel bounds of a backend config: 0 = the prompt profile's, else 16 <= min <= max."""
    lo, hi = int(min_pixels), int(max_pixels)
    if lo < 0 or hi < 0 or (lo and lo < 16) or (lo and hi and hi < lo):
        raise ValueError(f"{backend}: need 16 <= min_pixels <= max_pixels (0 = the prompt "
                         f"profile's), got min_pixels={min_pixels}, max_pixels={max_pixels} "
                         f"(e.g. 224*224 = 50176 for 49 visual tokens per frame)")
