"""Prompt profiles of the VLM reward backends (configuration: config/prompts/<profile>.yaml).

A profile is everything that must match what a model was trained on: the prompt texts and
where the frames go, how the instruction is inserted, which parsers read the answers, the
generation lengths, how `tri` combines the signals, the frame resolution, and TOPReward's
statement. Packaged profiles:

  lrm_ros             lrm_ros's own templates (short JSON answers); the base of all others
  lrm_released        the released LRM adapters' formats, reproduced exactly (source named
                      in the file); the `vlm` backend's default when adapters are given
  topreward_official  TOPReward's official statement, open user turn, " True", frames as
                      one video; the `topreward` backend's default

`load_prompts(name_or_path)` takes a profile name or a YAML file; a file's entries override
the `lrm_ros` base, the rest keep its values.

A prompt is a tuple of parts, rendered in order into one user turn: ("text", str) with the
placeholder {instruction}, or ("image", "first" | "previous" | "current"). `build_messages`
turns a prompt + the query's frames into chat messages and the list of images in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

Part = Tuple[str, str]           # ("text", "...") | ("image", "first"|"previous"|"current")
Prompt = Tuple[Part, ...]
IMAGE_ROLES = ("first", "previous", "current")
LRM_PROMPTS = ("contrastive", "progress", "progress_current_only", "completion")
LRM_SIGNALS = ("contrastive", "progress", "completion")
PROFILES = ("lrm_ros", "lrm_released", "topreward_official")
BASE_PROFILE = "lrm_ros"
ANSWER_FORMATS = ("lrm_ros", "lrm_released")
TRI_COMBINATIONS = ("mean_parsed", "released")
INSTRUCTION_STYLES = ("normalized", "verbatim")


@dataclass(frozen=True)
class TopRewardPrompt:
    """TOPReward's query: [prefix] [frames] statement, then the answer word is scored.
    turn "closed": the user turn is closed and the assistant header follows (the answer is
    the first token of the reply); "open": the chat text is cut at the end-of-turn token, so
    the answer continues the user's own statement (the official formulation)."""
    frames: str = "images"          # images | video
    video_fps: float = 2.0
    prefix: str = ""
    statement: str = "The video shows the robot completing the task: {instruction}. True or False?"
    turn: str = "closed"            # closed | open
    answer_word: str = "True"
    negative_word: str = "False"


@dataclass(frozen=True)
class Generation:
    max_new_tokens: int = 24
    stop_on_json: bool = True


@dataclass(frozen=True)
class TriSettings:
    combination: str = "mean_parsed"
    weights: Tuple[Tuple[str, float], ...] = (("contrastive", 1 / 3), ("progress", 1 / 3),
                                              ("completion", 1 / 3))

    def weight(self, signal: str) -> float:
        return dict(self.weights)[signal]


@dataclass(frozen=True)
class PromptSet:
    contrastive: Prompt
    progress: Prompt
    progress_current_only: Prompt
    completion: Prompt
    topreward: TopRewardPrompt = field(default_factory=TopRewardPrompt)
    system: str = ""
    profile: str = BASE_PROFILE
    instruction: str = "normalized"
    answer_format: str = "lrm_ros"
    generation: Tuple[Tuple[str, Generation], ...] = tuple((s, Generation()) for s in LRM_SIGNALS)
    tri: TriSettings = field(default_factory=TriSettings)
    contrastive_from_start: bool = True   # the first query compares with the episode's start
    min_pixels: int = 32 * 32       # 0 = the checkpoint's processor config
    max_pixels: int = 224 * 224
    source: str = "<built-in>"

    def images_needed(self, name: str) -> Tuple[str, ...]:
        return tuple(v for k, v in getattr(self, name) if k == "image")

    def gen(self, signal: str) -> Generation:
        return dict(self.generation)[signal]

    def fill(self, text: str, instruction: str) -> str:
        return fill(text, instruction, self.instruction)


def fill(text: str, instruction: str, style: str = "normalized") -> str:
    """Substitute {instruction} (only that: JSON braces in the templates stay as they are).
    normalized: whitespace collapsed and a trailing '.' removed; verbatim: as given."""
    instr = str(instruction)
    if style == "normalized":
        instr = " ".join(instr.split()).rstrip(" .")
    return text.replace("{instruction}", instr)


def build_messages(prompt: Prompt, instruction: str, images: Dict[str, np.ndarray],
                   system: str = "", style: str = "normalized") -> Tuple[List[dict], List[np.ndarray]]:
    """(chat messages, images in order of appearance) for one prompt."""
    content, ims = [], []
    for kind, value in prompt:
        if kind == "text":
            content.append({"type": "text", "text": fill(value, instruction, style)})
        else:
            if images.get(value) is None:
                raise ValueError(f"prompt needs the {value!r} image, which the query lacks")
            content.append({"type": "image"})
            ims.append(images[value])
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    return messages, ims


def topreward_messages(tp: TopRewardPrompt, instruction: str, n_frames: int,
                       system: str = "", style: str = "normalized") -> List[dict]:
    """The user turn of a TOPReward query: [prefix] frames (n images, or one video) statement."""
    content = [{"type": "text", "text": fill(tp.prefix, instruction, style)}] if tp.prefix else []
    if tp.frames == "video":
        content.append({"type": "video"})
    else:
        content += [{"type": "image"} for _ in range(n_frames)]
    content.append({"type": "text", "text": fill(tp.statement, instruction, style)})
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    return messages


def _parse_prompt(name: str, raw) -> Prompt:
    if isinstance(raw, str):
        raw = [{"text": raw}]
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError(f"prompt {name!r}: expected a list of parts (- text: ... / - image: ...)")
    parts = []
    for i, item in enumerate(raw):
        if isinstance(item, (list, tuple)) and len(item) == 2:
            kind, value = item
        elif isinstance(item, dict) and len(item) == 1:
            (kind, value), = item.items()
        else:
            raise ValueError(f"prompt {name!r} part {i}: expected {{text: ...}} or {{image: ...}}, got {item!r}")
        if kind == "image" and value not in IMAGE_ROLES:
            raise ValueError(f"prompt {name!r} part {i}: image must be one of {IMAGE_ROLES}, got {value!r}")
        if kind not in ("text", "image"):
            raise ValueError(f"prompt {name!r} part {i}: unknown part kind {kind!r} (text or image)")
        parts.append((kind, str(value)))
    return tuple(parts)


def _choice(source: str, key: str, value, allowed) -> str:
    value = str(value)
    if value not in allowed:
        raise ValueError(f"{source}: {key} must be one of {list(allowed)}, got {value!r}")
    return value


def _generation(source: str, raw, base: Tuple[Tuple[str, Generation], ...]):
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: generation must map signals to {{max_new_tokens, stop_on_json}}")
    out = dict(base)
    for sig, g in raw.items():
        if sig not in LRM_SIGNALS:
            raise ValueError(f"{source}: generation.{sig}: unknown signal; known: {list(LRM_SIGNALS)}")
        g = dict(g or {})
        bad = set(g) - {"max_new_tokens", "stop_on_json"}
        if bad:
            raise ValueError(f"{source}: generation.{sig}: unknown entries {sorted(bad)}")
        new = replace(out[sig], **g)
        if not 1 <= int(new.max_new_tokens) <= 4096:
            raise ValueError(f"{source}: generation.{sig}.max_new_tokens must be in 1..4096, "
                             f"got {new.max_new_tokens}")
        out[sig] = Generation(int(new.max_new_tokens), bool(new.stop_on_json))
    return tuple((s, out[s]) for s in LRM_SIGNALS)


def _tri(source: str, raw, base: TriSettings) -> TriSettings:
    if not isinstance(raw, dict) or set(raw) - {"combination", "weights"}:
        raise ValueError(f"{source}: tri takes combination and weights")
    out = base
    if "combination" in raw:
        out = replace(out, combination=_choice(source, "tri.combination", raw["combination"],
                                               TRI_COMBINATIONS))
    if "weights" in raw:
        w = dict(raw["weights"] or {})
        if set(w) != set(LRM_SIGNALS):
            raise ValueError(f"{source}: tri.weights needs exactly {list(LRM_SIGNALS)}, got {sorted(w)}")
        total = sum(float(v) for v in w.values())
        if abs(total - 1.0) > 1e-6 or any(float(v) < 0 for v in w.values()):
            raise ValueError(f"{source}: tri.weights must be >= 0 and sum to 1, got {w} (sum {total})")
        out = replace(out, weights=tuple((s, float(w[s])) for s in LRM_SIGNALS))
    return out


_TOP_KEYS = {"frames", "video_fps", "prefix", "statement", "turn", "answer_word", "negative_word"}


def _topreward(source: str, raw, base: TopRewardPrompt) -> TopRewardPrompt:
    tr = dict(raw or {})
    bad = set(tr) - _TOP_KEYS
    if bad:
        raise ValueError(f"{source}: unknown topreward entries {sorted(bad)}; known: {sorted(_TOP_KEYS)}")
    kw = {}
    for k, v in tr.items():
        if k == "video_fps":
            kw[k] = float(v)
            if not kw[k] > 0:
                raise ValueError(f"{source}: topreward.video_fps must be > 0, got {v}")
        elif k == "frames":
            kw[k] = _choice(source, "topreward.frames", v, ("images", "video"))
        elif k == "turn":
            kw[k] = _choice(source, "topreward.turn", v, ("closed", "open"))
        else:
            kw[k] = "" if v is None else str(v)
    out = replace(base, **kw)
    if not out.answer_word.strip():
        raise ValueError(f"{source}: topreward.answer_word must not be empty")
    return out


_SCALARS = {"system", "profile", "instruction", "answer_format", "generation", "tri", "images",
            "topreward", "contrastive_from_start"}


def _from_dict(data: dict, base: Optional[PromptSet], source: str) -> PromptSet:
    known = set(LRM_PROMPTS) | _SCALARS
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{source}: unknown prompt entries {sorted(unknown)}; known: {sorted(known)}")
    kwargs: Dict[str, object] = {}
    for name in LRM_PROMPTS:
        if name in data:
            kwargs[name] = _parse_prompt(name, data[name])
        elif base is None:
            raise ValueError(f"{source}: prompt {name!r} missing")
    proto = base if base is not None else PromptSet((), (), (), ())
    if "topreward" in data:
        kwargs["topreward"] = _topreward(source, data["topreward"], proto.topreward)
    if "system" in data:
        kwargs["system"] = str(data["system"] or "")
    if "profile" in data:
        kwargs["profile"] = str(data["profile"])
    elif base is not None:
        kwargs["profile"] = Path(source).stem
    if "instruction" in data:
        kwargs["instruction"] = _choice(source, "instruction", data["instruction"], INSTRUCTION_STYLES)
    if "answer_format" in data:
        kwargs["answer_format"] = _choice(source, "answer_format", data["answer_format"], ANSWER_FORMATS)
    if "contrastive_from_start" in data:
        kwargs["contrastive_from_start"] = bool(data["contrastive_from_start"])
    if "generation" in data:
        kwargs["generation"] = _generation(source, data["generation"], proto.generation)
    if "tri" in data:
        kwargs["tri"] = _tri(source, data["tri"], proto.tri)
    if "images" in data:
        im = dict(data["images"] or {})
        if set(im) - {"min_pixels", "max_pixels"}:
            raise ValueError(f"{source}: images takes min_pixels and max_pixels (0 = the checkpoint's)")
        lo, hi = int(im.get("min_pixels", proto.min_pixels)), int(im.get("max_pixels", proto.max_pixels))
        if lo < 0 or hi < 0 or (lo and hi and lo > hi):
            raise ValueError(f"{source}: need 0 <= images.min_pixels <= images.max_pixels, got {lo}, {hi}")
        kwargs["min_pixels"], kwargs["max_pixels"] = lo, hi
    kwargs["source"] = source
    return replace(base, **kwargs) if base is not None else PromptSet(**kwargs)


_CACHE: Dict[str, PromptSet] = {}


def _read_yaml(path: Path) -> dict:
    import yaml
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of prompt entries")
    return data


def default_prompts() -> PromptSet:
    """The base profile, config/prompts/lrm_ros.yaml."""
    return load_prompts(BASE_PROFILE)


def profile_path(name: str) -> Path:
    from lrm_ros.paths import config_path
    return config_path(f"prompts/{name}.yaml")


def load_prompts(name_or_path: Union[str, Path, None] = None) -> PromptSet:
    """A prompt profile: a packaged profile name (lrm_ros, lrm_released, topreward_official)
    or a YAML file whose entries override the lrm_ros base. None or "" -> lrm_ros."""
    key = str(name_or_path or BASE_PROFILE)
    if key in _CACHE:
        return _CACHE[key]
    if key == BASE_PROFILE:
        path = profile_path(BASE_PROFILE)
        out = _from_dict(_read_yaml(path), None, str(path))
    elif key in PROFILES:
        path = profile_path(key)
        out = _from_dict(_read_yaml(path), load_prompts(BASE_PROFILE), str(path))
    else:
        p = Path(key).expanduser()
        if not p.is_file():
            raise FileNotFoundError(
                f"lrm_ros: prompts {key!r} is neither a packaged profile ({', '.join(PROFILES)}) "
                f"nor an existing YAML file (node parameter `prompts_path`: a profile name, a "
                f"file like config/prompts/lrm_ros.yaml, or empty for the backend's default)")
        return _from_dict(_read_yaml(p), load_prompts(BASE_PROFILE), str(p))
    _CACHE[key] = out
    return out
