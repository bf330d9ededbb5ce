#!/usr/bin/env python3
"""How long each node of the simulated graph takes to exit after SIGINT, under load.

Brings up `sim` (default: 2 envs, tiny_vla, lite reward, PPO learner with 2 episodes per
iteration and 10-tick episodes, so an update is running when the stop comes), waits until
every env has ticked `--ticks` times and (with the learner) an update is under way, then
sends SIGINT to every node at once, as `ros2 launch` does, and reports each node's exit code
and seconds to exit. ros2 launch escalates to SIGTERM after 5 s: every node must be below.

  .venv/bin/python bench/bench_shutdown.py [--rounds 2] [name:=value ...]
Exit code 1 when a node needed more than --limit seconds (default 5) or exited uncleanly.
"""
import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one_round(overrides, ticks, limit, log, need_training) -> dict:
    from lrm_ros.bringup.graph import load_graph, resolve
    from lrm_ros.bringup.session import running_graph
    from lrm_ros.ros.env import apply_ros_environment, fresh_domain_id, ros_environment
    domain = fresh_domain_id()       # one per round
    apply_ros_environment(domain_id=domain)
    from lrm_ros.ros.monitor import GraphMonitor
    specs = resolve(load_graph("sim"), overrides)
    names = [f"env{i}" for i in range(int(overrides.get("num_envs", 1)))]
    with running_graph(specs, env=ros_environment(domain_id=domain), log=log, monitor=GraphMonitor(names),
                       shutdown_timeout_s=60.0) as g:
        mon, runner = g.monitor, g.runner
        g.wait_up(lambda mon: all(len(mon.records[n].ticks) >= ticks for n in names), 600,
                  f"fewer than {ticks} ticks per env")
        if need_training:
            mon.wait_for(lambda: mon.node_diagnostics("/learner").get("training") == "True", 300)
        training = mon.node_diagnostics("/learner").get("training")
        t0 = time.monotonic()
        for p in runner.procs:
            os.killpg(p.popen.pid, signal.SIGINT)
        exit_s = {}
        while len(exit_s) < len(runner.procs) and time.monotonic() - t0 < 60:
            for p in runner.procs:
                if p.spec.label not in exit_s and p.popen.poll() is not None:
                    exit_s[p.spec.label] = time.monotonic() - t0
            time.sleep(0.02)
    codes = g.codes
    return {"training_when_stopped": training,
            "nodes": {k: {"exit_code": codes[k], "seconds": round(exit_s.get(k, float("nan")), 2)}
                      for k in codes}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ticks", type=int, default=25, help="ticks per env before the stop")
    ap.add_argument("--limit", type=float, default=5.0, help="seconds a node may take (ros2 launch: 5)")
    ap.add_argument("arguments", nargs="*", help="graph arguments name:=value")
    a = ap.parse_args(argv)
    from lrm_ros.bringup.graph import parse_launch_arguments
    overrides = {"num_envs": "2", "learner": "ppo", "episodes_per_iteration": "2",
                 "max_episode_ticks": "10", "learner_dir": tempfile.mkdtemp(prefix="bench_shutdown_")}
    overrides.update(parse_launch_arguments(a.arguments))
    worst, bad = 0.0, []
    log_path = Path(tempfile.mkdtemp()) / "nodes.log"
    with open(log_path, "w") as log:
        for r in range(a.rounds):
            res = one_round(overrides, a.ticks, a.limit, log, overrides.get("learner", "none") != "none")
            print(f"round {r + 1}: learner training when stopped: {res['training_when_stopped']}")
            for label, v in res["nodes"].items():
                print(f"  {label:<24} exit {v['exit_code']!s:>4}  {v['seconds']:6.2f} s")
                worst = max(worst, v["seconds"]) if v["seconds"] == v["seconds"] else float("inf")
                if v["exit_code"] != 0 or not v["seconds"] <= a.limit:
                    bad.append((r + 1, label, v))
    print(f"slowest exit {worst:.2f} s (limit {a.limit} s); node output: {log_path}")
    if bad:
        print(f"FAILED: {bad}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
