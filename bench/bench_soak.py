#!/usr/bin/env python3
"""Soak: the simulated graph with the learner for --minutes, the memory of every node sampled.

Default graph: 2 envs (PushCube-v1), tiny_vla, lite reward, PPO learner (2 episodes per
iteration, 20-tick episodes, so episodes and updates keep coming). Every --every seconds the
resident memory (RSS, summed over the node's process group) of each node is sampled. After
the run it reports, per node, RSS at the end of the warm-up (the first --warmup-fraction of
the run) and at the end, the growth and a least-squares slope over the rest of the run, and:
- ticks without a held reward (every tick must have one: the reward model is active first);
- the learner's episodes: complete, and set aside (aborted / dropped: a PolicyStep or held
  reward never came; fallback; invalid steps): none may be set aside in a run without faults.
Exit 1 (and why) when a node grows more than --max-growth-mb after the warm-up, a tick has no
held reward, a node died, or the learner set an episode aside.

  .venv/bin/python bench/bench_soak.py --minutes 20 [--json out/bench/soak.json] [name:=value ...]
test/test_soak.py runs it for 3 minutes.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def group_rss_mb(pgid: int) -> float:
    """Resident memory (MB) of every process in process group `pgid` (a node and anything it
    spawned; the runner starts each node in a session of its own)."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) != pgid:          # field 5 of stat: the process group
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total / 1024.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--every", type=float, default=10.0, help="seconds between RSS samples")
    ap.add_argument("--warmup-fraction", type=float, default=0.3,
                    help="part of the run before growth is measured (models load, caches fill)")
    ap.add_argument("--max-growth-mb", type=float, default=40.0,
                    help="allowed RSS growth of one node after the warm-up")
    ap.add_argument("--json", default="", help="write the results here")
    ap.add_argument("arguments", nargs="*", help="graph arguments name:=value")
    a = ap.parse_args(argv)
    from lrm_ros.bringup.graph import load_graph, parse_launch_arguments, resolve
    from lrm_ros.bringup.session import running_graph
    from lrm_ros.ros.env import apply_ros_environment, fresh_domain_id, ros_environment
    domain = fresh_domain_id()
    apply_ros_environment(domain_id=domain)
    from lrm_ros.ros.monitor import GraphMonitor
    learner_dir = tempfile.mkdtemp(prefix="soak_learner_")
    overrides = {"num_envs": "2", "env_id": "PushCube-v1", "learner": "ppo", "episodes_per_iteration": "2",
                 "iterations": "100000", "max_episode_ticks": "20", "learner_dir": learner_dir}
    overrides.update(parse_launch_arguments(a.arguments))
    names = [f"env{i}" for i in range(int(overrides["num_envs"]))]
    log_path = Path(tempfile.mkdtemp(prefix="soak_")) / "nodes.log"
    samples = []           # (seconds, {label: MB})
    result = {"minutes": a.minutes, "arguments": overrides, "log": str(log_path)}
    died = []
    with running_graph(resolve(load_graph("sim"), overrides), env=ros_environment(domain_id=domain),
                       log=log_path, monitor=GraphMonitor(names)) as g:
        mon, runner = g.monitor, g.runner
        g.wait_up(lambda mon: all(mon.records[n].ticks for n in names), 600, "no first tick in every env")
        t0 = time.monotonic()
        end = t0 + 60 * a.minutes
        said = t0
        while time.monotonic() < end:
            samples.append((time.monotonic() - t0,
                            {p.spec.label: group_rss_mb(p.popen.pid) for p in runner.procs}))
            if time.monotonic() - said >= 60:         # progress, once a minute
                said = time.monotonic()
                ended = sum(sum(1 for t in mon.records[n].ticks if t.end) for n in names)
                rss = ", ".join(f"{k} {v:.0f}" for k, v in samples[-1][1].items())
                print(f"[soak] {(said - t0) / 60:.0f}/{a.minutes:g} min, {ended} episodes; RSS MB: {rss}",
                      flush=True)
            dead = runner.dead()
            if dead:
                died = [runner.describe_death(p) for p in dead]
                break
            mon.wait_for(lambda: False, min(a.every, max(0.0, end - time.monotonic())))
        mon.wait_for(lambda: False, 3.0)      # the last held rewards and diagnostics
        learner = mon.node_diagnostics("/learner")
    codes = g.codes
    # ticks without a held reward, per env (the last tick may be in flight: allow it)
    missing = {}
    for n in names:
        rec = mon.records[n]
        held = {(h.episode, h.tick) for h in rec.held}
        ticks = [(t.episode, t.tick) for t in rec.ticks]
        gaps = [t for t in ticks[:-1] if t not in held]
        if gaps:
            missing[n] = {"count": len(gaps), "first": gaps[:5]}
    published = sum(len(mon.records[n].policy_steps) for n in names)
    recorded_steps = sum(int(learner.get(f"{n}_steps", 0)) for n in names)
    # a PolicyStep the learner missed leaves its episode incomplete: aborted (partly written)
    # or dropped (nothing written); none may happen in a run without faults
    lost = {f"{n}_{k}": int(learner.get(f"{n}_{k}", 0)) for n in names
            for k in ("episodes_aborted", "episodes_dropped", "episodes_fallback", "steps_invalid")}
    complete = sum(int(learner.get(f"{n}_episodes_complete", 0)) for n in names)
    t = np.array([s for s, _ in samples])
    growth = {}
    for label in (samples[0][1] if samples else {}):
        y = np.array([m[label] for _, m in samples])
        after = t >= a.warmup_fraction * t[-1]
        slope = float(np.polyfit(t[after] / 60.0, y[after], 1)[0]) if after.sum() >= 3 else float("nan")
        growth[label] = {"start_mb": round(float(y[0]), 1), "after_warmup_mb": round(float(y[after][0]), 1),
                         "end_mb": round(float(y[-1]), 1),
                         "growth_after_warmup_mb": round(float(y[-1] - y[after][0]), 1),
                         "slope_mb_per_min": round(slope, 2)}
    episodes = {n: len({t.episode for t in mon.records[n].ticks if t.end}) for n in names}
    result.update({"samples": len(samples), "episodes_ended": episodes, "rss": growth,
                   "ticks_without_held_reward": missing, "policy_steps_published": published,
                   "learner_steps_recorded": recorded_steps, "learner": learner,
                   "exit_codes": codes, "died": died, "learner_episodes_complete": complete,
                   "learner_episodes_set_aside": lost,
                   # every sample, so a growth can be told from a swing: [seconds, {node: MB}]
                   "series": [[round(t, 1), {k: round(v, 1) for k, v in m.items()}] for t, m in samples]})
    problems = []
    if died:
        problems.append(f"node(s) died: {died}")
    for label, g in growth.items():
        if g["growth_after_warmup_mb"] > a.max_growth_mb:
            problems.append(f"{label} grew {g['growth_after_warmup_mb']} MB after the warm-up "
                            f"({g['slope_mb_per_min']} MB/min)")
    if missing:
        problems.append(f"ticks without a held reward: {missing}")
    if any(lost.values()):
        problems.append(f"the learner lost or set aside episodes/steps: {lost}")
    if complete == 0:
        problems.append("the learner completed no episode")
    if recorded_steps > published:
        problems.append(f"the learner recorded {recorded_steps} steps but the policies published {published}")
    result["problems"] = problems
    print(f"soak {a.minutes:g} min, {sum(episodes.values())} episodes ended, {len(samples)} RSS samples")
    print(f"  {'node':<24}{'start MB':>10}{'warm MB':>10}{'end MB':>10}{'growth':>9}{'MB/min':>9}")
    for label, g in growth.items():
        print(f"  {label:<24}{g['start_mb']:>10}{g['after_warmup_mb']:>10}{g['end_mb']:>10}"
              f"{g['growth_after_warmup_mb']:>9}{g['slope_mb_per_min']:>9}")
    print(f"  ticks without a held reward: {sum(v['count'] for v in missing.values())}; policy steps "
          f"published {published}, recorded by the learner {recorded_steps}; learner episodes complete "
          f"{complete}, set aside {lost}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1, default=str))
    if problems:
        print("FAILED: " + "; ".join(problems))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
