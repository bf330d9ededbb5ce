"""Control-tick jitter at the bridge with the reward node busy vs idle.

Same graph, run twice side by side in one invocation: the bridge in realtime mode at a fixed
rate with a zero policy; once without a reward node (idle), once with a reward node scoring
every K ticks with a random-weight tiny Qwen3-VL (--interval 1: its engine is never idle). Reports
the tick period distribution at the bridge (its publish stamps; p50/p99/max of
|period - nominal|) and as received by a subscriber (p99), the
bridge's own overrun and fallback counters, and the ratio busy/idle of the p99 jitter. The
bridge never subscribes to rewards, so no tick can wait on one; what remains is CPU
contention on this 2-core machine.

  .venv/bin/python bench/bench_tick_jitter.py [--rate 10] [--seconds 30] [--interval 10] [--backend topreward]
"""
import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lrm_ros.bringup.graph import load_graph, resolve
from lrm_ros.bringup.runner import unclean_exits
from lrm_ros.bringup.session import running_graph
from lrm_ros.rewards.hold import DEFAULT_INTERVAL
from lrm_ros.ros.env import apply_ros_environment, fresh_domain_id, ros_environment


def run_case(name, args, model_dir, domain, log):
    from lrm_ros.ros.monitor import GraphMonitor
    # wall-clock stamps: the bench measures when the bridge really published
    overrides = {"policy": "zero", "mode": "realtime", "num_envs": "1", "use_sim_time": "false",
                 "reward": "none" if name == "idle" else args.backend,
                 "reward_model_path": model_dir, "reward_interval": str(args.interval)}
    specs = resolve(load_graph("sim"), overrides)
    specs = [dataclasses.replace(s, parameters={**s.parameters, "control_rate_hz": args.rate,
                                                "camera_width": 128, "camera_height": 128})
             if s.executable == "maniskill_bridge" else s for s in specs]
    env = ros_environment(domain_id=domain)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    with running_graph(specs, env=env, log=log, monitor=GraphMonitor(["env0"])) as g:
        mon = g.monitor
        g.wait_up((lambda mon: len(mon.records["env0"].held) > 5) if name == "busy" else
                  (lambda mon: len(mon.records["env0"].ticks) > 5), 180, f"{name}: fewer than 6 ticks")
        start = len(mon.records["env0"].ticks)
        print(f"[bench] {name}: measuring {args.seconds:.0f} s", flush=True)
        time.sleep(args.seconds)
        ticks = mon.records["env0"].ticks[start:]
        diag = dict(mon.node_diagnostics("/env0/maniskill_bridge"))
        reward = dict(mon.node_diagnostics("/reward_model"))
        if g.runner.dead():      # the numbers would not be this graph's: say so and stop
            raise RuntimeError(f"{name}: {g.deaths()}")
    bad = unclean_exits(g.codes)
    if bad:
        raise RuntimeError(f"{name}: node(s) did not exit cleanly: {bad}; see {log.name}")
    nominal = 1.0 / args.rate
    # At the bridge: its own publish stamps. At a subscriber: the monitor's receive times.
    stamps = np.array([t.stamp_ns for t in ticks], dtype=np.float64) / 1e9
    recv = np.array([t.t_recv for t in ticks])
    jitter = np.abs(np.diff(stamps) - nominal) * 1000
    jitter_recv = np.abs(np.diff(recv) - nominal) * 1000
    return {
        "case": name, "ticks": len(ticks),
        "period_ms_mean": round(float(np.diff(stamps).mean() * 1000), 2),
        "jitter_ms_p50": round(float(np.percentile(jitter, 50)), 2),
        "jitter_ms_p99": round(float(np.percentile(jitter, 99)), 2),
        "jitter_ms_max": round(float(jitter.max()), 2),
        "recv_jitter_ms_p99": round(float(np.percentile(jitter_recv, 99)), 2),
        "bridge_overruns": diag.get("realtime_overruns"),
        "bridge_late_publishes": diag.get("realtime_late_publishes"),
        "bridge_step_ms_mean": diag.get("step_ms_mean"),
        "reward_queries_ok": reward.get("engine_ok"),
        "reward_batch_mean": reward.get("engine_batch_mean"),
        "reward_latency_p50_ms": reward.get("engine_latency_p50_ms"),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=10.0, help="bridge control rate (Hz)")
    p.add_argument("--seconds", type=float, default=30.0, help="measurement window per case")
    p.add_argument("--backend", default="topreward", choices=["topreward", "vlm"])
    p.add_argument("--interval", type=int, default=DEFAULT_INTERVAL, help="K of the reward node (1 = busy all the time)")
    p.add_argument("--out", default="out/bench/tick_jitter.json")
    args = p.parse_args(argv)
    apply_ros_environment()
    from lrm_ros.rewards.qwen_tiny import make_tiny_qwen3vl
    model_dir = make_tiny_qwen3vl(Path(tempfile.mkdtemp(prefix="lrm_tiny_")) / "qwen3vl")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    with open(out.with_suffix(".nodes.log"), "w") as log:
        for name in ("idle", "busy"):
            results.append(run_case(name, args, str(model_dir), fresh_domain_id(), log))
    idle, busy = results
    ratio = busy["jitter_ms_p99"] / max(idle["jitter_ms_p99"], 1e-6)
    cols = ["case", "ticks", "period_ms_mean", "jitter_ms_p50", "jitter_ms_p99", "jitter_ms_max",
            "recv_jitter_ms_p99",
            "bridge_overruns", "bridge_late_publishes", "reward_queries_ok", "reward_batch_mean", "reward_latency_p50_ms"]
    print("\n" + "  ".join(f"{c[:20]:>20}" for c in cols))
    for r in results:
        print("  ".join(f"{str(r[c]):>20}" for c in cols))
    print(f"\nrealtime {args.rate:g} Hz, reward backend {args.backend} (tiny random Qwen3-VL, K={args.interval}): "
          f"p99 jitter busy/idle = {ratio:.2f}x (goal <= 1.1x); the bridge has no reward "
          "subscription, so no tick waits on a reward")
    out.write_text(json.dumps({"rate_hz": args.rate, "results": results,
                               "p99_ratio_busy_over_idle": ratio}, indent=2))
    print(f"[bench] JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
