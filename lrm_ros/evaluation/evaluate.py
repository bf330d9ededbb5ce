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
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from lrm_ros.evaluation.report import episode_json, plot_tasks, strict_json, write_report
from lrm_ros.evaluation.scores import (METRIC_KEYS, EpisodeInfo, collect_scores, compute_metrics, left_out,
                                       left_out_text)
from lrm_ros.rewards.base import RewardBackend, RewardQuery
from lrm_ros.rewards.hold import DEFAULT_INTERVAL
from lrm_ros.rewards.offline import episode_queries, score_episodes
from lrm_ros.rewards.options import add_backend_arguments, backend_from_args

__all__ = ["evaluate", "bag_labels", "episode_sources", "main"]


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
    infos: List[EpisodeInfo] = []
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
            infos.append(EpisodeInfo(bag=str(b), task=ep.task or "unknown", episode=int(ep.episode),
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
    scored = [collect_scores(infos[i], q, res[(i, False)], False) for (i, _), q in fwd_work]
    if rev_work and any(np.isfinite(s.contrastive).any() for s in scored):
        rres = score_episodes(backend, rev_work, batch_size, progress, errors)
        scored += [collect_scores(infos[i], q, rres[(i, True)], True) for (i, _), q in rev_work]
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
        "episodes": [episode_json(s) for s in scored],
        "timing": {"read_s": round(t_read, 3), "score_s": round(t_score, 3), "queries": n_queries,
                   "ms_per_query": round(1000 * t_score / n_queries, 3) if n_queries else None},
    }
    t0 = time.perf_counter()
    report["plot_titles"] = {}
    report["plots"] = plot_tasks(scored, out_dir, plot_episodes, titles=report["plot_titles"])
    report["timing"]["plot_s"] = round(time.perf_counter() - t0, 3)
    report["timing"]["total_s"] = round(time.perf_counter() - t_start, 3)
    (out_dir / "metrics.json").write_text(json.dumps(strict_json(report), indent=2))
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
              f"of every metric above: {left_out_text(report['left_out'])}")
    if o["n_no_dense_reward"]:
        tasks = sorted({e["task"] for e in report["episodes"] if not e["reversed"] and not e["has_dense_reward"]})
        print(f"note: {o['n_no_dense_reward']} of {o['n_episodes']} episodes have no dense reward "
              f"({', '.join(tasks)}: the task has none): left out of pearson_oracle")
    print(f"report: {a.out / 'report.html'}  metrics: {a.out / 'metrics.json'}")
    if o["n_episodes"] == 0:
        print("error: no episode could be evaluated", file=sys.stderr)
        return 2
    return 1 if report["errors"] else 0
