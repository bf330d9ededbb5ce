"""Prompt templates of the VLM reward backends (configuration: config/prompts/lrm.yaml).

A prompt is a tuple of parts, rendered in order into one user turn: ("text", str) with the
placeholder {instruction}, or ("image", "first" | "previous" | "current"). `build_messages`
turns a prompt + the query's frames into chat messages and the list of images in order.
Answer formats (what the parsers expect) are described in the YAML file.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

Part = Tuple[str, str]           # ("text", "...") | ("image", "first"|"previous"|"current")
Prompt = Tuple[Part, ...]
IMAGE_ROLES = ("first", "previous", "current")
LRM_PROMPTS = ("contrastive", "progress", "progress_current_only", "completion")


@dataclass(frozen=True)
class TopRewardPrompt:
    prefix: str = ""
    statement: str = "The video shows the robot completing the task: {instruction}. True or False?"
    answer_word: str = "True"
    negative_word: str = "False"


@dataclass(frozen=True)
class PromptSet:
    contrastive: Prompt
    progress: Prompt
    progress_current_only: Prompt
    completion: Prompt
    topreward: TopRewardPrompt = field(default_factory=TopRewardPrompt)
    system: str = ""
    source: str = "<built-in>"

    def images_needed(self, name: str) -> Tuple[str, ...]:
        return tuple(v for k, v in getattr(self, name) if k == "image")


def fill(text: str, instruction: str) -> str:
    """Substitute {instruction} (only that: JSON braces in the templates stay as they are)."""
    instr = " ".join(str(instruction).split()).rstrip(" .")
    return text.replace("{instruction}", instr)


def build_messages(prompt: Prompt, instruction: str, images: Dict[str, np.ndarray],
                   system: str = "") -> Tuple[List[dict], List[np.ndarray]]:
    """(chat messages, images in order of appearance) for one prompt."""
    content, ims = [], []
    for kind, value in prompt:
        if kind == "text":
            content.append({"type": "text", "text": fill(value, instruction)})
        else:
            if images.get(value) is None:
                raise ValueError(f"prompt needs the {value!r} image, which the query lacks")
            content.append({"type": "image"})
            ims.append(images[value])
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    return messages, ims


def topreward_messages(tp: TopRewardPrompt, instruction: str, n_frames: int,
                       system: str = "") -> List[dict]:
    content = [{"type": "text", "text": fill(tp.prefix, instruction)}] if tp.prefix else []
    content += [{"type": "image"} for _ in range(n_frames)]
    content.append({"type": "text", "text": fill(tp.statement, instruction)})
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


_DEFAULT: Optional[PromptSet] = None


def _from_dict(data: dict, base: Optional[PromptSet], source: str) -> PromptSet:
    known = set(LRM_PROMPTS) | {"topreward", "system"}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{source}: unknown prompt entries {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    for name in LRM_PROMPTS:
        if name in data:
            kwargs[name] = _parse_prompt(name, data[name])
        elif base is None:
            raise ValueError(f"{source}: prompt {name!r} missing")
    if "topreward" in data:
        tr = dict(data["topreward"] or {})
        bad = set(tr) - {"prefix", "statement", "answer_word", "negative_word"}
        if bad:
            raise ValueError(f"{source}: unknown topreward entries {sorted(bad)}")
        kwargs["topreward"] = replace(base.topreward if base else TopRewardPrompt(),
                                      **{k: str(v or "") for k, v in tr.items()})
        if not kwargs["topreward"].answer_word.strip():
            raise ValueError(f"{source}: topreward.answer_word must not be empty")
    if "system" in data:
        kwargs["system"] = str(data["system"] or "")
    kwargs["source"] = source
    return replace(base, **kwargs) if base is not None else PromptSet(**kwargs)


def default_prompts() -> PromptSet:
    """The packaged config/prompts/lrm.yaml."""
    global _DEFAULT
    if _DEFAULT is None:
        import yaml
        from lrm_ros.paths import config_path
        path = config_path("prompts/lrm.yaml")
        _DEFAULT = _from_dict(yaml.safe_load(Path(path).read_text()) or {}, None, str(path))
    return _DEFAULT


def load_prompts(path: Union[str, Path, None] = None) -> PromptSet:
    """Prompts from a YAML file; entries it leaves out keep the packaged defaults.
    None or "" -> the packaged defaults."""
    base = default_prompts()
    if not path:
        return base
    import yaml
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"lrm_ros: prompts file {p} does not exist (node parameter "
                                f"`prompts`: a YAML file like config/prompts/lrm.yaml, or empty "
                                f"for the packaged prompts)")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping of prompt names")
    return _from_dict(data, base, str(p))
