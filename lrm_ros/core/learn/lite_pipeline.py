"""Train and evaluate the embedded `lite` reward model end to end (`lrm-ros train-lite-all`).

  demos (lrm-ros demos) + failures (python -m lrm_ros.core.data.failures)
    -> labelled examples (lrm_ros.core.data.labels), split by task
    -> heads trained on the training tasks (lrm_ros.core.learn.train_lite)
    -> offline evaluation on the held-out tasks, never seen in training (lrm_ros.core.evaluate)

Writes into --out: train.npz, test.npz, lite_reward.pt, eval/ (metrics.json, plots,
report.html) and summary.json. With --ship the checkpoint is copied to
lrm_ros/models/lite_reward.pt (the package's default for `backend: lite`).
"""
import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import List, Sequence

from lrm_ros.core.hold import DEFAULT_INTERVAL


def _episodes(paths: Sequence[str]):
    from lrm_ros.bags.reader import read_episodes
    from lrm_ros.core.data.failures import find_bags
    bags, errors = find_bags(paths)
    for path, err in errors.items():
        print(f"[lite] skipped {path}: {err}", file=sys.stderr)
    out = []
    for bag in bags:
        out.extend(read_episodes(bag))
    return out, [str(b) for b in bags]


def run(demos: Sequence[str], failures: Sequence[str], test_tasks: Sequence[str], out_dir: str,
        epochs: int = 30, interval: int = DEFAULT_INTERVAL, ship: bool = False, seed: int = 0) -> dict:
    from lrm_ros.core.data.labels import LabelConfig, build_examples, split_by_task
    from lrm_ros.core.evaluate import evaluate
    from lrm_ros.core.learn.train_lite import TrainConfig, train
    from lrm_ros.core.rewards import make_backend
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    successes, demo_bags = _episodes(demos)
    failed, failure_bags = _episodes(failures) if failures else ([], [])
    print(f"[lite] {len(successes)} demonstrations, {len(failed)} failures", flush=True)
    examples = build_examples(successes, failed, LabelConfig(seed=seed))
    if test_tasks:
        train_ex, test_ex = split_by_task(examples, list(test_tasks))
        test_ex.save(out / "test.npz")
    else:                  # no held-out tasks: train on everything, evaluate in-distribution
        train_ex = test_ex = examples
    train_ex.save(out / "train.npz")
    print(f"[lite] examples: train {train_ex.counts()} on {sorted(set(train_ex.tasks))}; "
          f"held out {list(test_tasks)}", flush=True)
    ckpt = out / "lite_reward.pt"
    _, history = train(train_ex, TrainConfig(epochs=epochs, seed=seed, val_fraction=0.1),
                       out=str(ckpt))
    held_out = [b for b in demo_bags + failure_bags
                if not test_tasks or any(t in b for t in test_tasks)]
    backend = make_backend("lite", model_path=str(ckpt), signal="tri")
    metrics = evaluate(held_out, backend, out / "eval", interval=interval,
                       backend_label="lite (tri), " + ("held-out tasks" if test_tasks else
                                                       "training tasks (in-distribution)"))
    summary = {"test_tasks": list(test_tasks), "train_tasks": sorted(set(train_ex.tasks)),
               "counts": {"train": train_ex.counts(), "test": test_ex.counts()},
               "epochs": epochs, "final_epoch": history[-1] if history else {},
               "held_out_overall": metrics.get("overall", {}),
               "held_out_per_task": metrics.get("per_task", {}),
               "checkpoint": str(ckpt), "seconds": round(time.perf_counter() - t0, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if ship:
        from lrm_ros.core.rewards.lite import DEFAULT_CHECKPOINT
        Path(DEFAULT_CHECKPOINT).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ckpt, DEFAULT_CHECKPOINT)
        summary["shipped"] = str(DEFAULT_CHECKPOINT)
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lrm-ros train-lite-all", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demos", nargs="+", default=["data/demos"])
    p.add_argument("--failures", nargs="*", default=["data/failures"])
    p.add_argument("--test-tasks", default="PullCube-v1,LiftPegUpright-v1",
                   help="tasks held out of training and evaluated on (comma-separated); '' = "
                        "train on all tasks and evaluate in-distribution")
    p.add_argument("--out", default="out/lite")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--interval", type=int, default=DEFAULT_INTERVAL, help="K of the evaluation queries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ship", action="store_true",
                   help="copy the checkpoint to lrm_ros/models/lite_reward.pt")
    a = p.parse_args(argv)
    tasks = [t for t in a.test_tasks.split(",") if t]
    s = run(a.demos, a.failures, tasks, a.out, a.epochs, a.interval, a.ship, a.seed)
    overall = s["held_out_overall"]
    print(json.dumps({"held_out_tasks": tasks, "overall": overall}, indent=2, default=str))
    print(f"[lite] summary: {Path(a.out) / 'summary.json'}; report: {Path(a.out) / 'eval' / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
