"""`lrm-ros audit`: what did the reward model say during a recorded run, and was it right?

For every episode of the given bags (any namespace, camera topic and image type; damaged
bags give what they can, see `lrm_ros.bags.load`) it puts side by side:
- the recorded rewards: `reward/held` as the online node published it, and its
  `reward/result` query values;
- a re-scoring with any backend (`--backend lite|vlm|topreward|oracle`), offline, through
  the real `IntervalHold` (the same queries and held values the online node gives);
- the labels: the simulator's oracle reward and success where the bag has them, else the
  episode's end reason.
It writes audit.json (metrics of each source with the evaluation command's definitions, and
per-episode disagreement), one plot per episode (reward traces with query points and
stale ticks, frame thumbnails at the query ticks) and report.html, which lists first the
episodes where the models, or a model and the labels, disagree most.
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
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from lrm_ros.common.episode_end import END_FAILURE, END_SUCCESS, END_TIME_LIMIT
from lrm_ros.evaluation.report import html_cell, strict_json
from lrm_ros.evaluation.scores import METRIC_KEYS, EpisodeScores, compute_metrics, thumbnail
from lrm_ros.rewards.hold import DEFAULT_INTERVAL
from lrm_ros.rewards.offline import episode_queries, hold_trace, score_episodes
from lrm_ros.rewards.options import add_backend_arguments, backend_from_args

NAN = float("nan")


@dataclass
class Source:
    """One reward source for one episode."""
    label: str
    held: np.ndarray                     # (T,) held value per tick
    stale: np.ndarray                    # (T,) bool
    query_ticks: np.ndarray              # ticks with a query result
    query_values: np.ndarray             # their values (NaN = invalid)
    progress: Optional[np.ndarray] = None    # the progress estimates among them, if any

    @property
    def final(self) -> float:
        """What the model said last: the terminal query's value if any, else the last held."""
        if self.query_values.size and math.isfinite(self.query_values[-1]):
            return float(self.query_values[-1])
        return float(self.held[-1]) if self.held.size else NAN


@dataclass
class AuditEpisode:
    bag: str
    namespace: str
    episode: int
    task: str
    instruction: str
    num_ticks: int
    success: Optional[bool]              # None: the bag does not say
    oracle: np.ndarray
    thumbs: Dict[int, np.ndarray] = field(default_factory=dict)
    sources: Dict[str, Source] = field(default_factory=dict)
    disagreement: Dict[str, float] = field(default_factory=dict)
    plot: str = ""

    @property
    def key(self) -> str:
        return f"{Path(self.bag).name}{'/' + self.namespace if self.namespace else ''} ep {self.episode}"


def _success(ep) -> Optional[bool]:
    """The episode's label: True / False where the bag says so, None (unknown) otherwise.

    The simulator's oracle says success; else an end reason that is a verdict: success, or
    failure / time limit (no success within the limit). An episode the recording cut short,
    one stopped or reset by the operator (END_RESET_REQUEST), and one without any control/tick
    (its "end" is only the last frame) have no label: unknown, never counted as a failure."""
    if ep.successes.size and ep.successes.any():
        return True
    if not ep.episode_end:
        return None
    if ep.end_reason == END_SUCCESS:
        return True
    if ep.end_reason in (END_FAILURE, END_TIME_LIMIT):
        return False
    return None


def recorded_source(ep) -> Optional[Source]:
    x = ep.extra
    if "held_value" not in x and "result_ticks" not in x:
        return None
    T = len(ep.frames)
    held = x.get("held_value", np.full(T, NAN))
    stale = x.get("held_stale", np.zeros(T, bool))
    qt = x.get("result_ticks", np.zeros(0, np.int64))
    qv = np.where(x.get("result_status", np.zeros(0)) == 0, x.get("result_value", np.zeros(0)), NAN)
    if qt.size == 0 and "held_query_tick" in x:      # no results recorded: the held changes
        q = x["held_query_tick"]
        qt = np.unique(q[q > 0])
        qv = np.array([held[np.flatnonzero(q == t)[0]] for t in qt]) if qt.size else np.zeros(0)
    signal = str(x.get("held_signal", "?"))
    label = f"recorded ({x.get('held_model', '?')}, {signal})"
    qv = np.asarray(qv, np.float64)
    # the value is a progress estimate unless the signal is a comparison or a yes/no answer
    prog = qv if signal in ("progress", "tri", "topreward", "oracle") else None
    return Source(label, np.asarray(held, np.float64), np.asarray(stale, bool), np.asarray(qt, np.int64),
                  qv, prog)


def _scores(a: AuditEpisode, s: Source) -> EpisodeScores:
    e = EpisodeScores(bag=a.bag, task=a.task or "unknown", episode=a.episode, instruction=a.instruction,
                      success=bool(a.success), num_ticks=a.num_ticks)
    e.query_ticks = s.query_ticks
    e.value = s.query_values
    e.progress = s.progress if s.progress is not None else np.full(s.query_ticks.size, NAN)
    e.completion = np.full(s.query_ticks.size, NAN)
    e.contrastive = np.full(s.query_ticks.size, NAN)
    e.valid = np.isfinite(s.query_values)
    e.oracle_ticks = a.oracle
    return e


def _disagreement(a: AuditEpisode) -> None:
    names = list(a.sources)
    if len(names) >= 2:
        x, y = a.sources[names[0]].held, a.sources[names[1]].held
        ok = np.isfinite(x) & np.isfinite(y)
        a.disagreement["models_mean_abs"] = float(np.mean(np.abs(x[ok] - y[ok]))) if ok.any() else NAN
    if a.success is not None:
        for n, s in a.sources.items():
            a.disagreement[f"{n}_vs_success"] = abs(s.final - float(a.success)) if math.isfinite(s.final) else NAN
    finite = [v for v in a.disagreement.values() if math.isfinite(v)]
    a.disagreement["max"] = max(finite) if finite else NAN


def plot_episode(a: AuditEpisode, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    T = a.num_ticks
    thumbs = sorted(a.thumbs.items())[:12]
    fig = plt.figure(figsize=(10, 4.2 if thumbs else 3.2))
    ax = fig.add_axes([0.07, 0.36 if thumbs else 0.15, 0.68, 0.55 if thumbs else 0.72])
    if np.isfinite(a.oracle).any():
        ax.plot(np.arange(T), a.oracle, color="0.55", lw=1.2, label="oracle (norm. dense)")
    colors = {"recorded": "tab:blue", "rescored": "tab:orange"}
    for n, s in a.sources.items():
        c = colors.get(n, None)
        ax.step(np.arange(T), s.held, where="post", lw=1.6, color=c, label=f"{s.label}: held")
        ax.plot(s.query_ticks, s.query_values, "o", ms=4, color=c)
        st = np.flatnonzero(s.stale)
        for t in st:
            ax.axvspan(t - 0.5, t + 0.5, color=c, alpha=0.12, lw=0)
    ax.set_xlim(-1, max(T, 2))
    ax.set_ylim(-1.05 if any((s.held < -0.01).any() for s in a.sources.values()) else -0.05, 1.05)
    verdict = {True: "success", False: "no success", None: "outcome unknown"}[a.success]
    ax.set_title(f"{a.key}: {a.task} ({verdict}, {T} ticks); dots = query results, "
                 "shaded = stale", fontsize=8)
    ax.set_xlabel("tick")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7)
    for i, (t, th) in enumerate(thumbs):
        w = 0.68 / max(len(thumbs), 6)
        tax = fig.add_axes([0.07 + i * w, 0.02, w * 0.95, 0.22])
        tax.imshow(th)
        tax.set_title(f"t={t}", fontsize=6)
        tax.axis("off")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def audit(bags: Sequence[Path | str], out_dir: Path | str, *, backend=None, interval: int = 0,
          namespaces: Sequence[str] = (), camera_topic: str = "camera/image_raw", image_size: int = 224,
          top: int = 8, progress: bool = True, task: str = "", instruction: str = "",
          warn=None) -> Dict[str, Any]:
    """`task` / `instruction` stand in for what a bag does not carry (a robot bag recorded
    without task/instruction or sim/oracle); a bag's own values win. `instruction` defaults
    to the built-in one of a known `task`. Episodes re-scored without any instruction are
    listed under warnings (and passed to `warn`, e.g. print to stderr)."""
    from tqdm.auto import tqdm
    from lrm_ros.bags.load import bag_namespaces, load_bag
    from lrm_ros.bags.reader import BagFormatError
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    episodes: List[AuditEpisode] = []
    problems: Dict[str, List[str]] = {}
    work = []
    raw_eps = []
    needs = tuple(sorted(getattr(backend, "needs", ()))) if backend is not None else ()
    if task and not instruction:
        from lrm_ros.sim.tasks import TASK_INSTRUCTIONS
        instruction = TASK_INSTRUCTIONS.get(task, "")
    warnings: List[str] = []
    for b in tqdm([Path(x) for x in bags], desc="reading bags", unit="bag", disable=not progress):
        try:
            nss = list(namespaces) or bag_namespaces(b)
        except Exception as exc:  # noqa: BLE001
            problems[str(b)] = [f"unreadable: {type(exc).__name__}: {exc}"]
            continue
        for ns in nss:
            label = f"{b}" + (f" ({ns})" if ns else "")
            try:
                contents = load_bag(b, namespace=ns, camera_topic=camera_topic, image_size=image_size)
            except (BagFormatError, FileNotFoundError) as exc:
                problems.setdefault(label, []).append(str(exc))
                continue
            if contents.problems:
                problems.setdefault(label, []).extend(contents.problems)
            for ep in contents.episodes:
                if not ep.instruction and instruction:
                    ep.instruction = instruction
                if not ep.task and task:
                    ep.task = task
                if backend is not None and not ep.instruction:
                    warnings.append(f"{label} episode {ep.episode}: the bag has no task/instruction and "
                                    "none was given: re-scored WITHOUT an instruction (pass --instruction "
                                    "or --task)")
                a = AuditEpisode(bag=str(b), namespace=ns, episode=int(ep.episode), task=ep.task,
                                 instruction=ep.instruction, num_ticks=len(ep.frames), success=_success(ep),
                                 oracle=np.asarray(ep.normalized_dense_rewards, np.float64))
                rec = recorded_source(ep)
                if rec is not None:
                    a.sources["recorded"] = rec
                k = interval or _recorded_interval(rec) or DEFAULT_INTERVAL
                if backend is not None:
                    qs = episode_queries(ep, f"a{len(episodes)}", k, needs, ended=bool(ep.episode_end))
                    work.append((len(episodes), qs))
                    raw_eps.append((len(episodes), ep, k))
                ticks = rec.query_ticks if rec is not None and rec.query_ticks.size else \
                    np.unique(np.r_[np.arange(k, len(ep.frames), k), len(ep.frames) - 1])
                a.thumbs = {int(t): thumbnail(ep.frames[int(t)]) for t in ticks if 0 <= t < len(ep.frames)}
                episodes.append(a)
    if backend is not None and work:
        res = score_episodes(backend, work, progress=progress)
        for (i, qs), (_, ep, k) in zip(work, raw_eps):
            held, stale = hold_trace(ep, qs, res[i], k, needs, ended=bool(ep.episode_end))
            vals = np.array([r.value if r.valid else NAN for r in res[i]], np.float64)
            prog = np.array([r.progress if r.valid else NAN for r in res[i]], np.float64)
            episodes[i].sources["rescored"] = Source(
                f"re-scored ({getattr(backend, 'model_id', backend.name)})", held, stale,
                np.array([q.tick for q in qs], np.int64), vals, prog)
    for a in episodes:
        _disagreement(a)
    ranked = sorted(episodes, key=lambda a: -a.disagreement["max"] if math.isfinite(a.disagreement["max"]) else 1)
    for i, a in enumerate(tqdm(ranked, desc="plotting", unit="ep", disable=not progress)):
        if i < max(top, 0) or len(episodes) <= 24:
            a.plot = f"episode_{i:03d}.png"
            plot_episode(a, out / a.plot)
    metrics = {}
    for name in ("recorded", "rescored"):
        scored = [_scores(a, a.sources[name]) for a in episodes if name in a.sources and a.success is not None]
        if scored:
            m, notes = compute_metrics(scored)
            metrics[name] = {"label": next(a.sources[name].label for a in episodes if name in a.sources),
                             "metrics": m, "notes": notes}
    if warn is not None:
        for w in warnings:
            warn(w)
    report = {"bags": [str(b) for b in bags], "camera_topic": camera_topic, "problems": problems,
              "warnings": warnings, "metrics": metrics, "n_episodes": len(episodes),
              "n_unlabelled": sum(a.success is None for a in episodes),
              "episodes": [{"key": a.key, "bag": a.bag, "namespace": a.namespace, "episode": a.episode,
                            "task": a.task, "success": a.success, "num_ticks": a.num_ticks,
                            "disagreement": a.disagreement, "plot": a.plot,
                            "sources": {n: {"label": s.label, "final": s.final,
                                            "query_ticks": s.query_ticks.tolist(),
                                            "query_values": s.query_values.tolist(),
                                            "held": s.held.tolist(), "stale": s.stale.tolist()}
                                        for n, s in a.sources.items()}} for a in ranked],
              "seconds": round(time.perf_counter() - t0, 2)}
    (out / "audit.json").write_text(json.dumps(strict_json(report), indent=1))
    write_audit_html(report, out)
    return report


def _recorded_interval(rec: Optional[Source]) -> int:
    if rec is None or rec.query_ticks.size < 2:
        return 0
    d = np.diff(rec.query_ticks)
    return int(np.bincount(d[d > 0]).argmax()) if (d > 0).any() else 0


def write_audit_html(report: Dict[str, Any], out: Path) -> Path:
    cols = ["n_episodes", "n_success", "n_failure", "n_queries", *METRIC_KEYS]
    mrows = "".join(f"<tr><td>{html.escape(v['label'])}</td>" + "".join(
        f"<td>{html_cell(v['metrics'].get(c))}</td>" for c in cols) + "</tr>" for v in report["metrics"].values())
    mhead = "".join(f"<th>{html.escape(c)}</th>" for c in ["source", *cols])
    erows = []
    for e in report["episodes"]:
        d = e["disagreement"]
        finals = ", ".join(f"{n}: {html_cell(s['final'])}" for n, s in e["sources"].items())
        link = f'<a href="#{html.escape(e["plot"])}">plot</a>' if e["plot"] else ""
        erows.append(f"<tr><td>{html.escape(e['key'])}</td><td>{html.escape(e['task'] or '')}</td>"
                     f"<td>{html_cell(e['success'])}</td><td>{html_cell(d.get('models_mean_abs'))}</td>"
                     f"<td>{finals}</td><td>{html_cell(d.get('max'))}</td><td>{link}</td></tr>")
    probs = "".join(f"<li><code>{html.escape(k)}</code><ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in v)
                    + "</ul></li>" for k, v in report["problems"].items())
    warns = "".join(f"<li>{html.escape(w)}</li>" for w in report.get("warnings", []))
    plots = "".join(f'<h3 id="{html.escape(e["plot"])}">{html.escape(e["key"])}</h3>'
                    f'<img src="{html.escape(e["plot"])}" alt="{html.escape(e["key"])}">'
                    for e in report["episodes"] if e["plot"])
    doc = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>lrm_ros reward audit</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #bbb;padding:3px 7px}} img{{max-width:100%;border:1px solid #ddd}}</style></head><body>
<h1>Reward audit</h1>
<p>{report['n_episodes']} episodes from {len(report['bags'])} bag(s); camera topic
<code>{html.escape(report['camera_topic'])}</code>; {report['seconds']} s.</p>
<h2>Metrics against the labels</h2>
<p>{report.get('n_unlabelled', 0)} episode(s) without a success label (no oracle; stopped,
cut short or without control/tick) are left out of these metrics and of the disagreement
with labels.</p>
<table><tr>{mhead}</tr>{mrows}</table>
<h2>Episodes, most disagreement first</h2>
<p>models_mean_abs: mean |recorded held - re-scored held| over ticks; max: the largest of
that and |final value - success| of each source.</p>
<table><tr><th>episode</th><th>task</th><th>success</th><th>models_mean_abs</th><th>final values</th>
<th>max disagreement</th><th></th></tr>{''.join(erows)}</table>
<h2>Problems</h2><ul>{probs or '<li>none</li>'}</ul>
<h2>Warnings</h2><ul>{warns or '<li>none</li>'}</ul>
<h2>Plots</h2>{plots}
</body></html>"""
    path = out / "report.html"
    path.write_text(doc)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="lrm-ros audit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bags", nargs="+", help="bag directories (or .mcap files)")
    add_backend_arguments(p, "re-score with: lite | vlm | topreward | oracle | none", default="none")
    p.add_argument("--interval", type=int, default=0, help=f"K for re-scoring (0: as recorded, else {DEFAULT_INTERVAL})")
    p.add_argument("--namespace", action="append", default=[],
                   help="namespace(s) to audit, e.g. env0 (default: every one with control/tick)")
    p.add_argument("--camera-topic", default="camera/image_raw",
                   help="camera topic, relative to the namespace; Image or CompressedImage")
    p.add_argument("--image-size", type=int, default=224, help="model resolution (0: as recorded)")
    p.add_argument("--task", default="", help="task name for bags that carry none (no sim/oracle), "
                   "e.g. PushCube-v1; a known task also gives the instruction")
    p.add_argument("--instruction", default="", help="instruction for bags that record no "
                   "task/instruction (a robot bag); the models score against it")
    p.add_argument("--top", type=int, default=8, help="episodes plotted (most disagreement first)")
    p.add_argument("--out", type=Path, default=Path("out/audit"))
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    backend = None
    if a.backend != "none":
        try:
            backend = backend_from_args(a.backend, a.model_path, a.signal, a.set)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        report = audit(a.bags, a.out, backend=backend, interval=a.interval, namespaces=a.namespace,
                       camera_topic=a.camera_topic, image_size=a.image_size, top=a.top,
                       progress=not a.no_progress, task=a.task, instruction=a.instruction,
                       warn=lambda w: print(f"warning: {w}", file=sys.stderr))
    finally:
        if backend is not None:
            backend.close()
    for k, v in report["problems"].items():
        for msg in v:
            print(f"problem: {k}: {msg}", file=sys.stderr)
    for name, m in report["metrics"].items():
        mm = m["metrics"]
        print(f"{m['label']}: " + ", ".join(f"{k} {mm[k]:.3f}" for k in METRIC_KEYS
                                            if isinstance(mm.get(k), float) and math.isfinite(mm[k])))
    if report["n_unlabelled"]:
        print(f"{report['n_unlabelled']} episode(s) have no success label (no oracle, no success/failure "
              "end): shown, but not in the metrics or the disagreement with labels", file=sys.stderr)
    print(f"{report['n_episodes']} episodes; report: {a.out / 'report.html'}")
    if report["n_episodes"] == 0:
        return 2
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
