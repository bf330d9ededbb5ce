"""`lrm-ros train-bc`: behaviour-clone the tiny VLA from demonstration bags.

    lrm-ros train-bc --demos data/demos --tasks PushCube-v1 PullCube-v1 --out out/bc/tiny_vla.pt
    lrm-ros train-bc ... --ship          # also install it as the package's default policy

Frames go through the same 224x224 resize + centre crop as `camera_ingest`, then the frozen
encoders; features are computed once per run (with a progress bar).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np


def load_demo_episodes(demo_dirs: Sequence[str], tasks: Sequence[str] = (), image_size: int = 224,
                       progress: bool = True):
    """Successful episodes of the given tasks from demo folders (one bag per task), frames
    resized as camera_ingest does."""
    from tqdm.auto import tqdm
    from lrm_ros.bags.reader import read_episodes
    from lrm_ros.vision.image import resize_center_crop
    bags = []
    for d in demo_dirs:
        d = Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"demo folder {d} does not exist (make one with `lrm-ros demos`)")
        bags += sorted(p for p in d.iterdir() if p.is_dir() and (not tasks or p.name in tasks))
    if not bags:
        raise FileNotFoundError(f"no demo bags for tasks {list(tasks) or 'any'} in {list(demo_dirs)}")
    episodes = []
    for bag in tqdm(bags, desc="reading demos", unit="bag", disable=not progress):
        for ep in read_episodes(bag):
            if not ep.success or len(ep.actions) == 0:
                continue
            ep.frames = np.stack([resize_center_crop(f, image_size, image_size) for f in ep.frames])
            episodes.append(ep)
    return episodes


def main(argv: Optional[List[str]] = None) -> int:
    from lrm_ros.policy.adapter import DEFAULT_CHECKPOINT
    from lrm_ros.policy.tiny_vla import bc_arrays_from_episodes, save_policy, train_bc
    ap = argparse.ArgumentParser(prog="lrm-ros train-bc", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demos", nargs="+", default=["data/demos"], help="demo folders (lrm-ros demos)")
    ap.add_argument("--tasks", nargs="*", default=[], help="tasks to clone (default: all in the folders)")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/bc/tiny_vla.pt")
    ap.add_argument("--ship", action="store_true", help=f"also copy to {DEFAULT_CHECKPOINT}")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    try:
        episodes = load_demo_episodes(a.demos, a.tasks, progress=not a.no_progress)
    except (FileNotFoundError, ValueError) as exc:
        print(f"train-bc: {exc}", file=sys.stderr)
        return 2
    img, txt, pro, act = bc_arrays_from_episodes(episodes)
    model, hist = train_bc(img, txt, pro, act, epochs=a.epochs, lr=a.lr, seed=a.seed,
                           progress=not a.no_progress)
    tasks = sorted({ep.task for ep in episodes})
    meta = {"algorithm": "bc", "tasks": tasks, "episodes": len(episodes), "steps": int(len(act)),
            "epochs": a.epochs, "final_nll": hist["nll"][-1], "final_mse": hist["mse"][-1],
            "version": 0}
    sha = save_policy(model, a.out, meta)
    if a.ship:
        save_policy(model, DEFAULT_CHECKPOINT, meta)
    meta.update(sha256=sha, out=str(a.out), seconds=round(time.monotonic() - t0, 1))
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
