"""Training examples of the `lite` reward model: the interface between the data module
(lrm_ros.data.labels, which turns demo episodes into labelled examples) and the
trainer (lrm_ros.learn.train_lite).

`LiteExamples` references frames by index into ONE frame table, so a frame used by many
examples (the first frame of an episode; a frame that is "current" in one pair and
"previous" in another) is stored and encoded once. All per-example fields are numpy arrays
of equal length per kind:

  progress     frame, first (-1 = no first frame), instr, target in [0, 1], weight, task
  completion   frame, first (-1 = none; the episode's first frame, for models whose
               completion head compares with it), instr, label 0/1, weight, task
  contrastive  prev, cur, instr, label 0/1 (1 = the `cur` frame is closer to done), weight, task

`instr` indexes `instructions`; `task` indexes `tasks` (task names such as ManiSkill env ids,
used for train/validation splits). The frame table is `frames` (F, H, W, 3) uint8 RGB, or
precomputed `features` (F, 1280) float32 from lrm_ros.vision.features.ImageEncoder (or both).

Build with `LiteExamplesBuilder` (add_frame / add_progress / ...), store with `save` (one
compressed .npz) and read with `LiteExamples.load`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from lrm_ros.common.atomic import atomic_write

FORMAT = "lrm_ros.lite_examples/1"

#: per-example fields: name -> dtype
_KINDS: Dict[str, Dict[str, type]] = {
    "progress": {"frame": np.int64, "first": np.int64, "instr": np.int64, "target": np.float32,
                 "weight": np.float32, "task": np.int64},
    "completion": {"frame": np.int64, "first": np.int64, "instr": np.int64, "label": np.float32,
                   "weight": np.float32, "task": np.int64},
    "contrastive": {"prev": np.int64, "cur": np.int64, "instr": np.int64, "label": np.float32,
                    "weight": np.float32, "task": np.int64},
}
KINDS = tuple(_KINDS)


def _empty(dtype) -> np.ndarray:
    return np.zeros(0, dtype=dtype)


def _example_fields():
    return [(f"{kind}_{name}", dt) for kind, cols in _KINDS.items() for name, dt in cols.items()]


@dataclass
class LiteExamples:
    instructions: List[str]
    frames: Optional[np.ndarray] = None          # (F, H, W, 3) uint8
    features: Optional[np.ndarray] = None        # (F, 1280) float32
    tasks: List[str] = field(default_factory=list)
    progress_frame: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    progress_first: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    progress_instr: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    progress_target: np.ndarray = field(default_factory=lambda: _empty(np.float32))
    progress_weight: np.ndarray = field(default_factory=lambda: _empty(np.float32))
    progress_task: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    completion_frame: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    completion_first: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    completion_instr: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    completion_label: np.ndarray = field(default_factory=lambda: _empty(np.float32))
    completion_weight: np.ndarray = field(default_factory=lambda: _empty(np.float32))
    completion_task: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    contrastive_prev: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    contrastive_cur: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    contrastive_instr: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    contrastive_label: np.ndarray = field(default_factory=lambda: _empty(np.float32))
    contrastive_weight: np.ndarray = field(default_factory=lambda: _empty(np.float32))
    contrastive_task: np.ndarray = field(default_factory=lambda: _empty(np.int64))

    def __post_init__(self):
        self.instructions = [str(s) for s in self.instructions]
        self.tasks = [str(s) for s in self.tasks]
        for name, dt in _example_fields():
            setattr(self, name, np.asarray(getattr(self, name), dtype=dt).reshape(-1))
        # weights default to 1 when left empty
        for kind in KINDS:
            n = self.count(kind)
            w = getattr(self, f"{kind}_weight")
            if w.size == 0 and n:
                setattr(self, f"{kind}_weight", np.ones(n, np.float32))
            if kind == "completion" and self.completion_first.size == 0 and n:
                self.completion_first = np.full(n, -1, np.int64)   # older files: none
            t = getattr(self, f"{kind}_task")
            if t.size == 0 and n:
                setattr(self, f"{kind}_task", np.zeros(n, np.int64))
                if not self.tasks:
                    self.tasks = [""]
        self.validate()

    # -- sizes ---------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        if self.features is not None:
            return int(len(self.features))
        return int(len(self.frames)) if self.frames is not None else 0

    def count(self, kind: str) -> int:
        first = next(iter(_KINDS[kind]))
        return int(getattr(self, f"{kind}_{first}").size)

    def counts(self) -> Dict[str, int]:
        return {k: self.count(k) for k in KINDS}

    def __len__(self) -> int:
        return sum(self.counts().values())

    # -- checks --------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError on any inconsistency (shapes, index ranges, label ranges)."""
        if self.frames is None and self.features is None:
            raise ValueError("LiteExamples needs a frame table: frames (F,H,W,3) uint8 or "
                             "features (F,1280)")
        if self.frames is not None:
            f = self.frames
            if not isinstance(f, np.ndarray) or f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
                raise ValueError(f"frames must be a (F,H,W,3) uint8 array, got "
                                 f"{getattr(f, 'shape', None)} {getattr(f, 'dtype', None)}")
        if self.features is not None:
            self.features = np.asarray(self.features, dtype=np.float32)
            if self.features.ndim != 2:
                raise ValueError(f"features must be (F, D), got {self.features.shape}")
            if self.frames is not None and len(self.frames) != len(self.features):
                raise ValueError(f"frames ({len(self.frames)}) and features "
                                 f"({len(self.features)}) differ in length")
        nf, ni, nt = self.num_frames, len(self.instructions), len(self.tasks)
        for kind, cols in _KINDS.items():
            n = self.count(kind)
            for name in cols:
                a = getattr(self, f"{kind}_{name}")
                if a.size != n:
                    raise ValueError(f"{kind}_{name} has {a.size} entries, {kind} has {n} examples")
            if n == 0:
                continue
            frame_cols = [c for c in ("frame", "first", "prev", "cur") if c in cols]
            for c in frame_cols:
                a = getattr(self, f"{kind}_{c}")
                lo = -1 if c == "first" else 0
                if a.min() < lo or a.max() >= nf:
                    raise ValueError(f"{kind}_{c} indexes frames outside [{lo}, {nf})")
            ins = getattr(self, f"{kind}_instr")
            if ins.min() < 0 or ins.max() >= ni:
                raise ValueError(f"{kind}_instr indexes instructions outside [0, {ni})")
            tk = getattr(self, f"{kind}_task")
            if tk.min() < 0 or tk.max() >= nt:
                raise ValueError(f"{kind}_task indexes tasks outside [0, {nt})")
            tgt = getattr(self, f"{kind}_target" if kind == "progress" else f"{kind}_label")
            if not np.all(np.isfinite(tgt)) or tgt.min() < 0 or tgt.max() > 1:
                raise ValueError(f"{kind} targets/labels must lie in [0, 1]")
            w = getattr(self, f"{kind}_weight")
            if not np.all(np.isfinite(w)) or w.min() < 0:
                raise ValueError(f"{kind}_weight must be finite and >= 0")

    # -- subsets / merging ----------------------------------------------------------------
    def select_tasks(self, tasks: Iterable[str], exclude: bool = False) -> "LiteExamples":
        """The examples of the named tasks (or of all other tasks with exclude=True); the
        frame table is shared, not copied."""
        wanted = {i for i, t in enumerate(self.tasks) if (t in set(tasks)) != exclude}
        masks = {k: np.isin(getattr(self, f"{k}_task"), sorted(wanted)) for k in KINDS}
        return self._masked(masks)

    def _masked(self, masks: Dict[str, np.ndarray]) -> "LiteExamples":
        kw = {"instructions": self.instructions, "frames": self.frames,
              "features": self.features, "tasks": self.tasks}
        for kind, cols in _KINDS.items():
            for name in cols:
                kw[f"{kind}_{name}"] = getattr(self, f"{kind}_{name}")[masks[kind]]
        return LiteExamples(**kw)

    def split_random(self, val_fraction: float, seed: int = 0):
        """(train, val): a random example split (per kind)."""
        rng = np.random.default_rng(seed)
        tr, va = {}, {}
        for k in KINDS:
            m = rng.random(self.count(k)) < val_fraction
            tr[k], va[k] = ~m, m
        return self._masked(tr), self._masked(va)

    @staticmethod
    def concatenate(parts: Sequence["LiteExamples"]) -> "LiteExamples":
        """One example set from several (frame tables stacked, indices shifted; instructions
        and tasks merged by name)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        use_frames = all(p.frames is not None for p in parts)
        use_feats = all(p.features is not None for p in parts)
        if not use_frames and not use_feats:
            raise ValueError("concatenate: all parts need frames, or all need features")
        instructions: List[str] = []
        tasks: List[str] = []
        cols: Dict[str, List[np.ndarray]] = {n: [] for n, _ in _example_fields()}
        offset = 0
        for p in parts:
            imap = np.array([_index(instructions, s) for s in p.instructions] or [0], np.int64)
            tmap = np.array([_index(tasks, s) for s in p.tasks] or [0], np.int64)
            for kind, kc in _KINDS.items():
                for name in kc:
                    a = getattr(p, f"{kind}_{name}")
                    if name in ("frame", "prev", "cur"):
                        a = a + offset
                    elif name == "first":
                        a = np.where(a >= 0, a + offset, -1)
                    elif name == "instr":
                        a = imap[a]
                    elif name == "task":
                        a = tmap[a]
                    cols[f"{kind}_{name}"].append(a)
            offset += p.num_frames
        kw = {n: np.concatenate(v) for n, v in cols.items()}
        return LiteExamples(
            instructions=instructions, tasks=tasks,
            frames=np.concatenate([p.frames for p in parts]) if use_frames else None,
            features=np.concatenate([p.features for p in parts]) if use_feats else None, **kw)

    # -- storage -------------------------------------------------------------------------
    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {n: getattr(self, n) for n, _ in _example_fields()}
        arrays["format"] = np.array(FORMAT)
        arrays["instructions"] = np.array(self.instructions, dtype=np.str_)
        arrays["tasks"] = np.array(self.tasks, dtype=np.str_)
        if self.frames is not None:
            arrays["frames"] = self.frames
        if self.features is not None:
            arrays["features"] = self.features
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
        return path

    @classmethod
    def load(cls, path) -> "LiteExamples":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                if "format" not in z or str(z["format"]) != FORMAT:
                    raise ValueError(f"{path} is not a lite examples file ({FORMAT})")
                kw = {n: z[n] for n, _ in _example_fields() if n in z}
                return cls(instructions=[str(s) for s in z["instructions"]],
                           tasks=[str(s) for s in z["tasks"]],
                           frames=z["frames"] if "frames" in z else None,
                           features=z["features"] if "features" in z else None, **kw)
        except (OSError, KeyError) as exc:
            raise ValueError(f"cannot read lite examples from {path}: {exc}") from exc


def _index(table: List[str], s: str) -> int:
    try:
        return table.index(s)
    except ValueError:
        table.append(s)
        return len(table) - 1


class LiteExamplesBuilder:
    """Accumulates a frame table and examples; `build()` -> LiteExamples.

        b = LiteExamplesBuilder()
        f0 = b.add_frame(first_frame); ft = b.add_frame(frame_t)
        b.add_progress(ft, first=f0, instruction="pick up the cube", target=0.4, task="PickCube-v1")
        b.add_contrastive(prev=f0, cur=ft, instruction=..., label=1, task=...)
        examples = b.build()
    """

    def __init__(self, features: bool = False):
        self._use_features = features
        self._frames: List[np.ndarray] = []
        self.instructions: List[str] = []
        self.tasks: List[str] = []
        self._rows: Dict[str, Dict[str, list]] = {k: {c: [] for c in cols} for k, cols in _KINDS.items()}

    def add_frame(self, frame: np.ndarray) -> int:
        """A frame (H,W,3) uint8 (or a (1280,) feature vector if built with features=True)."""
        a = np.asarray(frame)
        if self._use_features:
            if a.ndim != 1:
                raise ValueError(f"expected a feature vector, got shape {a.shape}")
        elif a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8:
            raise ValueError(f"expected an (H,W,3) uint8 frame, got {a.shape} {a.dtype}")
        self._frames.append(a)
        return len(self._frames) - 1

    def add_frames(self, frames: np.ndarray) -> np.ndarray:
        """Several frames (T,H,W,3) -> their indices (T,)."""
        return np.array([self.add_frame(f) for f in frames], dtype=np.int64)

    def _add(self, kind: str, **values) -> None:
        for c, v in values.items():
            self._rows[kind][c].append(v)

    def add_progress(self, frame: int, instruction: str, target: float, first: int = -1,
                     weight: float = 1.0, task: str = "") -> None:
        self._add("progress", frame=int(frame), first=int(first),
                  instr=_index(self.instructions, instruction), target=float(target),
                  weight=float(weight), task=_index(self.tasks, task))

    def add_completion(self, frame: int, instruction: str, label: float, weight: float = 1.0,
                       task: str = "", first: int = -1) -> None:
        self._add("completion", frame=int(frame), first=int(first),
                  instr=_index(self.instructions, instruction),
                  label=float(label), weight=float(weight), task=_index(self.tasks, task))

    def add_contrastive(self, prev: int, cur: int, instruction: str, label: float,
                        weight: float = 1.0, task: str = "") -> None:
        self._add("contrastive", prev=int(prev), cur=int(cur),
                  instr=_index(self.instructions, instruction), label=float(label),
                  weight=float(weight), task=_index(self.tasks, task))

    def build(self) -> LiteExamples:
        kw = {}
        for kind, cols in _KINDS.items():
            for c, dt in cols.items():
                kw[f"{kind}_{c}"] = np.asarray(self._rows[kind][c], dtype=dt)
        table = np.stack(self._frames) if self._frames else None
        if self._use_features:
            return LiteExamples(instructions=list(self.instructions), tasks=list(self.tasks),
                                features=table, **kw)
        return LiteExamples(instructions=list(self.instructions), tasks=list(self.tasks),
                            frames=table, **kw)


__all__ = ["LiteExamples", "LiteExamplesBuilder", "KINDS", "FORMAT"]
