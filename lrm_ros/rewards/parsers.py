"""Parsers of the LRM answers: pure functions, text -> (value, ok, reason).

Strict JSON first; then tolerant: code fences, single quotes / Python literals, trailing
commas, text around the object, key variants ("more complete image", "progress", ...),
numbers as strings, "Image 2", percentages ("70%"), fractions ("7/10"), and finally a bare
answer with no JSON. Tolerant successes say what was fixed in `reason` (ok=True); strict
successes have reason "". Failures are explicit: ok=False, value 0 for contrastive (the
LRM convention), NaN for progress and completion.

  parse_contrastive: {"more_complete_image": 2} -> +1 (the current image is more complete),
                     1 -> -1 (the earlier image is), else 0 invalid
  parse_progress:    {"completion_progress": 0.7} -> 0.7 (snapped to the 0.1 grid, noted)
  parse_completion:  {"task_completed": "yes"} -> 1.0, "no" -> 0.0

Why one file of about 410 lines: the parsers of both answer formats (ours and the released
LRM server's) share the tolerant JSON and number extraction of this module, and reading them side by
side is how one checks that each parses what its model was trained to say.
"""
from __future__ import annotations

import ast
import json
import math
import re
from typing import Any, List, Optional, Tuple

Parsed = Tuple[float, bool, str]
NAN = float("nan")

CONTRASTIVE_KEYS = ("more_complete_image", "more_complete", "more_completed_image",
                    "most_complete_image", "answer", "image", "result", "choice")
PROGRESS_KEYS = ("completion_progress", "progress", "completion", "task_progress", "answer",
                 "value", "score")
COMPLETION_KEYS = ("task_completed", "completed", "task_complete", "complete", "done",
                   "success", "answer", "result")

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.S)
_YES = {"yes", "y", "true", "1", "completed", "complete", "done", "success", "succeeded"}
_NO = {"no", "n", "false", "0", "not completed", "incomplete", "not complete", "not done",
       "failure", "failed"}


def _norm_key(k: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(k).lower()).strip("_")


def _balanced_objects(text: str) -> List[str]:
    """Substrings that are brace-balanced {...} objects, in order (quotes respected)."""
    out, depth, start, quote, esc = [], 0, -1, "", False
    for i, ch in enumerate(text):
        if quote:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == quote:
                quote = ""
            continue
        if ch in "\"'" and depth > 0:
            quote = ch
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                out.append(text[start:i + 1])
    return out


def extract_object(text: str) -> Tuple[Optional[dict], List[str]]:
    """(the first JSON-like object in text, notes on what had to be tolerated)."""
    notes: List[str] = []
    if not isinstance(text, str):
        return None, ["not a string"]
    s = text.strip()
    try:
        obj = json.loads(s)
        if isinstance(obj, dict):
            return obj, notes
    except (ValueError, RecursionError):
        pass
    m = _FENCE.search(s)
    if m:
        s = m.group(1).strip()
        notes.append("code fence")
    cands = _balanced_objects(s)
    if not cands and s.count("{") == 1 and "}" not in s:   # answer cut off before its "}"
        cands = [s[s.index("{"):] + "}"]
        notes.append("closed unterminated object")
    for cand in cands:
        try:
            obj = json.loads(cand)
        except ValueError:
            obj = None
            fixed = re.sub(r",\s*([}\]])", r"\1", cand)
            for attempt in (fixed, fixed.replace("'", '"')):
                try:
                    obj = json.loads(attempt)
                    notes.append("repaired JSON")
                    break
                except ValueError:
                    continue
            if obj is None:
                try:
                    py = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", fixed))
                    obj = ast.literal_eval(py)
                    notes.append("python literal")
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    obj = None
        if isinstance(obj, dict):
            if cand.strip() != s.strip():
                notes.append("text around JSON")
            return obj, notes
    return None, notes


def _lookup(obj: dict, keys: Tuple[str, ...]) -> Tuple[Any, Optional[str]]:
    normed = {_norm_key(k): v for k, v in obj.items()}
    for k in keys:
        if k in normed:
            return normed[k], (None if k == keys[0] and k in obj else f"key {k!r}")
    if len(obj) == 1:  # a single key of another name: take its value, say so
        (k, v), = obj.items()
        return v, f"unknown key {k!r}"
    return None, None


def _key_pattern(keys: Tuple[str, ...]) -> str:
    return "|".join(re.escape(k).replace("_", "[ _-]?") for k in keys[:3])


def _finish(value: float, notes: List[str]) -> Parsed:
    return value, True, "; ".join(dict.fromkeys(notes))


# -- contrastive ---------------------------------------------------------------------------

def _image_choice(v: Any) -> Optional[int]:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)) and v in (1, 2):
        return int(v)
    if isinstance(v, str):
        s = v.strip().lower().strip(".!\"' ")
        m = re.fullmatch(r"(?:image|img|picture|frame)?\s*#?\s*([12])(?:\.0)?", s)
        if m:
            return int(m.group(1))
        if s in ("first", "first image", "image one", "one", "earlier", "previous"):
            return 1
        if s in ("second", "second image", "image two", "two", "current", "now", "later"):
            return 2
    return None


def parse_contrastive(text: str) -> Parsed:
    """-> (+1 if Image 2 (now) is more complete, -1 if Image 1 (K ticks ago), 0 invalid)."""
    obj, notes = extract_object(text)
    choice = None
    if obj is not None:
        v, note = _lookup(obj, CONTRASTIVE_KEYS)
        if note:
            notes.append(note)
        choice = _image_choice(v)
        if choice is not None and not isinstance(v, int):
            notes.append("answer not an integer")
        if choice is None and v is not None:
            return 0.0, False, f"contrastive: answer {v!r} is not 1 or 2"
    if choice is None and isinstance(text, str):
        m = re.search(r"(?:%s)\W{0,6}([12])\b" % _key_pattern(CONTRASTIVE_KEYS), text, re.I) \
            or re.search(r"\bimage\s*#?\s*([12])\b", text, re.I) \
            or re.fullmatch(r"\W*([12])\W*", text)
        if m:
            choice = int(m.group(1))
            notes.append("no JSON: free-text answer")
    if choice is None:
        return 0.0, False, "contrastive: unparseable answer %r" % _clip(text)
    return _finish(1.0 if choice == 2 else -1.0, notes)


# -- progress ------------------------------------------------------------------------------

def _number(v: Any, notes: List[str]) -> Optional[float]:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        x = float(v)
    elif isinstance(v, str):
        s = v.strip()
        m = re.fullmatch(r"([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*%", s)
        if m:
            notes.append("percentage")
            return float(m.group(1)) / 100.0
        m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*/\s*(10|100)", s)
        if m:
            notes.append("fraction")
            return float(m.group(1)) / float(m.group(2))
        try:
            x = float(s)
        except ValueError:
            return None
        notes.append("number as string")
    else:
        return None
    if not math.isfinite(x):
        return None
    return x


def snap_progress(x: float) -> Tuple[float, str]:
    """Onto the 0.0, 0.1, ..., 1.0 grid; the note says when it moved."""
    snapped = round(math.floor(x * 10.0 + 0.5 + 1e-9) / 10.0, 1)   # half up, not to even
    if abs(snapped - x) > 1e-6:
        return snapped, f"snapped {x:g} -> {snapped:.1f}"
    return snapped, ""


def parse_progress(text: str) -> Parsed:
    """-> (progress in {0.0, 0.1, ..., 1.0}, ok, reason)."""
    obj, notes = extract_object(text)
    x = None
    if obj is not None:
        v, note = _lookup(obj, PROGRESS_KEYS)
        if note:
            notes.append(note)
        x = _number(v, notes)
        if x is None and v is not None:
            return NAN, False, f"progress: answer {v!r} is not a number"
    if x is None and isinstance(text, str):
        m = re.search(r"(?:%s)\W{0,6}([-+]?\d*\.?\d+\s*%%?)" % _key_pattern(PROGRESS_KEYS), text, re.I) \
            or re.fullmatch(r"\s*([-+]?\d*\.?\d+\s*%?)\s*\.?\s*", text)
        if m:
            x = _number(m.group(1), notes)
            notes.append("no JSON: free-text answer")
    if x is None:
        return NAN, False, "progress: unparseable answer %r" % _clip(text)
    if 1.0 < x <= 100.0 and "percentage" not in notes:
        notes.append("read as a percentage")
        x = x / 100.0
    if x < 0.0 or x > 1.0:
        return NAN, False, f"progress: {x:g} is outside [0, 1]"
    x, note = snap_progress(x)
    if note:
        notes.append(note)
    return _finish(x, notes)


# -- completion ----------------------------------------------------------------------------

def _yes_no(v: Any) -> Optional[float]:
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, (int, float)) and v in (0, 1):
        return float(v)
    if isinstance(v, str):
        s = " ".join(v.strip().lower().strip(".!\"' ").split())
        if s in _YES:
            return 1.0
        if s in _NO:
            return 0.0
    return None


def parse_completion(text: str) -> Parsed:
    """-> (1.0 for yes, 0.0 for no, ok, reason)."""
    obj, notes = extract_object(text)
    y = None
    if obj is not None:
        v, note = _lookup(obj, COMPLETION_KEYS)
        if note:
            notes.append(note)
        y = _yes_no(v)
        if y is not None and not (isinstance(v, str) and v.strip() in ("yes", "no")):
            notes.append(f"answer {v!r} read as {'yes' if y else 'no'}")
        if y is None and v is not None:
            return NAN, False, f"completion: answer {v!r} is not yes/no"
    if y is None and isinstance(text, str):
        m = re.search(r"(?:%s)\W{0,6}(yes|no|true|false)\b" % _key_pattern(COMPLETION_KEYS), text, re.I) \
            or re.fullmatch(r"\W*(yes|no)\b.*", text, re.I | re.S)
        if m:
            y = _yes_no(m.group(1))
            notes.append("no JSON: free-text answer")
    if y is None:
        return NAN, False, "completion: unparseable answer %r" % _clip(text)
    return _finish(y, notes)


def _clip(text: Any, n: int = 60) -> str:
    s = str(text)
    return s if len(s) <= n else s[:n] + "..."


PARSERS = {"contrastive": parse_contrastive, "progress": parse_progress,
           "completion": parse_completion}


# -- the released LRM answer format (answer_format: lrm_released) ---------------------------
# The rules of the published LRM reward server (vlm_reward/vlm_reward_server.py in
# physical-superintelligence-lab/Large-Reward-Models: extract_progress_score,
# extract_comparison_result and the completion check), fallbacks included, with one
# difference: where the server turns "nothing found" into a score of 0, these return an
# explicit invalid result (ok=False, the server's score as the value), so that it is counted.
# How a combination treats that value is the tri setting's business (vlm.py).

_FIRST_OBJECT = re.compile(r"\{[^}]+\}")
_PROGRESS_KEY_RE = re.compile(r'"completion_progress"\s*:\s*"?(NA|([0-9.]+))"?', re.I)
_PROGRESS_FALLBACKS = (
    r"\b(0(\.[0-9]+)?|1(\.0)?)\b", r"Progress[:\s]*([0-9]*\.?[0-9]+)",
    r"progress[:\s]*([0-9]*\.?[0-9]+)", r"Score[:\s]*([0-9]*\.?[0-9]+)",
    r"score[:\s]*([0-9]*\.?[0-9]+)", r"([0-9]*\.?[0-9]+)\s*$", r"^([0-9]*\.?[0-9]+)")
_COMPLETION_RE = re.compile(r'"task_completed"\s*:\s*"(yes|no)"', re.I)
_CONTRASTIVE_RE = re.compile(r'"more_complete_image"\s*:\s*"(Image[AB])"')


def _clamp01(x: float) -> float:
    return max(0.0, min(1.0, x))


def parse_progress_released(text: str) -> Parsed:
    """{ "completion_progress": v } -> v clamped to [0, 1] ("NA" -> 0). The first {...} as
    JSON; else the key by regex; else the server's bare-number patterns, in its order."""
    if not isinstance(text, str):
        return NAN, False, "progress: not a string"
    m = _FIRST_OBJECT.search(text)
    if m:
        try:
            obj = json.loads(m.group(0))
            if isinstance(obj, dict) and "completion_progress" in obj:
                v = obj["completion_progress"]
                if v in ("NA", "na"):
                    return 0.0, True, "NA read as 0"
                x = float(v)
                if math.isfinite(x):
                    return _finish(_clamp01(x), [] if 0.0 <= x <= 1.0 else [f"clamped {x:g}"])
        except (ValueError, TypeError, RecursionError):
            pass
    m = _PROGRESS_KEY_RE.search(text)
    if m:
        if m.group(1).upper() == "NA":
            return 0.0, True, "NA read as 0"
        try:
            x = float(m.group(2))
            return _finish(_clamp01(x), ["key by regex"])
        except ValueError:
            pass
    for pat in _PROGRESS_FALLBACKS:
        m = re.search(pat, text)
        if m:
            try:
                x = float(m.group(1))
            except ValueError:
                continue
            return _finish(_clamp01(x), [f"no JSON: number by pattern {pat!r}"])
    return 0.0, False, "progress: unparseable answer %r" % _clip(text)


def parse_completion_released(text: str) -> Parsed:
    """{ "task_completed": "yes" | "no" } -> 1 / 0: the LAST such match decides; else a
    bare "yes" without any "no" -> 1, any "no" -> 0 (substring tests, as published)."""
    if not isinstance(text, str):
        return 0.0, False, "completion: not a string"
    hits = _COMPLETION_RE.findall(text)
    if hits:
        return _finish(1.0 if hits[-1].lower() == "yes" else 0.0,
                       [] if len(hits) == 1 else [f"{len(hits)} answers: the last decides"])
    low = text.lower()
    if "yes" in low and "no" not in low:
        return 1.0, True, "no JSON: 'yes' in the text"
    if "no" in low:
        return 0.0, True, "no JSON: 'no' in the text"
    return 0.0, False, "completion: unparseable answer %r" % _clip(text)


def parse_contrastive_released(text: str) -> Parsed:
    """{ "more_complete_image": "ImageB" } -> +1 (now), "ImageA" -> -1 (the previous query's
    frame); else the key by regex; else whichever of ImageA/ImageB is mentioned last."""
    if not isinstance(text, str):
        return 0.0, False, "contrastive: not a string"
    choice, notes = None, []
    m = _FIRST_OBJECT.search(text)
    if m:
        try:
            obj = json.loads(m.group(0))
            if isinstance(obj, dict) and obj.get("more_complete_image") in ("ImageA", "ImageB"):
                choice = obj["more_complete_image"]
        except (ValueError, TypeError, RecursionError):
            pass
    if choice is None:
        m = _CONTRASTIVE_RE.search(text)
        if m:
            choice, notes = m.group(1), ["key by regex"]
    if choice is None:
        a, b = text.rfind("ImageA"), text.rfind("ImageB")
        if a >= 0 or b >= 0:
            choice, notes = ("ImageB" if b > a else "ImageA"), ["no JSON: the image named last"]
    if choice is None:
        return 0.0, False, "contrastive: unparseable answer %r" % _clip(text)
    return _finish(1.0 if choice == "ImageB" else -1.0, notes)


RELEASED_PARSERS = {"contrastive": parse_contrastive_released,
                    "progress": parse_progress_released,
                    "completion": parse_completion_released}

#: answer_format -> signal -> parser
PARSERS_BY_FORMAT = {"lrm_ros": PARSERS, "lrm_released": RELEASED_PARSERS}

#: the key whose closed JSON object ends an answer (stop_on_json)
ANSWER_KEYS = {"contrastive": "more_complete_image", "progress": "completion_progress",
               "completion": "task_completed"}


def has_closed_answer(text: str, signal: str) -> bool:
    """True once `text` holds a closed {...} object that names the signal's key: the answer
    is complete and the rest of the generation would not be read."""
    key = ANSWER_KEYS[signal]
    return any(key in obj for obj in _balanced_objects(text))
