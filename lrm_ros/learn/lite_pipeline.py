"""Data -> labels -> the embedded `lite` reward model -> how well it scores unseen tasks, in
one command (`lrm-ros train-lite`).

  1. data (with --generate, for every training task that has no bag yet; --workers chains
     side by side):
       demos     motion-planned or scripted successes (lrm_ros.sim.demos) -> DATA/demos_<i>/<task>/
       failures  noisy / stretched replays, random and still policies, near misses
                 and regressions (lrm_ros.data.failures) -> DATA/failures_<i>/<task>/
  2. labels      LRM's labels from those episodes (lrm_ros.data.labels), and with
                 --train-rollouts N from N rollouts of the shipped tiny_vla per task it knows,
                 labelled by the simulator's success (failures of the kind RL produces); with
                 --augment N also from N copies of each episode seen by another random
                 camera (lrm_ros.data.augment)
  3. features    frozen EfficientNet-Lite0 features of every labelled frame, computed once
                 (disk cache) and shared by every model below
  4. leave-task-out (with --leave-task-out): for each training task T, heads trained on the
                 others, evaluated on T through the real interval-hold
                 (lrm_ros.learn.lite_lto) -> OUT/lite_generalization.{json,md,png}
  5. the model   heads trained on every training task except --exclude-tasks (RL checkpoints
                 that never saw the RL task), evaluated on the excluded tasks if any, else
                 in-distribution -> OUT/lite_reward.pt; --ship copies it to
                 lrm_ros/models/lite_reward.pt

The training tasks default to lrm_ros.sim.tasks.LITE_TRAIN_TASKS; the tasks reserved for
independent evaluation are refused. The checkpoint's metadata records its training tasks and
the hash of its training data (`data_hash`: the labelled frame table and the examples).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from lrm_ros.common.provenance import git_revision
from lrm_ros.rewards.hold import DEFAULT_INTERVAL


def _bags_by_task(paths: Sequence[str]) -> Dict[str, List[str]]:
    """{task: [bag, ...]} of the bags under `paths` (a task bag lives in a folder named after
    its task, as the demos and failures tools write them)."""
    from lrm_ros.data.failures import find_bags
    bags, errors = find_bags([p for p in paths if Path(p).exists()])
    for path, err in errors.items():
        print(f"[lite] skipped {path}: {err}", file=sys.stderr)
    out: Dict[str, List[str]] = {}
    for b in bags:
        out.setdefault(Path(b).name, []).append(str(b))   # a bag is a folder named after its task
    return out


def data_folders(data, kind: str) -> List[str]:
    """DATA/<kind> and DATA/<kind>_* (the folders --generate writes, one per worker)."""
    data = Path(data)
    return [str(p) for p in sorted(data.glob(f"{kind}*")) if p.is_dir()]


def generate(data: Path, tasks: Sequence[str], n: int, seed: int = 0, size=(256, 256),
             workers: int = 2) -> None:
    """Demos, then failures, for every task of `tasks` that has no demo bag under DATA yet:
    `workers` chains (demos tool, then failures tool, each in its own process with its
    progress bars) run side by side on their share of the tasks, into DATA/demos_<i> and
    DATA/failures_<i>. A tool that fails stops the run (CalledProcessError)."""
    import threading
    have = _bags_by_task(data_folders(data, "demos"))
    missing = [t for t in tasks if t not in have]
    if not missing:
        return
    groups = [missing[i::max(1, workers)] for i in range(max(1, workers))]
    print(f"[lite] generating {n} demos and their failures for {missing} "
          f"({len([g for g in groups if g])} workers)", flush=True)
    errors: List[BaseException] = []

    def chain(i: int, group: List[str]) -> None:
        demos, fails = data / f"demos_{i}", data / f"failures_{i}"
        try:
            subprocess.run([sys.executable, "-m", "lrm_ros.sim.demos", "--tasks", *group,
                            "-n", str(n), "--seed", str(seed), "--out", str(demos),
                            "--width", str(size[0]), "--height", str(size[1]),
                            "--max-episode-ticks", "auto"], check=True)
            bags = [b for t in group for b in _bags_by_task([str(demos)]).get(t, [])]
            if bags:
                subprocess.run([sys.executable, "-m", "lrm_ros.data.failures", "--demos", *bags,
                                "--out", str(fails), "--seed", str(seed)], check=True)
        except BaseException as exc:   # noqa: BLE001 - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=chain, args=(i, g)) for i, g in enumerate(groups) if g]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def data_hash(examples, feats: np.ndarray) -> str:
    """Hash of a labelled example set: the frame table's features and every example column."""
    from lrm_ros.data.lite_data import _example_fields
    h = hashlib.blake2b(digest_size=12)
    h.update(np.ascontiguousarray(feats).data)
    for name, _ in _example_fields():
        h.update(np.ascontiguousarray(getattr(examples, name)).data)
    h.update(json.dumps([examples.instructions, examples.tasks]).encode())
    return h.hexdigest()


@dataclass
class Prepared:
    """The labelled examples of a run (frame table replaced by its features), the evaluation
    image encoder primed with those features, and every task's bags."""
    examples: Any
    memo: Any
    demo_bags: Dict[str, List[str]]
    fail_bags: Dict[str, List[str]]
    data_hash: str

    def bags(self, task: str) -> List[str]:
        return self.demo_bags.get(task, []) + self.fail_bags.get(task, [])


def prepare(tasks: Sequence[str], data: str = "data", demos=None, failures=None,
            seed: int = 0, frame_stride: int = 2, show_progress: bool = True,
            augment: int = 0, rollouts: Sequence = ()) -> Prepared:
    """Read the demo and failure bags of `tasks`, build LRM's labels and compute (or load
    from the disk cache) the image features of every labelled frame. `augment` > 0 adds that
    many copies of every episode seen by another randomly drawn camera
    (lrm_ros.data.augment), labelled the same way. `rollouts` (policy episodes of `tasks`,
    lrm_ros.learn.rollout.RolloutEpisode) join the data labelled by the simulator's success:
    a successful one like a demonstration, a failed one like a failure."""
    from lrm_ros.bags.reader import read_episodes
    from lrm_ros.data.augment import augment_episode
    from lrm_ros.data.labels import LabelConfig, build_examples
    from lrm_ros.learn import lite_lto
    from lrm_ros.data.lite_data import LiteExamples
    from lrm_ros.learn.train_lite import compute_features
    demo_bags = _bags_by_task(demos or data_folders(data, "demos"))
    fail_bags = _bags_by_task(failures or data_folders(data, "failures"))
    no_data = [t for t in tasks if t not in demo_bags]
    if no_data:
        raise SystemExit(f"lrm-ros train-lite: no demo bags for {no_data} (looked in "
                         f"{demos or Path(data) / 'demos*'}); run with --generate, or "
                         f"`lrm-ros demos --tasks {' '.join(no_data)}` first")
    successes, failed = [], []
    for t in tasks:
        for b in demo_bags[t]:
            successes.extend(read_episodes(b))
        for b in fail_bags.get(t, []):
            failed.extend(read_episodes(b))
    rollouts = [r for r in rollouts if r.task in tasks]
    if rollouts:
        bag = (successes or failed or [None])[0]     # the rollouts' frames take the bags' size
        size = (bag.frames.shape[2], bag.frames.shape[1]) if bag is not None else None
        eps = lite_lto.rollouts_as_episodes(rollouts, size)
        successes += [e for e in eps if e.success]
        failed += [e for e in eps if not e.success]
        print(f"[lite] + {len(eps)} policy rollouts ({sum(e.success for e in eps)} successful) of "
              f"{sorted({e.task for e in eps})}", flush=True)
    print(f"[lite] {len(successes)} demonstrations, {len(failed)} failures of {list(tasks)}"
          + (f", each also seen by {augment} other camera(s)" if augment else ""), flush=True)
    memo = lite_lto.MemoImageEncoder()

    def label(succ, fail, label_seed: int, prime: bool):
        ex = build_examples(succ, fail, LabelConfig(seed=label_seed, frame_stride=frame_stride))
        feats = compute_features(ex, show_progress=show_progress)
        if prime:        # evaluation frames are the original ones
            memo.prime(ex.frames, feats)
        ex.features, ex.frames = feats, None
        return ex

    parts = [label(successes, failed, seed, True)]
    rng = np.random.default_rng(seed + 7919)
    for k in range(augment):          # views of the original frames, computed when labelled
        parts.append(label([augment_episode(e, rng) for e in successes],
                           [augment_episode(e, rng) for e in failed], seed + 1 + k, False))
    del successes, failed
    examples = parts[0] if len(parts) == 1 else LiteExamples.concatenate(parts)
    return Prepared(examples, memo, demo_bags, fail_bags, data_hash(examples, examples.features))


def train_config(args):
    from lrm_ros.learn.train_lite import TrainConfig
    return TrainConfig(epochs=args.epochs, seed=args.seed, val_fraction=0.1,
                       completion_first=args.completion_first, dropout=args.dropout,
                       image_proj=args.image_proj, weight_decay=args.weight_decay,
                       show_progress=not args.quiet)


def run(args) -> dict:
    from lrm_ros.data.labels import split_by_task
    from lrm_ros.evaluation.evaluate import evaluate
    from lrm_ros.vision.features import text_encoder
    from lrm_ros.learn import lite_lto
    from lrm_ros.learn.train_lite import train
    from lrm_ros.rewards import make_backend

    t0 = time.perf_counter()
    tasks = lite_lto.check_tasks(args.tasks)
    exclude = args.exclude_tasks
    unknown = [t for t in exclude if t not in tasks]
    if unknown:
        raise ValueError(f"--exclude-tasks {unknown} are not training tasks ({tasks})")
    if args.ship and exclude:
        raise ValueError("--ship needs a model of every training task (no --exclude-tasks)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.generate:
        generate(Path(args.data), tasks, args.num_demos, args.seed, (args.width, args.height),
                 args.workers)
    # the shipped policy's own rollouts, labelled by the simulator, as training data
    # (no rollouts of a task no model here is trained on)
    roll_tasks = tasks if args.leave_task_out else [t for t in tasks if t not in exclude]
    train_rollouts = lite_lto.policy_rollouts_for(roll_tasks, args.train_rollouts, args.workers,
                                                  seed=lite_lto.TRAIN_ROLLOUT_SEED)
    prep = prepare(tasks, args.data, args.demos, args.failures, args.seed, args.frame_stride,
                   not args.quiet, args.augment, [r for eps in train_rollouts.values() for r in eps])
    rollout_counts = {t: [int(sum(e.success for e in eps)), len(eps)] for t, eps in train_rollouts.items()}
    del train_rollouts
    examples, memo = prep.examples, prep.memo
    tcfg = train_config(args)
    text_enc = text_encoder()
    summary: dict = {"command": "lrm-ros train-lite " + " ".join(args.argv), "git_rev": git_revision(),
                     "train_tasks": tasks, "interval": args.interval, "epochs": args.epochs,
                     "completion_first": args.completion_first, "augment": args.augment,
                     "examples": examples.counts(), "frames": int(examples.num_frames),
                     "data_hash": prep.data_hash}
    if rollout_counts:
        summary["train_rollouts"] = rollout_counts   # {task: [successes, episodes]}

    # the shipped policy's own rollouts on the tasks it was trained on
    rollouts = lite_lto.policy_rollouts_for(tasks, args.policy_rollouts, args.workers)
    if rollouts:
        summary["policy_rollouts"] = {t: int(sum(e.success for e in eps)) for t, eps in rollouts.items()}
    if args.leave_task_out:
        per_task = lite_lto.leave_task_out(examples, {t: prep.bags(t) for t in tasks}, tasks, out, tcfg,
                                           args.interval, memo, text_enc, not args.quiet, rollouts)
        means = lite_lto.mean_metrics(per_task)
        summary.update(per_task=per_task, mean_unseen=means,
                       mean_unseen_voc=means["voc"], mean_unseen_roc_auc=means["roc_auc"])

    # the model: every training task but the excluded ones
    keep = [t for t in tasks if t not in exclude]
    train_ex = split_by_task(examples, exclude)[0] if exclude else examples
    ckpt = out / "lite_reward.pt"
    print(f"[lite] final model on {keep}", flush=True)
    train(train_ex, tcfg, out=str(ckpt), text_enc=text_enc,
          extra_meta={"data_hash": summary["data_hash"], "excluded_tasks": exclude,
                      "command": summary["command"], "git_rev": summary["git_rev"]})
    summary["checkpoint"] = str(ckpt)
    summary["checkpoint_tasks"] = keep
    eval_tasks = exclude or keep
    bags = [b for t in eval_tasks for b in prep.bags(t)]
    if bags:
        backend = make_backend("lite", model_path=str(ckpt), signal="tri", image_encoder=memo,
                               text_encoder=text_enc)
        report = evaluate(bags, backend, out / "eval", interval=args.interval, progress=not args.quiet,
                          backend_label="lite (tri), " + ("tasks it never saw" if exclude else
                                                          "its training tasks (in-distribution)"))
        summary["final_eval"] = {"tasks": eval_tasks, "unseen": bool(exclude),
                                 "per_task": {t: lite_lto.task_metrics(report, t) for t in eval_tasks}}
        for t in eval_tasks:
            if t in rollouts:
                summary["final_eval"]["per_task"][t].update(
                    lite_lto.policy_roc_auc(backend, rollouts[t], args.interval))
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if args.leave_task_out:
        write_generalization(summary, out)
    if args.ship:
        from lrm_ros.rewards.lite import DEFAULT_CHECKPOINT
        shutil.copyfile(ckpt, DEFAULT_CHECKPOINT)
        summary["shipped"] = str(DEFAULT_CHECKPOINT)
        print(f"[lite] shipped {DEFAULT_CHECKPOINT}", flush=True)
    return summary


def write_generalization(summary: dict, out: Path) -> None:
    """OUT/lite_generalization.json, .md (the table) and .png (the bars)."""
    from lrm_ros.learn import lite_lto
    rec = {k: summary[k] for k in ("train_tasks", "per_task", "mean_unseen_voc", "mean_unseen_roc_auc",
                                   "mean_unseen", "git_rev", "command", "wall_s", "examples",
                                   "frames", "data_hash", "interval", "epochs", "augment")}
    for k in ("train_rollouts", "policy_rollouts"):     # {task: ...} when the run had them
        if k in summary:
            rec[k] = summary[k]
    (out / "lite_generalization.json").write_text(json.dumps(rec, indent=2, default=str))
    lite_lto.plot_table(summary["per_task"], out / "lite_generalization.png")
    md = ["# lite reward model on tasks it never saw (leave-task-out)", "",
          f"Command: `{summary['command']}` (git {summary['git_rev']}, {summary['wall_s']:.0f} s "
          f"in all). Each row: the heads trained on the other tasks, scored on this task's demos "
          f"and failures through the interval-hold (K = {summary['interval']}).", "",
          lite_lto.table_markdown(summary["per_task"], summary["mean_unseen"]), "",
          "![per-task bars](lite_generalization.png)", ""]
    (out / "lite_generalization.md").write_text("\n".join(md))


def build_parser() -> argparse.ArgumentParser:
    from lrm_ros.sim.tasks import LITE_TRAIN_TASKS
    p = argparse.ArgumentParser(prog="lrm-ros train-lite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(LITE_TRAIN_TASKS),
                   help="training tasks (default: every allowed task with motion-planned or scripted demos)")
    p.add_argument("--exclude-tasks", default="",
                   help="comma-separated tasks the final model must not see (e.g. PushCube-v1 for "
                        "a zero-shot RL reward); it is evaluated on them")
    p.add_argument("--data", default="data",
                   help="data folder: demo bags in DATA/demos*/, failure bags in DATA/failures*/")
    p.add_argument("--demos", nargs="*", default=None, help="demo bags / folders (default DATA/demos*)")
    p.add_argument("--failures", nargs="*", default=None,
                   help="failure bags / folders (default DATA/failures*)")
    p.add_argument("--generate", action="store_true",
                   help="generate the demos and failures of tasks that have none under DATA")
    p.add_argument("-n", "--num-demos", type=int, default=12, help="demos per task with --generate")
    p.add_argument("--width", type=int, default=256, help="camera width of generated data")
    p.add_argument("--height", type=int, default=256, help="camera height of generated data")
    p.add_argument("--leave-task-out", action="store_true",
                   help="also train one model per task without it and evaluate it on that task")
    p.add_argument("--policy-rollouts", type=int, default=0,
                   help="also score N stochastic rollouts of the shipped tiny_vla on each task it "
                        "was trained on (completion ROC-AUC vs the simulator's success)")
    p.add_argument("--train-rollouts", type=int, default=0,
                   help="add N stochastic rollouts of the shipped tiny_vla on each task it was trained "
                        "on to the training data, labelled by the simulator's success (seeds "
                        "30000+, disjoint from --policy-rollouts' 20000+; a leave-task-out fold or "
                        "--exclude-tasks drops the held-out task's rollouts with its other data)")
    p.add_argument("--workers", type=int, default=2,
                   help="processes generating data side by side, and rollout processes")
    p.add_argument("--out", default="out/lite")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--completion-first", action=argparse.BooleanOptionalAction, default=True,
                   help="the completion head also sees the episode's first frame")
    # defaults: the `first_reg` variant, best mean of unseen-task VOC and ROC-AUC of the
    # variants compared leave-task-out in bench/results/lite_variants.md
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--image-proj", type=int, default=64, help="width of the image projection")
    p.add_argument("--weight-decay", type=float, default=1e-3)
    p.add_argument("--augment", type=int, default=0,
                   help="copies of every episode seen by another random camera (pose, field of "
                        "view, exposure, white balance, noise, blur)")
    p.add_argument("--frame-stride", type=int, default=2, help="label every n-th tick")
    p.add_argument("--interval", type=int, default=DEFAULT_INTERVAL, help="K of the evaluation queries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--ship", action="store_true",
                   help="copy the checkpoint to lrm_ros/models/lite_reward.pt")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    a.argv = argv
    a.exclude_tasks = [t for t in a.exclude_tasks.split(",") if t]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.threads > 0:
        import torch
        torch.set_num_threads(a.threads)
    try:
        s = run(a)
    except ValueError as exc:
        print(f"lrm-ros train-lite: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"lrm-ros train-lite: data generation failed: {' '.join(map(str, exc.cmd[:6]))} ... "
              f"exited with {exc.returncode} (its output above says why)", file=sys.stderr)
        return 1
    if "mean_unseen" in s:
        print(json.dumps({"per_task": {t: {k: round(v, 3) for k, v in m.items() if isinstance(v, float)}
                                       for t, m in s["per_task"].items()},
                          "mean_unseen": s["mean_unseen"]}, indent=2, default=str))
    print(f"[lite] summary: {Path(a.out) / 'summary.json'}; checkpoint {s['checkpoint']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
