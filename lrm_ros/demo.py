"""`lrm-ros demo` (`make demo`): the main job on the embedded defaults.

Today: brings the simulated graph up (ManiSkill bridges in lockstep, camera ingest, a random
scripted policy, one reward node serving every environment), runs a number of control ticks per environment with a progress bar, shuts
the graph down and reports what flowed: per environment the ticks, episodes, frames at model
resolution, joint states, oracle rewards and successes, the bridge's command counters, and
the tick rate, the held rewards and reward queries; as a table on the terminal, report.json and plots in --out.
"""
import json
import os
import sys
import time
from pathlib import Path

from lrm_ros.bringup.graph import argument_defaults, load_graph, parse_launch_arguments, resolve
from lrm_ros.bringup.runner import GraphRunner
from lrm_ros.ros.env import apply_ros_environment, ros_environment


def _summarise(ns, rec, diag, image_size):
    ticks = rec.ticks
    episodes = sorted({t[0] for t in ticks})
    ends = [t for t in ticks if t[3]]
    rate = 0.0
    if len(ticks) > 1:
        rate = (len(ticks) - 1) / max(1e-9, ticks[-1][6] - ticks[0][6])
    sizes = sorted({f"{w}x{h} {e}" for _, w, h, e, _ in rec.frames})
    dense = [o[3] for o in rec.oracle]
    return {
        "namespace": ns,
        "instruction": rec.instruction,
        "ticks": len(ticks),
        "episodes_seen": len(episodes),
        "episodes_ended": len(ends),
        "successes": sum(1 for t in ends if t[4] == 1),
        "ticks_per_s": round(rate, 2),
        "raw_images": len(rec.raw_images),
        "frames": len(rec.frames),
        "frame_sizes": sizes,
        "frames_at_model_resolution": all(w == image_size and h == image_size
                                          for _, w, h, _, _ in rec.frames),
        "joint_states": rec.joint_states,
        "camera_infos": rec.camera_infos,
        "oracle": len(rec.oracle),
        "oracle_normalized_reward_mean": round(sum(dense) / len(dense), 4) if dense else None,
        "held_rewards": len(rec.held),
        "held_stale": sum(1 for h in rec.held if h[5]),
        "reward_queries": len(rec.results),
        "reward_queries_ok": sum(1 for r in rec.results if r[2] == 0),
        "reward_latency_ms_mean": round(1000 * sum(r[4] for r in rec.results) / len(rec.results), 1)
        if rec.results else None,
        "bridge": {k: diag.get(k) for k in ("commands_accepted", "commands_rejected_size",
                                            "commands_rejected_nonfinite", "command_timeouts",
                                            "step_ms_mean")},
    }


def _plot(records, out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(records)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.6 * n), squeeze=False)
    for ax, (ns, rec) in zip(axes[:, 0], records.items()):
        xs = list(range(len(rec.oracle)))
        ax.plot(xs, [o[3] for o in rec.oracle], lw=1.2, label="oracle normalized dense reward")
        if rec.held:
            ax.step(range(len(rec.held)), [h[2] for h in rec.held], where="post", lw=1.0,
                    label="reward/held (interval-hold)")
            stale = [i for i, h in enumerate(rec.held) if h[5]]
            if stale:
                ax.plot(stale, [rec.held[i][2] for i in stale], "rx", ms=3, label="stale")
        for i, o in enumerate(rec.oracle):
            if o[1] == 0 and i > 0:
                ax.axvline(i, color="grey", lw=0.6, ls="--")
        ax.set_title(f"{ns}: {rec.instruction or ''}", fontsize=9)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("tick (all episodes; dashed = new episode)")
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = out / "oracle_reward.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    frames = [f for rec in records.values() for f in rec.sample_frames][:8]
    if frames:
        fig, axes = plt.subplots(1, len(frames), figsize=(2 * len(frames), 2.2), squeeze=False)
        for ax, (_, rgb) in zip(axes[0], frames):
            ax.imshow(rgb)
            ax.axis("off")
        fig.suptitle("camera/frame samples", fontsize=9)
        fig.savefig(out / "frames.png", dpi=90)
        plt.close(fig)
    return path


def run_demo(ns) -> int:
    from tqdm import tqdm
    graph = load_graph("sim")
    overrides = {"num_envs": "2"}
    overrides.update(parse_launch_arguments(ns.arguments))
    args = argument_defaults(graph)
    args.update(overrides)
    specs = resolve(graph, overrides)
    num_envs = int(args["num_envs"])
    image_size = int(args["image_size"])
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    domain = 100 + os.getpid() % 100
    env = ros_environment(domain_id=domain)
    apply_ros_environment(domain_id=domain)
    from lrm_ros.ros.monitor import GraphMonitor

    names = [f"env{i}" for i in range(num_envs)]
    log_path = out / "nodes.log"
    print(f"[demo] sim graph: {num_envs} x {args['env_id']} ({args['mode']}, policy "
          f"{args['policy']}), {ns.ticks} ticks each; node output -> {log_path}", flush=True)
    total = ns.ticks * num_envs
    code = 0
    with open(log_path, "w") as log, GraphMonitor(names, keep_frames_every=25) as mon:
        runner = GraphRunner(specs, env=env, output=log).start()
        start = time.monotonic()
        try:
            with tqdm(total=total, desc="ticks", unit="tick", file=sys.stdout) as bar:
                done = 0
                while done < total:
                    mon.wait_for(lambda: sum(min(len(r.ticks), ns.ticks)
                                             for r in mon.records.values()) > done, 1.0)
                    now = sum(min(len(r.ticks), ns.ticks) for r in mon.records.values())
                    bar.update(now - done)
                    done = now
                    dead = runner.dead()
                    if dead:
                        for proc in dead:
                            print(f"[demo] {runner.describe_death(proc)}", flush=True)
                        code = 1
                        break
                    if time.monotonic() - start > ns.timeout:
                        print(f"[demo] timed out after {ns.timeout:.0f} s", flush=True)
                        code = 1
                        break
            time.sleep(1.5)  # one more diagnostics period
        except KeyboardInterrupt:
            code = 130
        finally:
            runner.stop()
        elapsed = time.monotonic() - start
        summaries = [_summarise(n, mon.records[n], mon.node_diagnostics(f"/{n}/maniskill_bridge"),
                                image_size) for n in names]
        plot = _plot(mon.records, out)
    report = {"graph": "sim", "arguments": args, "ticks_requested": ns.ticks,
              "elapsed_s": round(elapsed, 1), "envs": summaries}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"\n[demo] what flowed in {elapsed:.0f} s:")
    cols = ("namespace", "ticks", "episodes_ended", "successes", "ticks_per_s", "frames",
            "oracle", "held_rewards", "reward_queries")
    print("  " + "  ".join(f"{c:>14}" for c in cols))
    for s in summaries:
        print("  " + "  ".join(f"{str(s[c]):>14}" for c in cols))
    for s in summaries:
        print(f"  {s['namespace']}: frames {', '.join(s['frame_sizes'])}; bridge {s['bridge']}; "
              f"instruction: {s['instruction']!r}")
        print(f"  {s['namespace']}: reward: {s['held_rewards']} held ({s['held_stale']} stale), "
              f"{s['reward_queries_ok']}/{s['reward_queries']} queries ok, mean latency "
              f"{s['reward_latency_ms_mean']} ms")
        if not s["ticks"] or not s["frames"] or not s["frames_at_model_resolution"] or \
                (args["reward"] != "none" and not s["reward_queries_ok"]):
            code = code or 1
    print(f"[demo] report: {out / 'report.json'}, plots: {plot}" +
          (f", {out / 'frames.png'}" if (out / "frames.png").exists() else ""))
    print("[demo] " + ("OK" if code == 0 else "FAILED: see the lines above and " + str(log_path)))
    return code
