"""What `lrm-ros eval` writes besides the numbers: strict JSON, per-task plots of the reward
traces with frame thumbnails, and report.html."""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from lrm_ros.evaluation import metrics as M
from lrm_ros.evaluation.scores import METRIC_KEYS, EpisodeScores

__all__ = ["episode_json", "episode_title", "html_cell", "plot_tasks", "strict_json", "write_report"]


def episode_json(s: EpisodeScores) -> Dict[str, Any]:
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


def strict_json(x):
    """NaN/inf -> None, numpy scalars -> Python: metrics.json is strict JSON."""
    if isinstance(x, dict):
        return {str(k): strict_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [strict_json(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def safe_name(task: str) -> str:
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
        name = f"{safe_name(task)}.png"
        fig.savefig(out_dir / name, dpi=80)
        plt.close(fig)
        files[task] = name
    return files


def html_cell(v) -> str:
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
    body = "".join("<tr><td>" + html.escape(name) + "</td>" + "".join(f"<td>{html_cell(m.get(c))}</td>" for c in cols)
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
