"""Offline evaluation of a reward backend on recorded episodes (demo and failure bags).

Every episode is replayed through the very :class:`~lrm_ros.rewards.hold.IntervalHold` the
reward node uses online, so the backend sees exactly the queries it would see live: one at
every K-th tick and at the terminal tick, with the current frame, the frame of the previous
query point, the episode's first frame and the query-point frames so far (each only if the
backend ``needs`` it), and for the oracle backend the episode's normalized dense reward at
that tick. Queries are scored with ``score_batch`` in batches (interleaved across episodes, in
tick order within each, so per-episode caches such as TOPReward's work as online).

Metrics (per task and overall; lrm_ros.evaluation.metrics):
  voc                    mean per-episode VOC (Spearman of the value vs tick) on successful
                         episodes; ``voc_minmax`` on TOPReward's per-episode min-max normalised
                         values (rank-invariant, so equal to ``voc`` unless values are constant);
  completion_auc         ROC-AUC of the per-episode final completion score (the final query's
                         ``completion``, else its ``value``) for success vs failure episodes. It
                         is, by definition (Mann-Whitney), the fraction of (success, failure)
                         episode pairs whose success scores higher (ties 0.5): the former
                         episode-level ``pairwise_accuracy`` was this same number, so it is gone;
  pairwise_accuracy      mean per-episode order accuracy on successful episodes: of all pairs of
                         query points (earlier, later), the fraction whose later value is higher
                         (ties 0.5; metrics.order_accuracy). 0.5 = no order, 1 = never falls;
  contrastive_accuracy   direction accuracy of the contrastive answers: forward queries of
                         successful episodes (true answer +1) and the same episodes replayed
                         time-reversed (true answer -1); only for backends that answer it;
  pearson_oracle         mean per-episode Pearson of the value with the oracle dense reward;
  progress_mae, progress_acc_0.1, progress_acc_0.2
                         the backend's ``progress`` estimate vs t / (T-1) over the queries of
                         successful episodes (TOPReward: also on min-max normalised values).
                         Only real progress estimates count: a backend whose signal has none
                         (e.g. contrastive, whose value is a -1/0/+1 answer) gets null, not an
                         error of its value against t / (T-1).
Undefined metrics are null in metrics.json with the reason under ``notes``. Episodes without
any valid score (e.g. the oracle backend on a task without a dense reward: PlugCharger,
StackPyramid) count in ``n_episodes`` but in no other metric: ``n_unscored`` and the report's
``left_out`` say how many and why; ``n_no_dense_reward`` counts the episodes that have no
oracle dense reward (left out of ``pearson_oracle`` whatever the backend).

Output: OUT/metrics.json, OUT/<task>.png (progress traces with thumbnails), OUT/report.html.

CLI: python -m lrm_ros.evaluation.evaluate --bags data/demos data/failures --backend oracle --out eval/oracle
"""
from __future__ import annotations

import argparse
import html
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from lrm_ros.evaluation import metrics as M
from lrm_ros.rewards.hold import DEFAULT_INTERVAL, HoldConfig, IntervalHold
from lrm_ros.rewards.base import NAN, RewardBackend, RewardQuery, RewardResult

__all__ = ["EpisodeScores", "episode_queries", "score_episodes", "compute_metrics", "evaluate",
           "write_report", "main", "METRIC_KEYS"]

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


def _thumb(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    step = max(1, int(math.ceil(max(h, w) / THUMB)))
    return np.ascontiguousarray(frame[::step, ::step])


def episode_queries(ep: Any, env: str, interval: int, needs: Sequence[str],
                    max_frames: int = HoldConfig.max_frames, reverse: bool = False,
                    ended: bool = True) -> List[RewardQuery]:
    """The queries the online interval-hold makes for a recorded episode (ticks K, 2K, ...
    and the terminal tick). ``reverse`` replays the frames backwards in time; ``ended``
    False: the recording stops before the episode ended (no terminal query)."""
    hold = IntervalHold(HoldConfig(interval=interval, max_frames=max_frames), needs=frozenset(needs), env=env)
    hold.set_instruction(ep.instruction)
    frames = ep.frames[::-1] if reverse else ep.frames
    oracle = ep.normalized_dense_rewards[::-1] if reverse else ep.normalized_dense_rewards
    T = len(frames)
    out: List[RewardQuery] = []
    for i in range(T):
        stamp = int(ep.stamps_ns[i])
        out += hold.on_frame(stamp, np.array(frames[i]))   # a copy: never a view of the episode
        ready, _ = hold.on_tick(ep.episode, i, stamp, episode_start=(i == 0),
                                episode_end=(i == T - 1 and ended))
        out += ready
        out += hold.on_oracle(ep.episode, i, float(oracle[i]))
    return out


def score_episodes(backend: RewardBackend, work: List[Tuple[Any, List[RewardQuery]]],
                   batch_size: int = 0, progress: bool = True,
                   errors: Optional[Dict[str, str]] = None) -> Dict[Any, List[RewardResult]]:
    """Score each (key, queries) item; returns key -> results (same order as its queries).

    Batches interleave episodes (round robin) and keep each episode's queries in tick order;
    ``backend.end_episode`` is called once an episode is done. A batch whose ``score_batch``
    raises yields invalid results (reason recorded in ``errors``)."""
    from tqdm.auto import tqdm

    bs = max(1, int(batch_size or getattr(backend, "max_batch", 8) or 8))
    results: Dict[Any, List[RewardResult]] = {k: [] for k, _ in work}
    length = {k: len(q) for k, q in work}
    pos = {k: 0 for k, _ in work}
    queue = [(k, q) for k, q in work if q]
    total = sum(length.values())
    bar = tqdm(total=total, desc=f"scoring ({backend.name})", unit="query", disable=not progress)
    failures = 0
    try:
        while queue:
            # round robin over the episodes: a batch mixes episodes, each in tick order
            batch: List[Tuple[Any, RewardQuery]] = []
            while len(batch) < bs and queue:
                for k, q in list(queue):
                    if len(batch) >= bs:
                        break
                    batch.append((k, q[pos[k]]))
                    pos[k] += 1
                    if pos[k] >= len(q):
                        queue.remove((k, q))
            try:
                res = backend.score_batch([q for _, q in batch])
                if len(res) != len(batch):
                    raise RuntimeError(f"score_batch returned {len(res)} results for {len(batch)} queries")
            except Exception as e:   # noqa: BLE001 - a backend failure is counted, not fatal
                failures += 1
                if errors is not None:
                    errors.setdefault(f"backend {backend.name}", f"{type(e).__name__}: {e}")
                res = [RewardResult.invalid_result("backend_error", message=f"{type(e).__name__}: {e}")
                       for _ in batch]
            for (k, q), r in zip(batch, res):
                results[k].append(r)
                if len(results[k]) == length[k]:
                    backend.end_episode(q.env, q.episode)
            bar.update(len(batch))
    finally:
        bar.close()
    if failures and errors is not None:
        errors[f"backend {backend.name}"] += f" ({failures} batch(es) failed)"
    return results


@dataclass
class _EpInfo:
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


def _collect(ep: _EpInfo, queries: List[RewardQuery], results: List[RewardResult],
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
    s.thumbs = [_thumb(q.frame) for q in queries]
    for r in results:
        if not r.valid:
            for reason in r.invalid or ("invalid",):
                reason = str(reason).split(" '", 1)[0]   # drop the quoted model answer: count kinds
                s.invalid_reasons[reason] = s.invalid_reasons.get(reason, 0) + 1
    return s


# ------------------------------------------------------------------------------ metrics
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
                               f"left out of every metric ({_left_out_text(left_out(fwd))})")
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


def _left_out_text(lo: Dict[str, Dict[str, Any]]) -> str:
    parts = []
    for task, t in sorted(lo.items()):
        why = ", ".join(f"{r} x{n}" for r, n in sorted(t["reasons"].items())) or "no queries"
        if t["no_dense_reward"]:
            why += f"; {t['no_dense_reward']} without a dense reward (the task has none)"
        parts.append(f"{task}: {t['episodes']} ({why})")
    return "; ".join(parts)


# ------------------------------------------------------------------------------ evaluation
def evaluate(bags: Sequence[Path | str], backend: RewardBackend, out_dir: Path | str, *, interval: int = DEFAULT_INTERVAL,
             batch_size: int = 0, reversed_contrastive: bool = True, max_episodes: int = 0,
             plot_episodes: int = 4, progress: bool = True, backend_label: str = "") -> Dict[str, Any]:
    """Score all episodes of ``bags`` (bags or folders of bags) with ``backend``; write
    metrics.json, one PNG per task and report.html into ``out_dir``. Returns the metrics
    dict. Unreadable bags are reported under ``errors`` and skipped (partial results)."""
    from lrm_ros.bags.reader import BagFormatError, read_episodes
    from lrm_ros.data.failures import find_bags

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, errors = find_bags(bags)
    labels = bag_labels(paths)
    needs = tuple(sorted(getattr(backend, "needs", ())))
    # Queries are built bag by bag and keep copies of only the frames they show, so the
    # episodes' full frame arrays are freed before scoring (256x256 demos: ~200 kB a tick).
    # Reversed replays (contrastive direction check) are built for successful episodes when
    # the backend looks at the previous frame, and scored only if it answers contrastive.
    infos: List[_EpInfo] = []
    fwd_work: List[Tuple[Any, List[RewardQuery]]] = []
    rev_work: List[Tuple[Any, List[RewardQuery]]] = []
    want_rev = reversed_contrastive and "previous_frame" in needs
    for b in paths:
        try:
            eps = read_episodes(b)
        except FileNotFoundError as e:
            errors[str(b)] = f"missing: {e}"
            continue
        except BagFormatError as e:
            errors[str(b)] = f"unreadable: {e}"
            continue
        except Exception as e:   # noqa: BLE001 - anything else a damaged bag may raise
            errors[str(b)] = f"unreadable: {type(e).__name__}: {e}"
            continue
        if not eps:
            errors[str(b)] = "no episodes in the bag"
        sources = episode_sources(b)
        for ep in eps[:max_episodes or None]:
            i = len(infos)
            infos.append(_EpInfo(bag=str(b), task=ep.task or "unknown", episode=int(ep.episode),
                                 instruction=ep.instruction, success=bool(ep.success),
                                 num_ticks=int(len(ep.frames)),
                                 oracle=np.asarray(ep.normalized_dense_rewards, np.float64).copy(),
                                 source=sources(int(ep.episode)), bag_label=labels[b]))
            fwd_work.append(((i, False), episode_queries(ep, f"eval{i}", interval, needs)))
            if want_rev and ep.success:
                rev_work.append(((i, True), episode_queries(ep, f"eval{i}r", interval, needs, reverse=True)))
        del eps
    t_read = time.perf_counter() - t_start

    t0 = time.perf_counter()
    res = score_episodes(backend, fwd_work, batch_size, progress, errors)
    scored = [_collect(infos[i], q, res[(i, False)], False) for (i, _), q in fwd_work]
    if rev_work and any(np.isfinite(s.contrastive).any() for s in scored):
        rres = score_episodes(backend, rev_work, batch_size, progress, errors)
        scored += [_collect(infos[i], q, rres[(i, True)], True) for (i, _), q in rev_work]
    t_score = time.perf_counter() - t0
    n_queries = sum(s.query_ticks.size for s in scored)

    minmax = getattr(backend, "name", "") == "topreward"
    overall, notes = compute_metrics(scored, minmax)
    per_task, task_notes = {}, {}
    for task in sorted({s.task for s in scored}):
        per_task[task], task_notes[task] = compute_metrics([s for s in scored if s.task == task], minmax)
    report: Dict[str, Any] = {
        "backend": getattr(backend, "name", ""), "model_id": getattr(backend, "model_id", ""),
        "label": backend_label, "interval": interval, "needs": list(needs),
        "bags": [str(p) for p in paths], "errors": errors,
        "overall": overall, "per_task": per_task, "notes": {"overall": notes, "per_task": task_notes},
        "left_out": left_out(scored),
        "episodes": [_episode_json(s) for s in scored],
        "timing": {"read_s": round(t_read, 3), "score_s": round(t_score, 3), "queries": n_queries,
                   "ms_per_query": round(1000 * t_score / n_queries, 3) if n_queries else None},
    }
    t0 = time.perf_counter()
    report["plot_titles"] = {}
    report["plots"] = plot_tasks(scored, out_dir, plot_episodes, titles=report["plot_titles"])
    report["timing"]["plot_s"] = round(time.perf_counter() - t0, 3)
    report["timing"]["total_s"] = round(time.perf_counter() - t_start, 3)
    (out_dir / "metrics.json").write_text(json.dumps(_clean(report), indent=2))
    write_report(report, out_dir)
    return report


def bag_labels(paths: Sequence[Path]) -> Dict[Path, str]:
    """For each bag, the shortest tail of its path (at least ``folder/bag``) that no other
    bag of ``paths`` shares, so that data/demos/PickCube-v1 and data/failures/PickCube-v1
    (or run1/demos/X and run2/demos/X) are told apart."""
    parts = {p: Path(p).resolve().parts for p in paths}
    out: Dict[Path, str] = {}
    for p, ps in parts.items():
        n = min(2, len(ps))
        while n < len(ps) and any(q != p and qs[-n:] == ps[-n:] for q, qs in parts.items()):
            n += 1
        out[p] = "/".join(ps[-n:]).lstrip("/") or str(p)
    return out


def episode_sources(bag: Path):
    """A function episode -> what the episode is, from the bag's own metadata and its
    folder's summary.json: "demo", "failure (noise)", "failure", or the bag's recorded source."""
    from lrm_ros.data.failures import bag_info

    info = bag_info(Path(bag))
    fmt = str(info.get("format") or "")
    kinds = info.get("episode_kinds") or {}

    def source(episode: int) -> str:
        if fmt.startswith("lrm_ros.demos"):
            return "demo"
        if fmt.startswith("lrm_ros.failures"):
            kind = kinds.get(episode)
            return f"failure ({kind})" if kind else "failure"
        return str(info.get("source") or "recorded")
    return source


def _episode_json(s: EpisodeScores) -> Dict[str, Any]:
    d = {"bag": s.bag, "task": s.task, "episode": s.episode, "success": s.success, "reversed": s.reversed,
         "source": s.source, "bag_label": s.bag_label, "has_dense_reward": s.has_dense_reward,
         "num_ticks": s.num_ticks, "query_ticks": s.query_ticks.tolist(), "value": s.value.tolist(),
         "progress": s.progress.tolist(), "completion": s.completion.tolist(),
         "contrastive": s.contrastive.tolist(), "oracle": s.oracle.tolist(),
         "final_completion": s.final_completion, "invalid": s.invalid_reasons}
    if not s.reversed:
        d["voc"] = M.voc(s.value, s.query_ticks) if s.success else None
        d["pairwise_accuracy"] = M.order_accuracy(s.value, s.query_ticks) if s.success else None
        d["pearson_oracle"] = M.pearson(s.value, s.oracle)
    return d


def _clean(x):
    """NaN/inf -> None, numpy scalars -> Python: metrics.json is strict JSON."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# ------------------------------------------------------------------------------ plots / html
def _safe_name(task: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in task) or "task"


def episode_title(s: EpisodeScores) -> str:
    """A plot title that names the episode's bag and what it is (demo / failure kind), so a
    demo bag and a failure bag of the same task are told apart."""
    what = s.source or "episode"
    return (f"{s.task} ep {s.episode}: {what}, {'success' if s.success else 'failure'}, {s.num_ticks} ticks"
            f"  [{s.bag_label or Path(s.bag).name}]")


def plot_tasks(scored: Sequence[EpisodeScores], out_dir: Path, per_task: int = 4,
               titles: Optional[Dict[str, List[str]]] = None) -> Dict[str, str]:
    """One PNG per task: up to ``per_task`` episodes (successes first, then failures), each
    the predicted value (and progress, completion when given) over ticks, with t/(T-1) and
    the oracle dense reward, and frame thumbnails at the query points. Returns task -> file;
    ``titles`` (if given) receives task -> the subplot titles."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    files: Dict[str, str] = {}
    fwd = [s for s in scored if not s.reversed]
    for task in sorted({s.task for s in fwd}):
        eps = [s for s in fwd if s.task == task]
        succ, fail = [s for s in eps if s.success], [s for s in eps if not s.success]
        n_fail = min(len(fail), max(1, per_task // 3)) if fail else 0
        chosen = succ[:max(0, per_task - n_fail)] + fail[:n_fail]
        chosen = chosen or eps[:per_task]
        fig, axes = plt.subplots(len(chosen), 1, figsize=(10, 3.1 * len(chosen)), squeeze=False)
        for ax, s in zip(axes[:, 0], chosen):
            T = s.num_ticks
            if s.oracle_ticks.size and np.isfinite(s.oracle_ticks).any():
                ax.plot(np.arange(T), s.oracle_ticks, color="0.6", lw=1.2, label="oracle (norm. dense)")
            if s.success:
                ax.plot([0, T - 1], [0, 1], color="tab:green", ls="--", lw=1.2, label="t / (T-1)")
            ax.plot(s.query_ticks, s.value, "o-", color="tab:blue", lw=1.8, ms=4, label="predicted value")
            if np.isfinite(s.progress).any() and not np.allclose(s.progress, s.value, equal_nan=True):
                ax.plot(s.query_ticks, s.progress, "s:", color="tab:orange", ms=3, label="progress")
            if np.isfinite(s.completion).any():
                ax.plot(s.query_ticks, s.completion, "^", color="tab:red", ms=4, label="completion")
            ax.set_xlim(-1, max(T, 2))
            ax.set_ylim(-0.05, 1.05)
            ax.set_xlabel("tick")
            title = episode_title(s)
            if titles is not None:
                titles.setdefault(task, []).append(title)
            ax.set_title(title, fontsize=9, pad=34)
            ax.grid(alpha=0.3)
            last_x = -1e9
            for t, th in zip(s.query_ticks, s.thumbs):
                if t - last_x < max(T, 2) / 14.0:     # no overlapping thumbnails
                    continue
                last_x = t
                zoom = 26.0 / max(th.shape[:2])
                ab = AnnotationBbox(OffsetImage(th, zoom=zoom), (t, 1.0), xycoords=("data", "axes fraction"),
                                    box_alignment=(0.5, -0.05), frameon=False, annotation_clip=False)
                ax.add_artist(ab)
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
        fig.tight_layout()
        name = f"{_safe_name(task)}.png"
        fig.savefig(out_dir / name, dpi=80)
        plt.close(fig)
        files[task] = name
    return files


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "&ndash;"
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def write_report(report: Dict[str, Any], out_dir: Path) -> Path:
    """report.html: a metrics table (overall + per task), notes, errors and the plots."""
    cols = ["n_episodes", "n_success", "n_failure", "n_queries", *METRIC_KEYS, "invalid_fraction"]
    rows = [("overall", report["overall"])] + sorted(report["per_task"].items())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["group", *cols])
    body = "".join("<tr><td>" + html.escape(name) + "</td>" + "".join(f"<td>{_fmt(m.get(c))}</td>" for c in cols)
                   + "</tr>" for name, m in rows)
    notes = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                    for k, v in report["notes"]["overall"].items())
    errs = "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(v)}</li>" for k, v in report["errors"].items())
    plots = "".join(f"<h3>{html.escape(t)}</h3><img src=\"{html.escape(f)}\" alt=\"{html.escape(t)}\">"
                    for t, f in report.get("plots", {}).items())
    tm = report["timing"]
    doc = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>lrm_ros evaluation: {html.escape(report['backend'])}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #bbb;padding:3px 7px;text-align:right}} td:first-child{{text-align:left}}
img{{max-width:100%;border:1px solid #ddd}}</style></head><body>
<h1>Reward evaluation: {html.escape(report['backend'])} <small>({html.escape(str(report['model_id']))})</small></h1>
<p>interval K = {report['interval']}; {len(report['bags'])} bag(s); {tm['queries']} queries scored in
{tm['score_s']} s; raw numbers in <a href="metrics.json">metrics.json</a>.</p>
<table><tr>{head}</tr>{body}</table>
{'<h2>Undefined metrics</h2><ul>' + notes + '</ul>' if notes else ''}
{'<h2>Errors</h2><ul>' + errs + '</ul>' if errs else ''}
<h2>Progress traces</h2>{plots or '<p>no episodes</p>'}
</body></html>
"""
    path = Path(out_dir) / "report.html"
    path.write_text(doc)
    return path


# ------------------------------------------------------------------------------ CLI
def _parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def backend_from_args(name: str, model_path: str = "", signal: str = "", sets: Sequence[str] = ()):
    """A backend from command-line options (`--set KEY=VALUE` takes JSON values); ValueError
    with the reason when the options or the backend are bad."""
    from lrm_ros.rewards import make_backend
    config: Dict[str, Any] = {}
    if model_path:
        config["model_path"] = model_path
    if signal:
        config["signal"] = signal
    for kv in sets:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise ValueError(f"--set takes KEY=VALUE, got {kv!r}")
        config[k] = _parse_value(v)
    try:
        return make_backend(name, **config)
    except (ValueError, TypeError, FileNotFoundError, OSError, ImportError) as e:
        raise ValueError(f"cannot create the {name!r} backend with {config}: {type(e).__name__}: {e}") from None


def add_backend_arguments(p: argparse.ArgumentParser, backend_help: str, **backend_kwargs) -> None:
    """--backend, --model-path, --signal, --set: what `backend_from_args` takes."""
    p.add_argument("--backend", help=backend_help, **backend_kwargs)
    p.add_argument("--model-path", default="", help="model checkpoint / directory for the backend")
    p.add_argument("--signal", default="", help="signal for backends that have one (vlm: tri, progress, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="other backend settings (JSON values), e.g. --set device=\"cuda\"")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lrm_ros.evaluation.evaluate",
                                description="Evaluate a reward backend offline on episode bags.")
    p.add_argument("--bags", nargs="+", required=True, help="bags, or folders of bags (e.g. data/demos)")
    add_backend_arguments(p, "oracle | lite | vlm | topreward (registry name)", required=True)
    p.add_argument("--interval", type=int, default=DEFAULT_INTERVAL, help="K: query every K ticks (as online)")
    p.add_argument("--batch-size", type=int, default=0, help="queries per score_batch (0: the backend's max)")
    p.add_argument("--max-episodes", type=int, default=0, help="per bag (0: all)")
    p.add_argument("--plot-episodes", type=int, default=4, help="episodes plotted per task")
    p.add_argument("--no-reversed", action="store_true", help="skip the time-reversed contrastive replays")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.interval < 1:
        print("error: --interval must be >= 1", file=sys.stderr)
        return 2
    try:
        backend = backend_from_args(a.backend, a.model_path, a.signal, a.set)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        report = evaluate(a.bags, backend, a.out, interval=a.interval, batch_size=a.batch_size,
                          reversed_contrastive=not a.no_reversed, max_episodes=a.max_episodes,
                          plot_episodes=a.plot_episodes, progress=not a.no_progress)
    finally:
        backend.close()
    for k, v in report["errors"].items():
        print(f"error: {k}: {v}", file=sys.stderr)
    o = report["overall"]
    print(f"{report['backend']}: {o['n_episodes']} episodes ({o['n_success']} success, {o['n_failure']} failure), "
          f"{o['n_queries']} queries")
    for k in METRIC_KEYS:
        v = o.get(k)
        if v is not None and math.isfinite(v):
            print(f"  {k:22s} {v:.3f}")
        elif k in report["notes"]["overall"] and k != "voc_minmax":
            print(f"  {k:22s} -      ({report['notes']['overall'][k]})")
    if report["left_out"]:
        print(f"note: {o['n_unscored']} of {o['n_episodes']} episodes have no valid score and are left out "
              f"of every metric above: {_left_out_text(report['left_out'])}")
    if o["n_no_dense_reward"]:
        tasks = sorted({e["task"] for e in report["episodes"] if not e["reversed"] and not e["has_dense_reward"]})
        print(f"note: {o['n_no_dense_reward']} of {o['n_episodes']} episodes have no dense reward "
              f"({', '.join(tasks)}: the task has none): left out of pearson_oracle")
    print(f"report: {a.out / 'report.html'}  metrics: {a.out / 'metrics.json'}")
    if o["n_episodes"] == 0:
        print("error: no episode could be evaluated", file=sys.stderr)
        return 2
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
