"""What a backend said about each episode, and the metrics over groups of episodes.

:class:`EpisodeScores` holds one episode's query ticks and the backend's answers;
:func:`compute_metrics` turns a group of them into the metrics `lrm-ros eval` and
`lrm-ros audit` report (definitions in lrm_ros.evaluation.evaluate's docstring).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from lrm_ros.evaluation import metrics as M
from lrm_ros.rewards.base import NAN, RewardQuery, RewardResult

__all__ = ["METRIC_KEYS", "EpisodeScores", "EpisodeInfo", "collect_scores", "compute_metrics", "left_out",
           "left_out_text", "thumbnail"]

METRIC_KEYS = ("voc", "voc_minmax", "completion_auc", "pairwise_accuracy", "contrastive_accuracy",
               "pearson_oracle", "progress_mae", "progress_acc_0.1", "progress_acc_0.2")
THUMB = 32   # thumbnail side (pixels) kept per query point for the plots


@dataclass
class EpisodeScores:
    """One episode's queries and the backend's answers (arrays over query points)."""
    bag: str
    task: str
    episode: int
    instruction: str
    success: bool
    num_ticks: int
    reversed: bool = False
    source: str = ""          # what the bag is: "demo", "failure (noise)", ... (plot titles)
    bag_label: str = ""       # the shortest path suffix that tells the evaluated bags apart
    query_ticks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    value: np.ndarray = field(default_factory=lambda: np.zeros(0))
    progress: np.ndarray = field(default_factory=lambda: np.zeros(0))
    completion: np.ndarray = field(default_factory=lambda: np.zeros(0))
    contrastive: np.ndarray = field(default_factory=lambda: np.zeros(0))
    valid: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    oracle_ticks: np.ndarray = field(default_factory=lambda: np.zeros(0))   # (T,) normalized dense
    thumbs: List[np.ndarray] = field(default_factory=list)
    invalid_reasons: Dict[str, int] = field(default_factory=dict)

    @property
    def target(self) -> np.ndarray:
        """True progress t / (T-1) at the query ticks."""
        return self.query_ticks / max(1, self.num_ticks - 1)

    @property
    def oracle(self) -> np.ndarray:
        o = self.oracle_ticks
        return o[self.query_ticks] if o.size else np.full(self.query_ticks.size, NAN)

    @property
    def progress_pred(self) -> np.ndarray:
        """The backend's progress estimates (NaN where it gave none; never its ``value``,
        which may be a contrastive -1/0/+1 answer or a completion probability)."""
        return self.progress

    @property
    def scored(self) -> bool:
        """Whether any query of the episode got a valid score."""
        return bool(self.valid.any())

    @property
    def has_dense_reward(self) -> bool:
        return bool(self.oracle_ticks.size) and bool(np.isfinite(self.oracle_ticks).any())

    @property
    def final_completion(self) -> float:
        if not self.query_ticks.size:
            return NAN
        c = self.completion[-1]
        return float(c) if math.isfinite(c) else float(self.value[-1])


def thumbnail(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    step = max(1, int(math.ceil(max(h, w) / THUMB)))
    return np.ascontiguousarray(frame[::step, ::step])


@dataclass
class EpisodeInfo:
    """What the metrics need of an episode once its frames are dropped."""
    bag: str
    task: str
    episode: int
    instruction: str
    success: bool
    num_ticks: int
    oracle: np.ndarray
    source: str = ""
    bag_label: str = ""


def collect_scores(ep: EpisodeInfo, queries: List[RewardQuery], results: List[RewardResult],
             reverse: bool) -> EpisodeScores:
    s = EpisodeScores(bag=ep.bag, task=ep.task, episode=ep.episode, instruction=ep.instruction,
                      success=ep.success and not reverse, num_ticks=ep.num_ticks, reversed=reverse,
                      source=ep.source, bag_label=ep.bag_label)
    s.query_ticks = np.array([q.tick for q in queries], np.int64)
    get = lambda name: np.array([getattr(r, name) if r.valid else NAN for r in results], np.float64)  # noqa: E731
    s.value, s.progress = get("value"), get("progress")
    s.completion, s.contrastive = get("completion"), get("contrastive")
    s.valid = np.array([bool(r.valid) and math.isfinite(r.value) for r in results], bool)
    s.oracle_ticks = ep.oracle[::-1].copy() if reverse else ep.oracle
    s.thumbs = [thumbnail(q.frame) for q in queries]
    for r in results:
        if not r.valid:
            for reason in r.invalid or ("invalid",):
                reason = str(reason).split(" '", 1)[0]   # drop the quoted model answer: count kinds
                s.invalid_reasons[reason] = s.invalid_reasons.get(reason, 0) + 1
    return s


def compute_metrics(episodes: Sequence[EpisodeScores], minmax: bool = False) -> Tuple[Dict[str, float], Dict[str, str]]:
    """Metrics over a group of episodes (forward ones; reversed ones only feed the
    contrastive accuracy). Returns (metrics, notes: metric -> why it is NaN)."""
    from lrm_ros.rewards.topreward import minmax_normalize_episode

    fwd = [e for e in episodes if not e.reversed]
    rev = [e for e in episodes if e.reversed]
    succ = [e for e in fwd if e.success]
    fail = [e for e in fwd if not e.success]
    out: Dict[str, float] = {}
    notes: Dict[str, str] = {}

    def put(key: str, res) -> None:
        v, why = res
        out[key] = v
        if why:
            notes[key] = why

    vocs = [M.voc(e.value, e.query_ticks, return_reason=True) for e in succ]
    put("voc", M.nanmean([v for v, _ in vocs], return_reason=True))
    out["voc_episodes"] = int(sum(math.isfinite(v) for v, _ in vocs))   # episodes with a defined VOC
    if vocs and math.isnan(out["voc"]):
        notes["voc"] = "; ".join(sorted({w for _, w in vocs if w}))
    elif not succ:
        notes["voc"] = "no successful episodes"
    if minmax:
        mm = [M.voc(minmax_normalize_episode(e.value), e.query_ticks) for e in succ]
        put("voc_minmax", M.nanmean(mm, return_reason=True))
    else:
        out["voc_minmax"] = NAN
        notes["voc_minmax"] = "only for the topreward backend"
    scores = [e.final_completion for e in succ + fail]
    labels = [1] * len(succ) + [0] * len(fail)
    put("completion_auc", M.roc_auc(scores, labels, return_reason=True) if scores
        else (NAN, "no episodes"))
    orders = [M.order_accuracy(e.value, e.query_ticks, return_reason=True) for e in succ]
    put("pairwise_accuracy", M.nanmean([v for v, _ in orders], return_reason=True))
    if orders and math.isnan(out["pairwise_accuracy"]):
        notes["pairwise_accuracy"] = "; ".join(sorted({w for _, w in orders if w}))
    elif not succ:
        notes["pairwise_accuracy"] = "no successful episodes"
    signs, truth = [], []
    for e in succ + [r for r in rev]:
        c = e.contrastive
        if np.isfinite(c).any() or e.reversed:
            signs.extend(c.tolist())
            truth.extend([-1.0 if e.reversed else 1.0] * c.size)
    if signs and np.isfinite(signs).any():
        put("contrastive_accuracy", M.contrastive_accuracy(signs, truth, return_reason=True))
    else:
        out["contrastive_accuracy"] = NAN
        notes["contrastive_accuracy"] = "the backend gives no contrastive answers"
    pears = [M.pearson(e.value, e.oracle, return_reason=True) for e in fwd]
    put("pearson_oracle", M.nanmean([v for v, _ in pears], return_reason=True))
    if pears and math.isnan(out["pearson_oracle"]):
        notes["pearson_oracle"] = "; ".join(sorted({w for _, w in pears if w}))
    pred = np.concatenate([e.progress_pred for e in succ]) if succ else np.zeros(0)
    tgt = np.concatenate([e.target for e in succ]) if succ else np.zeros(0)
    put("progress_mae", M.progress_mae(pred, tgt, return_reason=True))
    put("progress_acc_0.1", M.accuracy_within(pred, tgt, 0.1, return_reason=True))
    put("progress_acc_0.2", M.accuracy_within(pred, tgt, 0.2, return_reason=True))
    if succ and not np.isfinite(pred).any() and any(e.valid.any() for e in succ):
        why = ("the backend gives no progress estimates (its signal has none, e.g. contrastive); "
               "its value is not a progress estimate")
        for key in ("progress_mae", "progress_acc_0.1", "progress_acc_0.2"):
            notes[key] = why
    if minmax and succ:
        pm = np.concatenate([minmax_normalize_episode(e.value) for e in succ])
        put("progress_mae_minmax", M.progress_mae(pm, tgt, return_reason=True))
        put("progress_acc_0.1_minmax", M.accuracy_within(pm, tgt, 0.1, return_reason=True))
        put("progress_acc_0.2_minmax", M.accuracy_within(pm, tgt, 0.2, return_reason=True))
    n_q = sum(e.query_ticks.size for e in fwd)
    out.update({"n_episodes": len(fwd), "n_success": len(succ), "n_failure": len(fail), "n_queries": n_q,
                "invalid_fraction": (float(sum((~e.valid).sum() for e in fwd)) / n_q) if n_q else NAN,
                "n_unscored": sum(not e.scored for e in fwd),
                "n_no_dense_reward": sum(not e.has_dense_reward for e in fwd)})
    if out["n_unscored"]:
        notes["n_unscored"] = (f"{out['n_unscored']} of {len(fwd)} episodes have no valid score and are "
                               f"left out of every metric ({left_out_text(left_out(fwd))})")
    if out["n_no_dense_reward"]:
        notes["n_no_dense_reward"] = (f"{out['n_no_dense_reward']} of {len(fwd)} episodes have no dense reward "
                                      "(the task has none): left out of pearson_oracle")
    return out, notes


def left_out(episodes: Sequence[EpisodeScores]) -> Dict[str, Dict[str, Any]]:
    """Per task: the forward episodes without any valid score (left out of every metric),
    with the reasons the backend gave and whether the bag has a dense reward."""
    out: Dict[str, Dict[str, Any]] = {}
    for e in episodes:
        if e.reversed or e.scored:
            continue
        t = out.setdefault(e.task, {"episodes": 0, "no_dense_reward": 0, "reasons": {}})
        t["episodes"] += 1
        t["no_dense_reward"] += int(not e.has_dense_reward)
        for reason, n in e.invalid_reasons.items():
            t["reasons"][reason] = t["reasons"].get(reason, 0) + n
    return out


def left_out_text(lo: Dict[str, Dict[str, Any]]) -> str:
    parts = []
    for task, t in sorted(lo.items()):
        why = ", ".join(f"{r} x{n}" for r, n in sorted(t["reasons"].items())) or "no queries"
        if t["no_dense_reward"]:
            why += f"; {t['no_dense_reward']} without a dense reward (the task has none)"
        parts.append(f"{task}: {t['episodes']} ({why})")
    return "; ".join(parts)
