"""Episodes -> labelled examples for the three LRM signals (progress, completion, contrastive).

The LRM recipe: supervision comes from *unlabeled successful videos*. A frame's progress label
is its temporal position in the episode; negatives come from failures, reversed clips,
truncated clips and mismatched instructions. Nothing here needs a human label or the
simulator's reward (the oracle is never read).

For a successful episode with ticks 0..T-1 (only every ``frame_stride``-th tick is kept,
plus the ticks the labels below need):

  progress     frame t (+ the episode's first frame) -> target t / (T-1) in [0, 1].
  completion   the last ``done_ticks`` ticks -> 1; every other frame -> 0.
  contrastive  (earlier, later) pairs at a gap of ``contrastive_gap`` ticks (LRM's K) and at
               random gaps -> label 1 ("the current = second image is closer to done");
               the same pairs in reversed order -> label 0.

Negatives:
  reversed     the time-reversed clip. Its frame order is NOT a progress signal (the label
               of a frame stays its true progress t/(T-1), shown with the reversed clip's
               "first" frame, i.e. the done frame); for completion the reversed clip is a
               failure (its last frames, the original start, are labelled 0); its
               contrastive pairs are the reversed-order pairs above (label 0).
  truncated    the first ``truncate_fraction`` of a success is not done: the last frames of
               the truncated clip -> completion 0.
  cross_task   frames paired with another task's instruction -> completion 0, progress 0
               (needs episodes of at least two tasks, or ``extra_instructions``).
  failure      every kept frame of a failed rollout -> completion 0 (1 only where the
               oracle's per-tick success flag is set, which a failed episode normally never
               has). Failures give no progress or contrastive labels (their direction is
               unknown).

Every progress and completion example carries its clip's first frame (the reversed clip's is
the done frame), for models that compare with it.

Output: :class:`lrm_ros.data.lite_data.LiteExamples` (``build_examples``), or that plus
each example's provenance (``build_labelled`` -> :class:`LabelledExamples`). Conventions are
LiteExamples' (contrastive label 1 = the current image is closer to done, progress ``first``
-1 = no first frame; every progress example here has its episode's first frame).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:
    from lrm_ros.data.lite_data import LiteExamples

__all__ = ["SOURCES", "KINDS", "LabelConfig", "LabelledExamples", "build_labelled", "build_examples",
           "split_by_task", "instruction_owner"]

# where an example comes from (the *_source arrays hold indices into this tuple)
SOURCES: Tuple[str, ...] = ("success", "reversed", "truncated", "cross_task", "failure")
_SRC = {s: i for i, s in enumerate(SOURCES)}

_LITE_COLS = {   # the columns of lrm_ros.data.lite_data.LiteExamples, per kind
    "progress": ("frame", "first", "instr", "target", "weight", "task"),
    "completion": ("frame", "first", "instr", "label", "weight", "task"),
    "contrastive": ("prev", "cur", "instr", "label", "weight", "task"),
}
# provenance kept next to them: row tuples are LiteExamples columns + these
_EXTRA_COLS = {"progress": ("source",), "completion": ("source",), "contrastive": ("gap", "source")}
KINDS = tuple(_LITE_COLS)


@dataclass(frozen=True)
class LabelConfig:
    frame_stride: int = 2            # keep every n-th tick of an episode in the frame table
    done_ticks: int = 3              # the last n ticks of a success are "completed"
    contrastive_gap: int = 10        # K: (t, t+K) pairs
    random_gap_pairs: int = 1        # extra pairs per anchor at a random gap (0 = none)
    min_random_gap: int = 2
    both_orders: bool = True         # also emit every contrastive pair reversed (label 0)
    reversed: bool = True            # reversed-clip progress / completion negatives
    reversed_weight: float = 0.5     # weight of reversed-clip progress examples
    truncated: bool = True
    truncate_fraction: float = 0.5
    cross_task: bool = True
    cross_task_per_episode: int = 4  # frames per success episode (always incl. its last frame)
    extra_instructions: Tuple[Tuple[str, str], ...] = ()   # (task, instruction) for negatives
    balance_completion: bool = True  # weight completion examples so both classes weigh equally
    image_size: Optional[Tuple[int, int]] = None   # (width, height) to resize frames to
    min_success_ticks: int = 10      # shorter "successes" (e.g. solved at reset) are skipped
    seed: int = 0

    def __post_init__(self):
        for name in ("frame_stride", "done_ticks", "contrastive_gap", "min_random_gap", "min_success_ticks"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"LabelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.random_gap_pairs < 0 or self.cross_task_per_episode < 0:
            raise ValueError("LabelConfig: random_gap_pairs and cross_task_per_episode must be >= 0")
        if not 0.0 < self.truncate_fraction < 1.0:
            raise ValueError(f"LabelConfig.truncate_fraction must be in (0, 1), got {self.truncate_fraction}")


@dataclass
class LabelledExamples:
    """:class:`~lrm_ros.data.lite_data.LiteExamples` (``lite``: what trainers read)
    plus where each example came from:

      instruction_task  (I,) index into ``lite.tasks`` of the task each instruction belongs to
      <kind>_source     (n,) index into :data:`SOURCES` per example, for every kind
      contrastive_gap   (n,) signed tick gap cur - prev of each contrastive pair
      meta              counts and the LabelConfig used
    """
    lite: "LiteExamples"
    instruction_task: np.ndarray
    progress_source: np.ndarray
    completion_source: np.ndarray
    contrastive_source: np.ndarray
    contrastive_gap: np.ndarray
    meta: Dict[str, object] = field(default_factory=dict)

    def source_mask(self, kind: str, source: str) -> np.ndarray:
        return getattr(self, f"{kind}_source") == _SRC[source]

    def counts(self) -> Dict[str, Dict[str, int]]:
        """Examples per kind and source, e.g. {"completion": {"success": 30, ..., "total": 41}}."""
        out: Dict[str, Dict[str, int]] = {}
        for kind in KINDS:
            src = getattr(self, f"{kind}_source")
            out[kind] = {s: int((src == i).sum()) for i, s in enumerate(SOURCES) if (src == i).any()}
            out[kind]["total"] = int(src.size)
        out["frames"] = {"total": self.lite.num_frames}
        return out

    def subset(self, masks: Dict[str, np.ndarray]) -> "LabelledExamples":
        """The examples selected by one boolean mask per kind, frame and instruction tables
        compacted to what they reference."""
        lite, used_i = _compact(self.lite, masks)
        return LabelledExamples(
            lite=lite, instruction_task=self.instruction_task[used_i],
            progress_source=self.progress_source[masks["progress"]],
            completion_source=self.completion_source[masks["completion"]],
            contrastive_source=self.contrastive_source[masks["contrastive"]],
            contrastive_gap=self.contrastive_gap[masks["contrastive"]], meta=dict(self.meta))


def _compact(ex: "LiteExamples", masks: Dict[str, np.ndarray]) -> Tuple["LiteExamples", np.ndarray]:
    """LiteExamples restricted to ``masks`` (bool per kind) with only the referenced frames
    and instructions kept (no frame of an unselected example travels along). Returns it and
    the indices of the kept instructions."""
    from lrm_ros.data.lite_data import LiteExamples

    masks = {k: np.asarray(masks[k], bool) for k in KINDS}
    sel = {k: {c: getattr(ex, f"{k}_{c}")[masks[k]] for c in cols} for k, cols in _LITE_COLS.items()}
    used_f = np.unique(np.concatenate([
        sel["progress"]["frame"], sel["progress"]["first"][sel["progress"]["first"] >= 0],
        sel["completion"]["frame"], sel["completion"]["first"][sel["completion"]["first"] >= 0],
        sel["contrastive"]["prev"], sel["contrastive"]["cur"]]).astype(np.int64))
    used_i = np.unique(np.concatenate([sel[k]["instr"] for k in KINDS])).astype(np.int64)
    fmap = np.full(ex.num_frames, -1, np.int64)
    fmap[used_f] = np.arange(used_f.size)
    imap = np.full(len(ex.instructions), -1, np.int64)
    imap[used_i] = np.arange(used_i.size)
    kw = {}
    for k, cols in sel.items():
        for c, v in cols.items():
            if c in ("frame", "prev", "cur"):
                v = fmap[v]
            elif c == "first":
                v = np.where(v >= 0, fmap[np.maximum(v, 0)], -1)
            elif c == "instr":
                v = imap[v]
            kw[f"{k}_{c}"] = v
    lite = LiteExamples(
        instructions=[ex.instructions[i] for i in used_i], tasks=list(ex.tasks),
        frames=None if ex.frames is None else ex.frames[used_f],
        features=None if ex.features is None else ex.features[used_f], **kw)
    return lite, used_i


# ---------------------------------------------------------------------- building
class _Builder:
    def __init__(self, cfg: LabelConfig):
        self.cfg = cfg
        self.frames: List[np.ndarray] = []
        self.tasks: List[str] = []
        self.instructions: List[str] = []
        self.instruction_task: List[int] = []
        self.rows: Dict[str, List[tuple]] = {k: [] for k in KINDS}
        self.shape: Optional[tuple] = None

    def task_id(self, task: str) -> int:
        if task not in self.tasks:
            self.tasks.append(task)
        return self.tasks.index(task)

    def instr_id(self, text: str, task: str) -> int:
        key = (text, self.task_id(task))
        for i, k in enumerate(zip(self.instructions, self.instruction_task)):
            if k == key:
                return i
        self.instructions.append(text)
        self.instruction_task.append(key[1])
        return len(self.instructions) - 1

    def add_frames(self, ep, ticks: Sequence[int], task: int) -> Dict[int, int]:
        out = {}
        for t in sorted(set(int(t) for t in ticks)):
            img = np.asarray(ep.frames[t])
            if self.cfg.image_size is not None:
                from lrm_ros.vision.image import resize_center_crop

                img = resize_center_crop(img, *self.cfg.image_size)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"episode {ep.episode} of {ep.task!r}: frames must be (H, W, 3) uint8, "
                                 f"got {img.shape} {img.dtype}")
            if self.shape is None:
                self.shape = img.shape
            elif img.shape != self.shape:
                raise ValueError(
                    f"episode {ep.episode} of {ep.task!r} has {img.shape[1]}x{img.shape[0]} frames but earlier "
                    f"episodes {self.shape[1]}x{self.shape[0]}: set LabelConfig.image_size to resize them")
            out[t] = len(self.frames)
            self.frames.append(np.ascontiguousarray(img))
        return out


def _ep_task(ep) -> str:
    return ep.task or ep.instruction or "unknown"


def build_labelled(episodes: Sequence, failures: Sequence = (),
                   config: Optional[LabelConfig] = None) -> LabelledExamples:
    """Labelled examples from ``episodes`` (successful demonstrations) and ``failures``
    (failed rollouts, e.g. from :mod:`lrm_ros.data.failures`). Episodes are
    :class:`lrm_ros.bags.reader.Episode`-like (``frames``, ``task``, ``instruction``,
    ``successes``, ``episode``); an episode in ``episodes`` that did not end in success is
    treated as a failure (counted in ``meta["unsuccessful_demos"]``)."""
    cfg = config or LabelConfig()
    rng = np.random.default_rng(cfg.seed)
    b = _Builder(cfg)
    succ, fail = [], list(failures)
    unsuccessful = 0
    for ep in episodes:
        if bool(np.asarray(ep.successes)[-1]) if len(ep.successes) else False:
            succ.append(ep)
        else:
            unsuccessful += 1
            fail.append(ep)
    too_short = 0
    # instruction table: every task's own instruction, plus extras (for cross-task negatives)
    for ep in list(succ) + list(fail):
        b.instr_id(ep.instruction, _ep_task(ep))
    for task, text in cfg.extra_instructions:
        b.instr_id(text, task)

    P, C, X = b.rows["progress"], b.rows["completion"], b.rows["contrastive"]
    S = _SRC
    for ep in succ:
        T = int(len(ep.frames))
        if T < max(2, cfg.min_success_ticks):   # no temporal signal in it
            too_short += 1
            continue
        task_name = _ep_task(ep)
        task = b.task_id(task_name)
        instr = b.instr_id(ep.instruction, task_name)
        last = T - 1
        K = cfg.contrastive_gap
        base = list(range(0, T, cfg.frame_stride))
        done_from = max(1, T - cfg.done_ticks)   # tick 0 is never "done"
        m = int(round(cfg.truncate_fraction * last))
        trunc = [t for t in range(max(1, m - cfg.done_ticks + 1), m + 1)
                 if cfg.truncated and t < done_from]   # the truncated clip's last frames
        ticks = sorted(set(base) | set(range(done_from, T)) | {t + K for t in base if t + K < T}
                       | set(trunc))
        idx = b.add_frames(ep, ticks, task)
        first = idx[0]
        for t in ticks:
            P.append((idx[t], first, instr, t / last, 1.0, task, S["success"]))
            C.append((idx[t], first, instr, float(t >= done_from), 1.0, task, S["success"]))
        if cfg.reversed:   # the reversed clip starts at the done frame; its end is the start
            for t in ticks:
                P.append((idx[t], idx[last], instr, t / last, cfg.reversed_weight, task, S["reversed"]))
            for t in ticks:
                if t < cfg.done_ticks:
                    C.append((idx[t], idx[last], instr, 0.0, 1.0, task, S["reversed"]))
        for t in trunc:
            C.append((idx[t], first, instr, 0.0, 1.0, task, S["truncated"]))
        # contrastive pairs
        pairs = [(t, t + K) for t in ticks if t + K in idx]
        for a in [t for t in ticks if t in set(base)]:
            for _ in range(cfg.random_gap_pairs):
                cands = [t for t in ticks if abs(t - a) >= cfg.min_random_gap]
                if cands:
                    o = int(cands[rng.integers(len(cands))])
                    pairs.append((min(a, o), max(a, o)))
        for e, l in dict.fromkeys(pairs):
            X.append((idx[e], idx[l], instr, 1.0, 1.0, task, l - e, S["success"]))
            if cfg.both_orders or cfg.reversed:
                X.append((idx[l], idx[e], instr, 0.0, 1.0, task, e - l, S["reversed"]))
        # cross-task negatives: this task's frames with another task's instruction
        if cfg.cross_task and cfg.cross_task_per_episode:
            others = [i for i, k in enumerate(b.instruction_task) if k != task]
            if others:
                n = min(cfg.cross_task_per_episode, len(ticks))
                picks = [last] + [int(t) for t in rng.choice(ticks[:-1], size=n - 1, replace=False)]
                for t in picks:
                    o = others[int(rng.integers(len(others)))]
                    P.append((idx[t], first, o, 0.0, 1.0, task, S["cross_task"]))
                    C.append((idx[t], first, o, 0.0, 1.0, task, S["cross_task"]))
    for ep in fail:
        T = int(len(ep.frames))
        if T < 1:
            too_short += 1
            continue
        task_name = _ep_task(ep)
        task = b.task_id(task_name)
        instr = b.instr_id(ep.instruction, task_name)
        ticks = sorted(set(range(0, T, cfg.frame_stride)) | {T - 1})
        idx = b.add_frames(ep, ticks, task)
        succ_flags = np.asarray(ep.successes, bool)
        for t in ticks:
            label = float(succ_flags[t]) if t < succ_flags.size else 0.0
            C.append((idx[t], idx[0], instr, label, 1.0, task, S["failure"]))

    from lrm_ros.data.lite_data import LiteExamples

    cols: Dict[str, np.ndarray] = {}
    for kind in KINDS:
        names = _LITE_COLS[kind] + _EXTRA_COLS[kind]
        rows = b.rows[kind]
        for j, c in enumerate(names):
            cols[f"{kind}_{c}"] = np.array([r[j] for r in rows]) if rows else np.zeros(0)
    if b.frames:
        frames = np.stack(b.frames)
    else:
        hw = (cfg.image_size[1], cfg.image_size[0]) if cfg.image_size else (1, 1)
        frames = np.zeros((0,) + hw + (3,), np.uint8)
    if cfg.balance_completion and b.rows["completion"]:
        lab = cols["completion_label"]
        pos = lab >= 0.5
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos and n_neg:   # each class weighs half of the total
            cols["completion_weight"] = cols["completion_weight"] * np.where(
                pos, lab.size / (2.0 * n_pos), lab.size / (2.0 * n_neg))
    lite = LiteExamples(instructions=b.instructions, tasks=b.tasks, frames=frames,
                        **{f"{k}_{c}": cols[f"{k}_{c}"] for k in KINDS for c in _LITE_COLS[k]})
    meta = {"config": dict(cfg.__dict__), "success_episodes": len(succ), "failure_episodes": len(fail),
            "unsuccessful_demos": unsuccessful, "skipped_too_short": too_short}
    return LabelledExamples(
        lite=lite, instruction_task=np.array(b.instruction_task, np.int64),
        progress_source=cols["progress_source"].astype(np.int64),
        completion_source=cols["completion_source"].astype(np.int64),
        contrastive_source=cols["contrastive_source"].astype(np.int64),
        contrastive_gap=cols["contrastive_gap"].astype(np.int64), meta=meta)


def build_examples(episodes: Sequence, failures: Sequence = (),
                   config: Optional[LabelConfig] = None) -> "LiteExamples":
    """:func:`build_labelled` without the provenance: the LiteExamples trainers read."""
    return build_labelled(episodes, failures, config).lite


def instruction_owner(ex: "LiteExamples") -> np.ndarray:
    """(I,) the task each instruction of a LiteExamples belongs to, inferred from the
    contrastive examples (which always pair a task's frames with its own instruction here);
    else the task it is most used with; -1 when unused."""
    out = np.full(len(ex.instructions), -1, np.int64)
    for i in range(len(ex.instructions)):
        t = ex.contrastive_task[ex.contrastive_instr == i]
        if t.size == 0:
            t = np.concatenate([getattr(ex, f"{k}_task")[getattr(ex, f"{k}_instr") == i] for k in KINDS])
        if t.size:
            out[i] = int(np.bincount(t).argmax())
    return out


def split_by_task(examples, test_tasks: Sequence[str]):
    """(train, test) by task, for generalisation to unseen tasks; works on
    :class:`LabelledExamples` (returns two of them) and on LiteExamples (two LiteExamples).

    test: every example whose frames come from a test task. train: every example whose
    frames come from another task *and* whose instruction is not a test task's (a
    cross-task negative showing a test task's instruction would leak it). Frame and
    instruction tables are compacted: neither side carries the other's frames.
    """
    labelled = isinstance(examples, LabelledExamples)
    lite = examples.lite if labelled else examples
    test_tasks = list(dict.fromkeys(test_tasks))
    unknown = [t for t in test_tasks if t not in lite.tasks]
    if unknown:
        raise ValueError(f"split_by_task: unknown task(s) {unknown}; the examples have {lite.tasks}")
    test_ids = np.array([lite.tasks.index(t) for t in test_tasks], np.int64)
    owner = examples.instruction_task if labelled else instruction_owner(lite)
    instr_is_test = np.isin(owner, test_ids)
    train_m, test_m = {}, {}
    for k in KINDS:
        in_test = np.isin(getattr(lite, f"{k}_task"), test_ids)
        test_m[k] = in_test
        train_m[k] = ~in_test & ~instr_is_test[getattr(lite, f"{k}_instr")]
    if labelled:
        return examples.subset(train_m), examples.subset(test_m)
    return _compact(lite, train_m)[0], _compact(lite, test_m)[0]
