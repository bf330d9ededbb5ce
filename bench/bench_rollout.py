#!/usr/bin/env python3
"""Rollout throughput of the in-process RL loop (what bench_table3 and the learner's numbers
rest on): environment steps per second including rendering, image features and the policy,
side by side in one run. No assertions.

  serial-256   one process, the camera at 256x256 resized to the model's 224 (the old loop)
  serial-224   one process, the camera rendered at the model resolution (no resize)
  pool-N-224   N worker processes (RolloutPool), camera at 224

Also a breakdown of one serial step (render+physics, features, policy) from timers.

Run:  PYTHONPATH=. .venv/bin/python bench/bench_rollout.py [--episodes 6] [--workers 2]
Writes out/bench/rollout.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lrm_ros.common.provenance import git_revision  # noqa: E402


def measure(task: str, camera: int, workers: int, episodes: int, max_ticks: int) -> dict:
    from lrm_ros.learn.rollout_pool import RolloutPool
    from lrm_ros.policy.tiny_vla import load_policy
    from lrm_ros.policy.adapter import DEFAULT_CHECKPOINT
    from lrm_ros.sim.maniskill_env import SimConfig
    cfg = SimConfig(env_id=task, max_episode_ticks=max_ticks, camera_width=camera, camera_height=camera)
    model, _ = load_policy(DEFAULT_CHECKPOINT)
    with RolloutPool(cfg, workers=workers) as pool:
        pool.set_policy(model)
        pool.run([0] * max(1, workers), deterministic=False, keep_frames=False)     # warm-up
        t = time.perf_counter()
        eps = pool.run(list(range(1, episodes + 1)), deterministic=False, keep_frames=False)
        dt = time.perf_counter() - t
    steps = sum(len(e.action) for e in eps)
    return {"task": task, "camera": camera, "workers": workers, "episodes": episodes,
            "steps": steps, "seconds": dt, "steps_per_s": steps / dt}


def breakdown(task: str, camera: int, steps: int) -> dict:
    import torch
    torch.set_num_threads(1)
    from lrm_ros.vision.image import resize_center_crop
    from lrm_ros.policy.adapter import PolicyObservation, TinyVLAAdapter
    from lrm_ros.sim.maniskill_env import ManiSkillSim, SimConfig
    sim = ManiSkillSim(SimConfig(env_id=task, max_episode_ticks=10_000, camera_width=camera,
                                 camera_height=camera))
    ad = TinyVLAAdapter.from_checkpoint()
    obs = sim.reset(seed=0)
    t_sim = t_feat = t_pol = 0.0
    for i in range(steps + 3):
        a = time.perf_counter()
        frame = resize_center_crop(obs.image, 224, 224)
        f = ad.features([PolicyObservation(frame, sim.instruction, obs.joint_positions)])
        b = time.perf_counter()
        raw, _, _ = ad.act_features(f)
        c = time.perf_counter()
        obs = sim.step(ad.clip(raw[0])).observation
        d = time.perf_counter()
        if i >= 3:
            t_feat, t_pol, t_sim = t_feat + b - a, t_pol + c - b, t_sim + d - c
    sim.close()
    return {"camera": camera, "steps": steps, "ms_sim_and_render": 1e3 * t_sim / steps,
            "ms_features": 1e3 * t_feat / steps, "ms_policy": 1e3 * t_pol / steps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="PushCube-v1")
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-ticks", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "rollout.json"))
    a = ap.parse_args(argv)
    res = {"command": "python bench/bench_rollout.py " + " ".join(sys.argv[1:]),
           "git_rev": git_revision(),
           "cpus": os.cpu_count(), "breakdown": [], "runs": []}
    for cam in (256, 224):
        res["breakdown"].append(breakdown(a.task, cam, 40))
        print(res["breakdown"][-1], flush=True)
    for cam, workers in ((256, 0), (224, 0), (224, a.workers)):
        r = measure(a.task, cam, workers, a.episodes, a.max_ticks)
        res["runs"].append(r)
        print(f"camera {cam}, {'serial' if workers == 0 else f'{workers} workers'}: "
              f"{r['steps']} steps in {r['seconds']:.1f} s -> {r['steps_per_s']:.1f} steps/s", flush=True)
    base = res["runs"][0]["steps_per_s"]
    for r in res["runs"]:
        r["ratio_to_serial_256"] = r["steps_per_s"] / base
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
