#!/usr/bin/env python3
"""Benchmark: ManiSkill raw loop vs. the same task stepped through the ROS graph (no assertions).

Run:  .venv/bin/python bench/bench_bridge.py [--ticks 100] [--env-id PickCube-v1] [--envs 1,2]

Same task, control mode (pd_ee_delta_pose), camera (rgb 256x256) and random actions everywhere:

1. raw    ManiSkillSim in this process, no ROS: N steps after a warm-up (the first reset and
          the shader compile are excluded) -> ticks/s and mean sim.step time.
2. graph  maniskill_bridge + camera_ingest started by GraphRunner (policy:=none, lockstep,
          private ROS_DOMAIN_ID); a GraphMonitor answers every control tick at once from its
          on_tick callback with a random command -> ticks/s over N ticks after warm-up, the
          ratio graph/raw (the cost of the plumbing: image publishing, command round trip)
          and the bridge's own sim.step time (its /diagnostics, windowed).
3. frame latency  camera/image_raw -> camera/frame (224x224): frames and raw images matched
          by header stamp, receive times in the monitor (ingest conversion + one extra hop),
          and bridge publish (header stamp, node clock = wall time: the graph runs with
          use_sim_time:=false here) -> frame/tick receive in the monitor (monotonic receive
          times mapped to wall time with one offset); refused, not printed, when the stamps
          turn out not to be wall time.
4. with --envs 1,2 (default) the same at 2 envs: raw = 2 worker processes stepping at once
          (aggregate = sum of their rates), graph = num_envs:=2 (4 node processes; reward:=none).

Prints progress lines and a table; writes JSON to --out (default out/bench/bridge.json) and
the nodes' output to nodes.log next to it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from timing import dist_ms, percentile

CONTROL_MODE = "pd_ee_delta_pose"
STAMP_SANITY_S = 10.0    # a publish->receive "latency" beyond this: the stamps are not wall time
CAMERA = 256
IMAGE_SIZE = 224
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[bench {time.monotonic() - T0:6.1f}s] {text}", flush=True)


pct = percentile


# --------------------------------------------------------------------------- raw loop
class RawSim:
    """ManiSkillSim without ROS, kept open so that timed blocks can run before and after the
    graph (this machine is shared: bracketing the graph run shows how much the load moved).
    Creation, the first reset (shader compile) and `warmup` steps are untimed."""

    def __init__(self, env_id: str, warmup: int, seed: int):
        from lrm_ros.sim.maniskill_env import ManiSkillSim, SimConfig

        t = time.monotonic()
        self.sim = ManiSkillSim(SimConfig(env_id=env_id, control_mode=CONTROL_MODE,
                                          camera_width=CAMERA, camera_height=CAMERA))
        self.create_s = round(time.monotonic() - t, 2)
        self.rng = np.random.default_rng(seed)
        t = time.monotonic()
        self.sim.reset(seed=seed)
        self.first_reset_s = round(time.monotonic() - t, 3)
        self.run(warmup)

    def _action(self):
        return self.rng.uniform(self.sim.action_low, self.sim.action_high)

    def run(self, ticks: int) -> dict:
        """`ticks` random-action steps; an ended episode is reset (in the time, not a tick)."""
        sim = self.sim
        step_times, resets = [], 0
        start = time.monotonic()
        for _ in range(ticks):
            if sim.episode_done:
                sim.reset()
                resets += 1
            action = self._action()
            t = time.perf_counter()
            sim.step(action)
            step_times.append(time.perf_counter() - t)
        end = time.monotonic()
        return {"ticks": ticks, "start": start, "end": end, "elapsed_s": end - start,
                "ticks_per_s": ticks / max(1e-9, end - start), "resets": resets,
                "step_ms": dist_ms(step_times), "step_s_sum": sum(step_times),
                "create_s": self.create_s, "first_reset_s": self.first_reset_s,
                "action_low": sim.action_low.tolist(), "action_high": sim.action_high.tolist()}

    def close(self) -> None:
        self.sim.close()


def raw_worker_main(ns) -> int:
    """`--raw-worker`: a RawSim in its own process. Prints READY after the warm-up, then per
    stdin line `GO <ticks>` one `RESULT <json>` line; exits on EOF or QUIT."""
    raw = RawSim(ns.env_id, ns.warmup, ns.seed)
    print("READY", flush=True)
    try:
        for line in sys.stdin:
            if not line.startswith("GO"):
                break
            print("RESULT " + json.dumps(raw.run(int(line.split()[1]))), flush=True)
    finally:
        raw.close()
    return 0


def _aggregate(results) -> dict:
    return {"per_env": results, "ticks_per_s": sum(r["ticks_per_s"] for r in results),
            "wall_s": max(r["end"] for r in results) - min(r["start"] for r in results)}


class RawGroup:
    """n RawSims: in this process for n == 1, else n worker processes stepping at once."""

    def __init__(self, env_id: str, warmup: int, n: int, seed: int, timeout_s: float):
        self.n = n
        self.local = None
        self.procs = []
        if n == 1:
            self.local = RawSim(env_id, warmup, seed)
            return
        cmd = [sys.executable, os.path.abspath(__file__), "--raw-worker", "--env-id", env_id,
               "--warmup", str(warmup)]
        self.procs = [subprocess.Popen(cmd + ["--seed", str(seed + i)], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       text=True) for i in range(n)]
        try:
            for p in self.procs:
                if not self._read(p).startswith("READY"):
                    raise RuntimeError(f"raw worker {p.pid} exited before READY")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _read(p) -> str:
        while True:
            line = p.stdout.readline()
            if not line or line.startswith(("READY", "RESULT ")):
                return line

    def run(self, ticks: int) -> dict:
        if self.local is not None:
            return _aggregate([self.local.run(ticks)])
        for p in self.procs:
            p.stdin.write(f"GO {ticks}\n")
            p.stdin.flush()
        results = []
        for p in self.procs:
            line = self._read(p)
            if not line.startswith("RESULT "):
                raise RuntimeError(f"raw worker {p.pid} gave no result")
            results.append(json.loads(line[len("RESULT "):]))
        return _aggregate(results)

    def close(self) -> None:
        if self.local is not None:
            self.local.close()
            self.local = None
        for p in self.procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


# --------------------------------------------------------------------------- graph
def graph_run(env_id: str, ticks: int, warmup: int, num_envs: int, domain: int, log,
              timeout_s: float, bounds) -> dict:
    from lrm_ros.bringup.graph import load_graph, resolve
    from lrm_ros.bringup.session import running_graph
    from lrm_ros.ros.env import apply_ros_environment, ros_environment

    env = ros_environment(domain_id=domain)
    apply_ros_environment(domain_id=domain)
    from lrm_ros.ros.monitor import GraphMonitor

    # use_sim_time:=false: the latencies below compare header stamps with wall-clock receive
    # times, so the bridge must stamp with wall time (the graph's default is simulated time:
    # 1 s + ticks x period, which gave "latencies" of 1.8e12 ms). reward:=none: bridge and
    # ingest only, as described above (the graph's default would add the lite reward model).
    specs = resolve(load_graph("sim"), {
        "policy": "none", "reward": "none", "use_sim_time": "false", "num_envs": str(num_envs),
        "env_id": env_id, "control_mode": CONTROL_MODE, "mode": "lockstep", "image_size": str(IMAGE_SIZE)})
    names = [f"env{i}" for i in range(num_envs)]
    rngs = {ns: np.random.default_rng(100 + i) for i, ns in enumerate(names)}
    low, high = (np.asarray(b, dtype=np.float64) for b in bounds)
    answered = {ns: 0 for ns in names}
    needed = warmup + ticks + 2  # +1 so the window's last tick exists, +1 for a reset tick
    mon_ref = []

    def on_tick(ns, m):
        # Answer at once, like the scripted policy: every tick except an episode's end tick.
        if m.episode_end or answered[ns] >= needed + 200 or not mon_ref:
            return
        answered[ns] += 1
        mon_ref[0].send_command(ns, rngs[ns].uniform(low, high))

    diag_samples = {ns: [] for ns in names}
    out = {"num_envs": num_envs, "domain_id": domain}
    t_start = time.monotonic()
    with running_graph(specs, env=env, log=log,
                       monitor=GraphMonitor(names, on_tick=on_tick, node_name="bench_monitor")) as g:
        mon, runner = g.monitor, g.runner
        mon_ref.append(mon)
        say(f"graph x{num_envs}: started {len(specs)} node processes (domain {domain}); "
            "waiting for the first control tick")
        g.wait_up(lambda mon: all(mon.records[n].ticks for n in names), timeout_s,
                  f"no control tick within {timeout_s:.0f} s")
        out["startup_s"] = round(time.monotonic() - t_start, 2)
        say(f"graph x{num_envs}: first tick after {out['startup_s']} s; running "
            f"{warmup} warm-up + {ticks} ticks per env")
        last_print = time.monotonic()
        deadline = time.monotonic() + timeout_s
        while True:
            done = min(len(mon.records[n].ticks) for n in names)
            if done >= needed:
                break
            for n in names:
                d = mon.node_diagnostics(f"/{n}/maniskill_bridge")
                if d and (not diag_samples[n] or diag_samples[n][-1][0] != d.get("ticks_total")):
                    diag_samples[n].append((d.get("ticks_total"), d.get("step_ms_mean"),
                                            d.get("command_timeouts")))
            if runner.dead():
                raise RuntimeError(g.deaths())
            if time.monotonic() > deadline:
                raise TimeoutError(f"graph x{num_envs}: only {done} ticks in {timeout_s:.0f} s")
            if time.monotonic() - last_print > 5.0:
                say(f"graph x{num_envs}: {done}/{needed} ticks per env")
                last_print = time.monotonic()
            mon.wait_for(lambda: min(len(mon.records[n].ticks) for n in names) > done, 0.5)
        # one more diagnostics period so the windowed step time covers the window's end
        mon.wait_for(lambda: False, 1.2)
        for n in names:
            d = mon.node_diagnostics(f"/{n}/maniskill_bridge")
            if d:
                diag_samples[n].append((d.get("ticks_total"), d.get("step_ms_mean"),
                                        d.get("command_timeouts")))
        # monotonic -> wall offset, sampled now (drift over a minute is negligible)
        offset_ns = min(((time.time_ns() - time.monotonic_ns()) for _ in range(5)), key=abs)
        say(f"graph x{num_envs}: stopping the node processes")
    out["exit_codes"] = g.codes
    out["per_env"] = {}
    for n in names:     # the monitor is closed; what it recorded stays
        rec = mon.records[n]
        out["per_env"][n] = _graph_env_stats(rec, warmup, ticks, offset_ns,
                                             diag_samples[n],
                                             mon.node_diagnostics(f"/{n}/camera_ingest"))
    out["ticks_per_s"] = sum(e["ticks_per_s"] for e in out["per_env"].values())
    return out


def _graph_env_stats(rec, warmup, ticks, offset_ns, diag, ingest_diag) -> dict:
    tk = list(rec.ticks)                            # monitor TickRecords
    window = tk[warmup:warmup + ticks + 1]
    steps = sum(1 for t in window[1:] if t.tick > 0)  # tick 0 of an episode is a reset, not a step
    resets = sum(1 for t in window[1:] if t.tick == 0)
    elapsed = window[-1].t_recv - window[0].t_recv
    periods = [b.t_recv - a.t_recv for a, b in zip(window, window[1:])
               if b.tick > 0 and b.episode == a.episode]
    w0, w1 = window[0].t_recv, window[-1].t_recv
    fallbacks_in_window = sum(
        1 for a, b in zip(window, window[1:]) if b.episode == a.episode and b.fallbacks > a.fallbacks)
    # bridge publish (stamp, wall) -> tick received by the monitor (monotonic + offset)
    tick_lat = [(t.t_recv * 1e9 + offset_ns - t.stamp_ns) / 1e9 for t in window]
    wall_stamps = bool(tick_lat) and abs(statistics.median(tick_lat)) < STAMP_SANITY_S
    # frames vs raw images, matched by stamp, inside the window
    raw = {}
    for r in rec.raw_images:
        raw.setdefault(r.stamp_ns, r.t_recv)
    ingest_lat, pub_to_frame, pub_to_raw = [], [], []
    frames_in_window = 0
    for f in rec.frames:
        if not (w0 <= f.t_recv <= w1 + 1.0):
            continue
        frames_in_window += 1
        pub_to_frame.append((f.t_recv * 1e9 + offset_ns - f.stamp_ns) / 1e9)
        if f.stamp_ns in raw:
            ingest_lat.append(f.t_recv - raw[f.stamp_ns])
    for r in rec.raw_images:
        if w0 <= r.t_recv <= w1 + 1.0:
            pub_to_raw.append((r.t_recv * 1e9 + offset_ns - r.stamp_ns) / 1e9)
    # windowed bridge step time from /diagnostics (cumulative mean * count, differenced)
    step_ms_window = None
    timeouts = None
    samples = [(int(a), float(b), int(c)) for a, b, c in diag if a is not None and b is not None]
    if samples:
        timeouts = samples[-1][2]
        lo = next((s for s in samples if s[0] >= warmup), samples[0])
        hi = samples[-1]
        if hi[0] > lo[0]:
            step_ms_window = (hi[1] * hi[0] - lo[1] * lo[0]) / (hi[0] - lo[0])
    sizes = sorted({f"{f.width}x{f.height} {f.encoding}" for f in rec.frames})
    return {
        "ticks_window": len(window) - 1, "steps": steps, "resets": resets,
        "elapsed_s": elapsed, "ticks_per_s": steps / elapsed if elapsed > 0 else 0.0,
        "tick_period_ms": dist_ms(periods),
        "bridge_step_ms_window": None if step_ms_window is None else round(step_ms_window, 2),
        "bridge_step_ms_mean_all": samples[-1][1] if samples else None,
        "bridge_ticks_total": samples[-1][0] if samples else None,
        "command_timeouts": timeouts, "fallback_ticks_in_window": fallbacks_in_window,
        "raw_images_total": len(rec.raw_images), "frames_total": len(rec.frames),
        "frames_in_window": frames_in_window, "frames_matched": len(ingest_lat),
        "frame_sizes": sizes,
        "latency_raw_to_frame_ms": dist_ms(ingest_lat),
        # publish latencies need wall-clock stamps: refused (None, with the reason) otherwise
        "stamps_are_wall_time": wall_stamps,
        "latency_publish_to_frame_ms": dist_ms(pub_to_frame) if wall_stamps else None,
        "latency_publish_to_raw_ms": dist_ms(pub_to_raw) if wall_stamps else None,
        "latency_publish_to_tick_ms": dist_ms(tick_lat) if wall_stamps else None,
        "ingest": {k: ingest_diag.get(k) for k in ("converted", "dropped")} if ingest_diag else None,
    }


def _combine_raw(blocks) -> dict:
    """Raw blocks (before/after the graph) -> per-env rate over both, summed over envs."""
    n = len(blocks[0]["per_env"])
    rates, step_means, p95 = [], [], []
    for i in range(n):
        rs = [b["per_env"][i] for b in blocks]
        ticks = sum(r["ticks"] for r in rs)
        rates.append(ticks / sum(r["elapsed_s"] for r in rs))
        step_means.append(1000.0 * sum(r["step_s_sum"] for r in rs) / ticks)
        p95.append(max(r["step_ms"]["p95"] for r in rs))
    return {"ticks_per_s": sum(rates), "per_env_ticks_per_s": rates,
            "step_ms_mean": statistics.fmean(step_means), "step_ms_p95": max(p95),
            "block_ticks_per_s": [b["ticks_per_s"] for b in blocks], "blocks": blocks,
            "create_s": blocks[0]["per_env"][0]["create_s"]}


# --------------------------------------------------------------------------- report
def fmt(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}"


def report(res: dict) -> None:
    print()
    print(f"== bench_bridge: {res['env_id']} {CONTROL_MODE}, camera {CAMERA}x{CAMERA} rgb, "
          f"frame {IMAGE_SIZE}x{IMAGE_SIZE}, {res['ticks']} ticks after {res['warmup']} warm-up, "
          f"{os.cpu_count()} cpu ==")
    hdr = (f"  {'case':<10}{'ticks/s':>9}{'vs raw':>8}{'ms/tick':>9}{'step ms':>9}"
           f"{'non-step ms':>13}{'p95 ms':>8}   raw before/after graph (ticks/s), load avg")
    print(hdr)
    for n in res["envs"]:
        raw = res.get(f"raw_x{n}")
        graph = res.get(f"graph_x{n}")
        load = res.get(f"load_x{n}", {})
        if raw:
            step, p95 = raw["step_ms_mean"], raw["step_ms_p95"]
            per_tick = 1000 * n / raw["ticks_per_s"]
            ba = " / ".join(f"{v:.2f}" for v in raw["block_ticks_per_s"])
            la = " -> ".join(f"{v[0]:.1f}" for v in load.values())
            print(f"  {'raw x%d' % n:<10}{raw['ticks_per_s']:>9.2f}{'1.00':>8}{per_tick:>9.1f}"
                  f"{step:>9.1f}{per_tick - step:>13.1f}{p95:>8.1f}   {ba}; load {la}")
        if graph and "per_env" in graph:
            envs = list(graph["per_env"].values())
            steps = [e["bridge_step_ms_window"] for e in envs if e["bridge_step_ms_window"]]
            step = statistics.fmean(steps) if steps else None
            p95 = max((e["tick_period_ms"]["p95"] or 0) for e in envs)
            ratio = graph["ticks_per_s"] / raw["ticks_per_s"] if raw else None
            per_tick = 1000 * n / graph["ticks_per_s"]
            print(f"  {'graph x%d' % n:<10}{graph['ticks_per_s']:>9.2f}{fmt(ratio, 2):>8}"
                  f"{per_tick:>9.1f}{fmt(step):>9}"
                  f"{fmt(per_tick - step if step else None):>13}{p95:>8.1f}")
        elif graph:
            print(f"  {'graph x%d' % n:<10}  FAILED: {graph.get('error')}")
    print("  ticks/s: sum over envs; ms/tick: per env; step ms: mean sim.step (graph: the bridge's"
          " own /diagnostics over the window);\n  non-step ms = ms/tick - step ms (raw: resets,"
          " action sampling; graph: + image/tick publishing, command round trip, waiting);\n"
          "  p95 ms: raw = sim.step, graph = tick period seen by the monitor. The machine may be"
          " shared: compare raw before/after.")
    for n in res["envs"]:
        raw = res.get(f"raw_x{n}")
        if raw and len(raw["block_ticks_per_s"]) == 2:
            a, b = raw["block_ticks_per_s"]
            if abs(a - b) > 0.2 * max(a, b):
                print(f"  WARNING raw x{n} moved {a:.2f} -> {b:.2f} ticks/s between the blocks "
                      "around the graph run: other load on the machine; ratios are noisy")
    for n in res["envs"]:
        graph = res.get(f"graph_x{n}")
        raw = res.get(f"raw_x{n}")
        if not graph or "per_env" not in graph:
            continue
        print(f"\n  graph x{n}: startup {graph.get('startup_s')} s; ratio graph/raw = "
              f"{fmt(graph['ticks_per_s'] / raw['ticks_per_s'], 3) if raw else '-'}")
        for ns, e in graph["per_env"].items():
            per_tick = 1000.0 / e["ticks_per_s"] if e["ticks_per_s"] else None
            overhead = (per_tick - e["bridge_step_ms_window"]
                        if per_tick and e["bridge_step_ms_window"] else None)
            print(f"   {ns}: {e['ticks_per_s']:.2f} ticks/s = {fmt(per_tick)} ms/tick, of which "
                  f"sim.step {fmt(e['bridge_step_ms_window'])} ms, plumbing+reset share "
                  f"{fmt(overhead)} ms; resets {e['resets']}, command timeouts "
                  f"{e['command_timeouts']}, fallback ticks in window {e['fallback_ticks_in_window']}")
            print(f"   {ns}: frames {e['frames_total']} ({', '.join(e['frame_sizes'])}), raw "
                  f"images {e['raw_images_total']}, matched in window {e['frames_matched']}/"
                  f"{e['frames_in_window']}; ingest {e['ingest']}")
            cols = ("n", "p50", "p95", "max", "mean")
            print(f"   {'latency (ms)':<34}" + "".join(f"{c:>8}" for c in cols))
            for label, key in (("image_raw recv -> frame recv", "latency_raw_to_frame_ms"),
                               ("bridge publish -> frame recv", "latency_publish_to_frame_ms"),
                               ("bridge publish -> image_raw recv", "latency_publish_to_raw_ms"),
                               ("bridge publish -> tick recv", "latency_publish_to_tick_ms")):
                d = e[key]
                if d is None:
                    print(f"   {label:<34}  not measured: header stamps are not wall time "
                          "(simulated time?), so publish->receive cannot be computed")
                    continue
                print(f"   {label:<34}" + "".join(f"{fmt(d[c], 2) if c != 'n' else d[c]:>8}"
                                                 for c in cols))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=100, help="timed ticks per env and case")
    ap.add_argument("--warmup", type=int, default=5, help="untimed ticks first (after the reset)")
    ap.add_argument("--env-id", default="PickCube-v1")
    ap.add_argument("--envs", default="1,2", help="env counts to run, e.g. 1 or 1,2")
    ap.add_argument("--out", default="out/bench/bridge.json")
    ap.add_argument("--timeout", type=float, default=120.0, help="per-phase limit (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--raw-worker", action="store_true", help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.raw_worker:
        return raw_worker_main(ns)
    from lrm_ros.ros.env import fresh_domain_id
    envs = sorted({int(x) for x in ns.envs.split(",") if x.strip()})
    out_path = Path(ns.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    log_path = out_path.with_name("nodes.log")
    res = {"env_id": ns.env_id, "control_mode": CONTROL_MODE, "camera": CAMERA,
           "image_size": IMAGE_SIZE, "ticks": ns.ticks, "warmup": ns.warmup, "envs": envs,
           "cpu_count": os.cpu_count()}
    say(f"{ns.env_id}: raw loop and ROS graph, {ns.ticks} ticks after {ns.warmup} warm-up, "
        f"envs {envs}; node output -> {log_path}")
    code = 0
    bounds = None  # action bounds, from the raw loop's ManiSkillSim
    with open(log_path, "w") as log:
        for n in envs:
            say(f"raw x{n}: creating ManiSkillSim" +
                (" in process" if n == 1 else f" in {n} worker processes") +
                f" + {ns.warmup} warm-up steps")
            group, blocks = None, []
            res[f"load_x{n}"] = {"start": os.getloadavg()}
            try:
                try:
                    group = RawGroup(ns.env_id, ns.warmup, n, ns.seed, ns.timeout)
                    half = max(1, ns.ticks // 2)
                    say(f"raw x{n}: {half} timed ticks per env (first half, before the graph)")
                    blocks.append(group.run(half))
                    pe = blocks[0]["per_env"][0]
                    bounds = bounds or (pe["action_low"], pe["action_high"])
                    say(f"raw x{n}: {blocks[0]['ticks_per_s']:.2f} ticks/s")
                except Exception as exc:  # report and go on with the other cases
                    say(f"raw x{n} FAILED: {exc!r}")
                    code = 1
                try:
                    if bounds is None:  # raw failed: ask the sim once for the action space
                        from lrm_ros.sim.maniskill_env import ManiSkillSim, SimConfig
                        with ManiSkillSim(SimConfig(env_id=ns.env_id,
                                                    control_mode=CONTROL_MODE)) as sim:
                            bounds = (sim.action_low.tolist(), sim.action_high.tolist())
                    g = graph_run(ns.env_id, ns.ticks, ns.warmup, n, fresh_domain_id(), log, ns.timeout,
                                  bounds)
                    res[f"graph_x{n}"] = g
                    say(f"graph x{n}: {g['ticks_per_s']:.2f} ticks/s")
                    # the rate is only the graph's own if every tick was stepped with a command
                    # and every node stopped cleanly
                    from lrm_ros.bringup.runner import unclean_exits
                    fb = {e: v["fallback_ticks_in_window"] for e, v in g["per_env"].items()
                          if v["fallback_ticks_in_window"]}
                    bad = unclean_exits(g.get("exit_codes", {}))
                    if fb or bad:
                        say(f"graph x{n} INVALID: fallback ticks in the timed window {fb or 'none'}, "
                            f"unclean node exits {bad or 'none'}")
                        g["invalid"] = {"fallback_ticks": fb, "unclean_exits": bad}
                        code = 1
                except Exception as exc:
                    say(f"graph x{n} FAILED: {exc!r}")
                    res[f"graph_x{n}"] = {"error": repr(exc)}
                    code = 1
                res[f"load_x{n}"]["after_graph"] = os.getloadavg()
                if group is not None and blocks:
                    try:
                        say(f"raw x{n}: {ns.ticks - half} timed ticks per env (second half, "
                            "after the graph)")
                        blocks.append(group.run(max(1, ns.ticks - half)))
                        say(f"raw x{n}: {blocks[1]['ticks_per_s']:.2f} ticks/s")
                    except Exception as exc:
                        say(f"raw x{n} (after) FAILED: {exc!r}")
                        code = 1
            finally:
                if group is not None:
                    group.close()
            if blocks:
                res[f"raw_x{n}"] = _combine_raw(blocks)
    res["total_s"] = round(time.monotonic() - T0, 1)
    report(res)
    out_path.write_text(json.dumps(res, indent=2, default=str))
    print(f"\n[bench] total {res['total_s']} s; JSON: {out_path}; node output: {log_path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
