#!/usr/bin/env python3
"""Leave-task-out comparison of lite model variants, side by side in one run (same data, same
features, same folds): how well each scores tasks it never saw. Only the allowed training
tasks are used (lrm_ros.sim.tasks.LITE_TRAIN_TASKS); the reserved evaluation tasks are
refused, so a variant is selected without them.

Run (after `lrm-ros train-lite --generate` or with your own demo / failure folders):
  PYTHONPATH=. .venv/bin/python bench/bench_lite_lto.py --data data \
      --variants base first first_reg --policy-rollouts 40 --out bench/results/lite_variants

Variants (TrainConfig fields changed from the defaults of `lrm-ros train-lite`):
  base       completion head on the current frame only (the model shipped before issue 13)
  first      the completion head also compares with the episode's first frame
  first_reg  `first` with stronger regularisation: dropout 0.3, 64-d image projection,
             weight decay 1e-3
  diff       `first`, but the heads see only differences of frame embeddings (cur - first,
             a - b), never a frame's own embedding: cues that do not depend on the scene
With --ablate-failures FOLDER...: each variant is trained twice, with every failure folder
and without those ('<variant>-without'); both are evaluated on the same bags (all of them),
so the pair shows what that training data does, e.g. the near misses and regressions:
  PYTHONPATH=. .venv/bin/python bench/bench_lite_lto.py --data data/lto --variants first \
      --augment 1 --policy-rollouts 30 --ablate-failures data/lto/failures_near_a \
      data/lto/failures_near_b --out bench/results/lite_near_misses
Writes OUT.json and OUT.md (per task and mean, per variant).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "base": dict(completion_first=False),
    "first": dict(completion_first=True),
    "first_reg": dict(completion_first=True, dropout=0.3, image_proj=64, weight_decay=1e-3),
    "diff": dict(completion_first=True, absolute=False),
}


def main(argv=None) -> int:
    from lrm_ros.sim.tasks import LITE_TRAIN_TASKS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data")
    ap.add_argument("--demos", nargs="*", default=None)
    ap.add_argument("--failures", nargs="*", default=None)
    ap.add_argument("--tasks", nargs="+", default=list(LITE_TRAIN_TASKS))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--augment", type=int, default=0, help="as lrm-ros train-lite --augment")
    ap.add_argument("--ablate-failures", nargs="*", default=None,
                    help="failure folders to leave out of training in a second run of each variant "
                         "('<variant>-without'); evaluation always uses every failure folder")
    ap.add_argument("--interval", type=int, default=10)
    ap.add_argument("--policy-rollouts", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", action="store_true", help="only rewrite OUT.md from OUT.json")
    ap.add_argument("--out", default="out/bench/lite_variants", help="OUT.json and OUT.md")
    ap.add_argument("--work", default="out/bench/lite_variants_work",
                    help="fold checkpoints and evaluation plots, per variant")
    a = ap.parse_args(argv)
    if a.report:
        write_md(json.loads(Path(a.out).with_suffix(".json").read_text()), Path(a.out).with_suffix(".md"))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    torch.set_num_threads(2)
    from lrm_ros.vision.features import text_encoder
    from lrm_ros.learn import lite_lto
    from lrm_ros.common.provenance import git_revision
    from lrm_ros.learn.lite_pipeline import data_folders, prepare
    from lrm_ros.learn.train_lite import TrainConfig

    t0 = time.perf_counter()
    rev = git_revision()
    tasks = lite_lto.check_tasks(a.tasks)
    prep = prepare(tasks, a.data, a.demos, a.failures, a.seed, augment=a.augment)
    runs = [("", prep)]
    if a.ablate_failures:
        drop = {str(Path(f).resolve()) for f in a.ablate_failures}
        every = a.failures or data_folders(a.data, "failures")
        kept = [f for f in every if str(Path(f).resolve()) not in drop]
        if len(kept) == len(every):
            raise SystemExit(f"--ablate-failures {a.ablate_failures}: none of them is among the failure "
                             f"folders {every}")
        runs.append(("-without", prepare(tasks, a.data, a.demos, kept, a.seed, augment=a.augment)))
    text_enc = text_encoder()
    rollouts = lite_lto.policy_rollouts_for(tasks, a.policy_rollouts, a.workers)
    out = Path(a.out)
    res = {"command": "bench/bench_lite_lto.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "git_rev": rev, "tasks": tasks, "examples": prep.examples.counts(),
           "frames": prep.examples.num_frames, "data_hash": prep.data_hash,
           "policy_rollouts": {t: [int(sum(e.success for e in eps)), len(eps)] for t, eps in rollouts.items()},
           "variants": {}}
    if a.ablate_failures:
        res["ablated_failures"] = a.ablate_failures
        res["examples_without"] = runs[1][1].examples.counts()
    for base in a.variants:
        cfg = replace(TrainConfig(epochs=a.epochs, seed=a.seed, val_fraction=0.1, show_progress=False),
                      **VARIANTS[base])
        for suffix, p in runs:
            name = base + suffix
            tv = time.perf_counter()
            # every run is evaluated on the same bags, with the encoder primed on all frames
            per_task = lite_lto.leave_task_out(p.examples, {t: prep.bags(t) for t in tasks}, tasks,
                                               Path(a.work) / name, cfg, a.interval,
                                               prep.memo, text_enc, False, rollouts)
            if a.ablate_failures:
                for t in tasks:
                    per_task[t].update(split_roc_auc(Path(a.work) / name / "folds" / f"eval_{t}" / "metrics.json",
                                                     a.ablate_failures))
            res["variants"][name] = {"config": VARIANTS[base], "per_task": per_task,
                                     "mean": lite_lto.mean_metrics(per_task),
                                     "trained_on": "on every failure folder" if not suffix else
                                     f"without {a.ablate_failures}",
                                     "seconds": round(time.perf_counter() - tv, 1)}
            print(f"[variants] {name}: " + json.dumps({k: round(v, 3) for k, v in
                                                       res["variants"][name]["mean"].items()}), flush=True)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2, default=str))
    write_md(res, out.with_suffix(".md"))
    print(f"[variants] wrote {out.with_suffix('.json')} and .md")
    return 0


def split_roc_auc(metrics_json: Path, folders) -> dict:
    """Completion ROC-AUC (final query's completion) of one fold's held-out successes against
    the failures from `folders` (e.g. the near misses) and against the other failures."""
    from lrm_ros.evaluation.metrics import roc_auc
    eps = [e for e in json.loads(metrics_json.read_text())["episodes"] if not e["reversed"]]
    inside = {str(Path(f).resolve()) for f in folders}

    def within(e):
        return str(Path(e["bag"]).resolve().parent) in inside
    succ = [e["final_completion"] for e in eps if e["success"]]
    out = {}
    for key, fails in (("roc_auc_ablated", [e for e in eps if not e["success"] and within(e)]),
                       ("roc_auc_other", [e for e in eps if not e["success"] and not within(e)])):
        f = [e["final_completion"] for e in fails]
        out[key] = float(roc_auc(succ + f, [True] * len(succ) + [False] * len(f)))
        out[key.replace("roc_auc", "failures")] = len(f)
    return out


def write_md(res: dict, path: Path) -> None:
    """The means side by side (and the selection score: the mean of unseen-task VOC and
    completion ROC-AUC), then each variant's per-task table."""
    from lrm_ros.learn import lite_lto
    fmt = lambda v: f"{v:.2f}"  # noqa: E731
    md = [f"# lite variants, leave-task-out over {', '.join(res['tasks'])}", "",
          f"`{res['command']}` (git {res['git_rev']}, {res['wall_s']:.0f} s; {res['frames']} labelled "
          "frames). One training seed per fold. In bench/results/lite_variants.md base and first, "
          "which differ only in the completion head, differed by 0.14 in progress VOC (through the "
          "shared image projection and the seed): differences of that size are no evidence by "
          "themselves.", "",
          "| variant | " + " | ".join(lite_lto.METRICS) + " | (voc + roc_auc) / 2 |",
          "|---|" + "---|" * (len(lite_lto.METRICS) + 1)]
    for name, v in res["variants"].items():
        m = v["mean"]
        md.append(f"| {name} | " + " | ".join(fmt(m[k]) for k in lite_lto.METRICS)
                  + f" | {fmt((m['voc'] + m['roc_auc']) / 2)} |")
    md.append("")
    if res.get("ablated_failures"):
        md += [f"Completion ROC-AUC of the held-out task's successes against its failures from "
               f"{res['ablated_failures']} ('ablated') and against its other failures:", "",
               "| held-out task | " + " | ".join(f"{n}: ablated | {n}: other" for n in res["variants"]) + " |",
               "|---|" + "---|---|" * len(res["variants"])]
        for t in res["tasks"]:
            md.append(f"| {t} | " + " | ".join(
                f"{fmt(v['per_task'][t]['roc_auc_ablated'])} | {fmt(v['per_task'][t]['roc_auc_other'])}"
                for v in res["variants"].values()) + " |")
        md.append("| **mean** | " + " | ".join(
            f"**{fmt(sum(v['per_task'][t]['roc_auc_ablated'] for t in res['tasks']) / len(res['tasks']))}** | "
            f"**{fmt(sum(v['per_task'][t]['roc_auc_other'] for t in res['tasks']) / len(res['tasks']))}**"
            for v in res["variants"].values()) + " |")
        md.append("")
    for name, v in res["variants"].items():
        md += [f"## {name}: {v['config']}" + (f", trained {v['trained_on']}" if v.get("trained_on") else ""),
               "", lite_lto.table_markdown(v["per_task"], v["mean"]), ""]
    path.write_text("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())
