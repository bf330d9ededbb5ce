#!/usr/bin/env python3
"""How long are the motion-planned demos of each task, once converted to the bridge's control
mode? The source of ``tasks.RECOMMENDED_MAX_EPISODE_TICKS`` (the limits of
``--max-episode-ticks auto``) and of the per-seed losses of the control-mode conversion.

For every task it runs the demos' own plan worker (ManiSkill's Panda motion planner in
pd_joint_pos, then ManiSkill's conversion to ``--control-mode``, state only) on seeds
``--seed .. --seed + n - 1`` and records per seed the planned and the converted number of
actions, the tick at which the converted demo first reports success when replayed state-only
from its seed and first state (as the demos' replay does; it ends the episode there), and every
seed lost on the way with its reason. The limit ``tasks.time_limit_for(max ticks to success)``
(+25%, rounded up to 10 ticks) covers every demo seen.

  .venv/bin/python bench/measure_demo_lengths.py -n 20 [--tasks ...] [--out bench/results/demo_lengths.json]

Planning on the CPU: 0.1-1.2 s per demo, the conversion about as long (one task, 20 seeds: 0.5-2 min).
Measuring the reserved evaluation tasks' lengths is data tooling (a time limit), not training.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    from lrm_ros.sim.demos import _run_worker
    from lrm_ros.sim.tasks import MOTION_PLANNING_TASKS, time_limit_for
    from lrm_ros.sim.vulkan import ensure_vulkan_icd
    from lrm_ros.common.provenance import git_revision

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(MOTION_PLANNING_TASKS))
    p.add_argument("-n", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--control-mode", default="pd_ee_delta_pose")
    p.add_argument("--out", type=Path, default=Path("bench/results/demo_lengths.json"))
    a = p.parse_args(argv)
    ensure_vulkan_icd()
    rev = git_revision()
    doc = {"command": " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]), "git_rev": rev,
           "control_mode": a.control_mode, "seeds": [a.seed, a.seed + a.n - 1], "tasks": {}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for task in a.tasks:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="lrm_lengths_") as tmp:
            res = _run_worker(task, list(range(a.seed, a.seed + a.n)), Path(tmp), a.control_mode, 3600.0)
        plan = {int(k): v for k, v in res.get("plan_lengths", {}).items()}
        conv = {int(k): v for k, v in res.get("converted_lengths", {}).items()}
        succ = {int(k): v for k, v in res.get("success_ticks", {}).items()}
        reached = [v for v in succ.values() if v is not None]
        e = {
            "planned_ok": len(plan), "converted_ok": len(conv),
            "plan_lengths": plan, "converted_lengths": conv,
            "plan_errors": res.get("plan_errors", {}), "convert_errors": res.get("convert_errors", {}),
            "success_ticks": succ, "never_successful_in_replay": sorted(k for k, v in succ.items() if v is None),
            "converted_max": max(conv.values()) if conv else None,
            "converted_min": min(conv.values()) if conv else None,
            "success_ticks_max": max(reached) if reached else None,
            "success_ticks_min": min(reached) if reached else None,
            "limit": time_limit_for(max(reached)) if reached else None,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if "error" in res:
            e["error"] = res["error"][-500:]
        doc["tasks"][task] = e
        print(f"{task}: planned {len(plan)}/{a.n}, converted {len(conv)}, converted lengths "
              f"{e['converted_min']}-{e['converted_max']}, ticks to success {e['success_ticks_min']}-"
              f"{e['success_ticks_max']} -> limit {e['limit']} ({e['seconds']} s)", flush=True)
        a.out.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
