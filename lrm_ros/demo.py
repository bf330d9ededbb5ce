"""`lrm-ros demo` (`make demo`): the main job on the embedded defaults, through the graph.

Three bring-ups of the simulated graph (2 x ManiSkill PushCube-v1 in lockstep, camera
ingest, the shipped tiny_vla policy, the shipped lite reward model's completion signal,
the learner in the second):
  1. evaluate the imitation-learned policy (deterministic) for --eval-episodes per env;
  2. learn: the learner records every episode and runs --iterations updates of filtered
     behaviour cloning on the rollouts the simulator calls successful (and every earlier
     success), while the lite reward model scores every episode; the policies swap each new
     checkpoint in between episodes;
  3. evaluate the final policy on the same episode seeds.
Prints success before/after (with 95% Wilson intervals) and writes --out/report.json,
report.html and plots (success before/after, reward and success over iterations, reward
traces of the evaluation episodes). Extra `name:=value` arguments go to every bring-up.

Why one file: it is the application a new user runs first; its phases, the checks that keep a
phase's figures honest (dead nodes, discovery faults, fallback commands, the policy version)
and its report are read together when a run fails.
"""
import json
import math
import shutil
import sys
import time
from pathlib import Path

from lrm_ros.bringup.graph import argument_defaults, load_graph, parse_launch_arguments, resolve
from lrm_ros.bringup.runner import unclean_exits
from lrm_ros.bringup.session import running_graph
from lrm_ros.common.episode_end import END_SUCCESS
from lrm_ros.learn.rollout import wilson_interval
from lrm_ros.ros.env import apply_ros_environment, fresh_domain_id, ros_environment


class PhaseError(RuntimeError):
    pass


def _checkpoint_version(path: str) -> int:
    """The policy version a tiny_vla checkpoint carries ('' = the shipped one)."""
    from lrm_ros.policy.adapter import DEFAULT_CHECKPOINT
    from lrm_ros.policy.tiny_vla import load_policy
    return int(load_policy(path or DEFAULT_CHECKPOINT)[1].get("version", 0))


def _ended(rec):
    """(episode, success) of every ended episode, in order."""
    return [(t.episode, t.reason == END_SUCCESS) for t in rec.ticks if t.end]


class DiscoveryFault(PhaseError):
    """A bridge does not see nodes that the monitor sees active (DDS discovery failed)."""


# how long a bridge may wait for nodes the monitor already sees active (discovery among
# processes on one host takes 0.5-3 s here, see ../shared/ENVIRONMENT.md)
DISCOVERY_GRACE_S = 30.0


def _run_phase(title, overrides, names, done, progress, total, timeout, log, unit="ep", attempts=2):
    """Bring the graph up with `overrides`, wait until done(monitor), shut it down. A bring-up
    whose bridge cannot discover nodes that are up (`GraphMonitor.blind_bridges`) is retried
    once on a fresh DDS domain. Nothing of the failed bring-up is kept: its monitor (what the
    other envs did meanwhile) is dropped, and so is the learner's directory, which the learner
    would otherwise resume from."""
    for attempt in range(1, attempts + 1):
        try:
            return _run_phase_once(title, overrides, names, done, progress, total, timeout, log, unit)
        except DiscoveryFault as exc:
            if attempt == attempts:
                raise PhaseError(f"{exc} (on {attempts} bring-ups, each on its own DDS domain)") from exc
            if overrides.get("learner_dir") and Path(overrides["learner_dir"]).exists():
                shutil.rmtree(overrides["learner_dir"])
            print(f"[demo] {exc}; discarding that bring-up and bringing the graph up again on a "
                  "fresh DDS domain", flush=True)
            log.write(f"\n[demo] retrying the bring-up: {exc}\n")


def _run_phase_once(title, overrides, names, done, progress, total, timeout, log, unit):
    from tqdm import tqdm
    from lrm_ros.ros.monitor import GraphMonitor
    specs = resolve(load_graph("sim"), overrides)
    domain = fresh_domain_id()        # one per bring-up: see fresh_domain_id
    env = ros_environment(domain_id=domain)
    apply_ros_environment(domain_id=domain)
    print(f"[demo] {title}", flush=True)
    log.write(f"\n===== {title} (ROS_DOMAIN_ID={domain}) =====\n")
    log.flush()
    start = time.monotonic()
    blind_since = None
    with running_graph(specs, env=env, log=log, monitor=GraphMonitor(names)) as g:
        mon, runner = g.monitor, g.runner
        with tqdm(total=total, desc=title.split(":")[0], unit=unit, file=sys.stdout,
                  mininterval=5.0) as bar:
            while not done(mon):
                mon.wait_for(lambda: done(mon), 1.0)
                n = min(total, progress(mon))
                if n != bar.n:
                    bar.update(n - bar.n)
                if runner.dead():
                    raise PhaseError(g.deaths())
                blind = mon.blind_bridges()
                blind_since = (blind_since or time.monotonic()) if blind else None
                if blind and time.monotonic() - blind_since >= DISCOVERY_GRACE_S:
                    raise DiscoveryFault(
                        f"{title}: DDS discovery failed: " + "; ".join(
                            f"{n}'s bridge does not see {', '.join(v)}" for n, v in blind.items())
                        + f" for {DISCOVERY_GRACE_S:.0f} s, although the monitor sees them active")
                if time.monotonic() - start > timeout:
                    raise PhaseError(f"{title}: not done after {timeout:.0f} s")
            bar.update(total - bar.n)
        time.sleep(1.2)     # one more diagnostics period
        if runner.dead():   # died after the last check: the phase's data is not whole
            raise PhaseError(g.deaths())
    bad = unclean_exits(g.codes)
    if bad:
        raise PhaseError(f"{title}: node(s) did not exit cleanly: {bad}; see the node output")
    return mon, time.monotonic() - start


def fallback_episodes(mon, names, per_env=None):
    """{env: [(episode, ticks driven by the bridge's fallback command)]} for the ended episodes
    (the first `per_env` of each env, or all) in which the policy missed a command."""
    out = {}
    for n in names:
        ended = [e for e, _ in _ended(mon.records[n])]
        if per_env is not None:
            ended = ended[:per_env]
        worst = {}
        for t in mon.records[n].ticks:
            if t.episode in ended:
                worst[t.episode] = max(worst.get(t.episode, 0), int(t.fallbacks))
        bad = [(e, c) for e, c in sorted(worst.items()) if c > 0]
        if bad:
            out[n] = bad
    return out


# what a policy's /diagnostics says about why it did not answer a tick
_POLICY_COUNTERS = ("lifecycle_state", "acted", "errors", "ticks_late_frame", "ticks_skipped_no_frame",
                    "ticks_superseded", "no_instruction", "frames_dropped", "joint_states_dropped")


def _policy_state(mon, n) -> str:
    """One line on what env `n`'s policy last reported and sent, for a failure message."""
    diag = mon.node_diagnostics(f"/{n}/policy")
    rec = mon.records[n]
    last = rec.policy_steps[-1] if rec.policy_steps else None
    said = ", ".join(f"{k}={diag[k]}" for k in _POLICY_COUNTERS if k in diag) or "no /diagnostics received"
    return (f"{n}/policy: {said}; last policy/step: "
            + (f"episode {last.episode} tick {last.tick}" if last else "none")
            + f"; camera/frame messages seen: {len(rec.frames)}")


def _check_no_fallbacks(mon, names, per_env, title):
    """Evaluation episodes must be the policy's own: one driven by fallback commands (the
    policy died or did not answer within the bridge's command timeout) is not counted."""
    bad = fallback_episodes(mon, names, per_env)
    if bad:
        raise PhaseError(f"{title}: evaluation episodes ran on fallback commands (the policy did "
                         f"not answer in time or died), so they cannot be counted: "
                         + "; ".join(f"{n} episode {e}: {c} tick(s)" for n, v in bad.items() for e, c in v)
                         + ". " + " | ".join(_policy_state(mon, n) for n in bad))


def _check_policy_version(mon, names, per_env, expected: int, title):
    """Every step of every evaluation episode must come from the policy version under test:
    a checkpoint swapped in mid-evaluation (a learner still running, a stale latched update)
    would make the figure describe some other policy."""
    for n in names:
        rec = mon.records[n]
        eps = {e for e, _ in _ended(rec)[:per_env]}
        seen = sorted({s.policy_version for s in rec.policy_steps if s.episode in eps})
        if seen != [expected]:
            raise PhaseError(f"{title}: {n}'s evaluation episodes ran policy version(s) {seen or 'none'}, "
                             f"not only version {expected}; the figure would not describe that policy. "
                             "Is a learner running in this graph (learner:=none for evaluation)?")


def _eval_summary(mon, names, per_env):
    wins = []
    for n in names:
        wins += [s for _, s in _ended(mon.records[n])[:per_env]]
    k, total = sum(wins), len(wins)
    lo, hi = wilson_interval(k, total)
    return {"successes": k, "episodes": total, "success_rate": k / total if total else math.nan,
            "ci95": [lo, hi]}


def _traces(mon, names, per_env):
    """Per evaluation episode: held reward and oracle per tick."""
    out = []
    for n in names:
        rec = mon.records[n]
        eps = [e for e, _ in _ended(rec)[:per_env]]
        for e in eps:
            held = [(h.tick, h.value, h.stale) for h in rec.held if h.episode == e]
            oracle = [(o.tick, o.normalized) for o in rec.oracle if o.episode == e]
            ok = any(t.end and t.reason == END_SUCCESS for t in rec.ticks if t.episode == e)
            out.append({"env": n, "episode": e, "success": ok, "held": held, "oracle": oracle})
    return out


def _plots(report, out: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = {}
    b, a = report["before"], report["after"]
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    vals = [b["success_rate"], a["success_rate"]]
    err = [[v - c[0] for v, c in zip(vals, (b["ci95"], a["ci95"]))],
           [c[1] - v for v, c in zip(vals, (b["ci95"], a["ci95"]))]]
    ax.bar(["IL policy", f"after {report['iterations_done']} RL iter."], vals, yerr=err, capsize=5,
           color=["grey", "C0"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate (95% CI)")
    ax.set_title(f"{report['task']}: {b['episodes']} evaluation episodes each", fontsize=9)
    fig.tight_layout()
    paths["success"] = out / "success_before_after.png"
    fig.savefig(paths["success"], dpi=100)
    plt.close(fig)
    hist = report["iterations"]
    if hist:
        fig, ax1 = plt.subplots(figsize=(6, 3.6))
        it = [h["iteration"] for h in hist]
        if any(h.get("mean_return") is not None for h in hist):         # PPO
            ax1.plot(it, [_num(h.get("mean_return")) for h in hist], "o-", label="mean episode return (lite reward)")
            ax1.set_ylabel("return")
        else:                                                            # filtered BC
            ax1.plot(it, [_num(h.get("episodes_selected")) for h in hist], "o-",
                     label="successful episodes trained on (incl. earlier ones)")
            ax1.set_ylabel("episodes")
        ax1.set_xlabel("learner iteration")
        ax2 = ax1.twinx()
        ax2.plot(it, [h.get("env_success_rate") for h in hist], "s--", color="C1",
                 label="training rollout success (sim)")
        ax2.set_ylim(-0.05, 1.05)
        ax2.set_ylabel("success")
        fig.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        paths["iterations"] = out / "reward_over_iterations.png"
        fig.savefig(paths["iterations"], dpi=100)
        plt.close(fig)
    for phase in ("before", "after"):
        tr = report["traces"][phase][:6]
        if not tr:
            continue
        fig, axes = plt.subplots(len(tr), 1, figsize=(8, 1.9 * len(tr)), squeeze=False)
        for ax, t in zip(axes[:, 0], tr):
            if t["oracle"]:
                ax.plot(*zip(*t["oracle"]), lw=1.0, label="oracle (normalised dense)")
            if t["held"]:
                ticks, vals, stale = zip(*t["held"])
                ax.step(ticks, vals, where="post", lw=1.2, label="reward/held (lite)")
            ax.set_ylim(-0.05, 1.05)
            ax.set_title(f"{t['env']} episode {t['episode']}: "
                         f"{'success' if t['success'] else 'no success'}", fontsize=8)
        axes[0, 0].legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        paths[f"traces_{phase}"] = out / f"reward_traces_{phase}.png"
        fig.savefig(paths[f"traces_{phase}"], dpi=90)
        plt.close(fig)
    return paths


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _html(report, paths, out: Path) -> Path:
    b, a = report["before"], report["after"]
    rows = "".join(
        f"<tr><td>{h['iteration']}</td><td>{h.get('episodes')}</td><td>{h.get('mean_return', 0):.2f}</td>"
        f"<td>{h.get('env_success_rate', 0):.2f}</td><td>{h.get('approx_kl', 0):.4f}</td>"
        f"<td>{h.get('stale_fraction', 0):.2f}</td></tr>" for h in report["iterations"])
    imgs = "".join(f'<p><img src="{p.name}"></p>' for p in paths.values())
    html = f"""<!doctype html><html><head><meta charset="utf-8"><title>lrm_ros demo</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:auto}}td,th{{padding:2px 8px}}</style></head><body>
<h1>lrm_ros demo: {report['task']}</h1>
<p>IL policy: <b>{b['success_rate']:.2f}</b> success ({b['successes']}/{b['episodes']}, 95% CI
{b['ci95'][0]:.2f}-{b['ci95'][1]:.2f}); after {report['iterations_done']} {report['learning']}:
<b>{a['success_rate']:.2f}</b> ({a['successes']}/{a['episodes']}, 95% CI {a['ci95'][0]:.2f}-{a['ci95'][1]:.2f}).
Same episode seeds. {report['note']}</p>
<table border="1"><tr><th>iteration</th><th>episodes</th><th>mean return</th><th>rollout success</th>
<th>approx KL</th><th>stale fraction</th></tr>{rows}</table>{imgs}</body></html>"""
    path = out / "report.html"
    path.write_text(html)
    return path


def _algo(args) -> str:
    return "PPO" if args.get("learner") == "ppo" else "filtered BC"


def _learning(args) -> str:
    if args.get("learner") == "ppo":
        return f"PPO iterations on the lite reward ({args.get('reward_signal')})"
    labeller = ("the simulator's success" if args.get("learner_success") == "env"
                else "the lite reward's completion")
    return f"filtered BC iterations (successes labelled by {labeller})"


def run_demo(ns) -> int:
    graph = load_graph("sim")
    user = parse_launch_arguments(ns.arguments)
    # The setting that measurably improves tiny_vla (bench/results/rl_diagnosis_PushCube.md):
    # filtered BC on the simulator's success (0.20 -> 0.37 on 100 seeds) within a few
    # iterations; plain PPO did not, and PPO with self-imitation (PPOConfig's defaults) needs
    # 30 iterations x 8 episodes, beyond a demo. Filtered BC on the shipped lite model's labels
    # did not measurably help (0.23 vs 0.20, bench/results/table3_PushCube_ranked.md), so the
    # learner takes the simulator's success; the lite reward model still scores every tick and
    # its traces are plotted.
    # learner:=ppo / learner_success:=completion switch.
    base = {"num_envs": "2", "env_id": "PushCube-v1", "reward": "lite", "policy": "tiny_vla",
            "reward_signal": "completion", "learner": "filtered_bc", "learner_success": "env"}
    base.update(user)
    args = argument_defaults(graph)
    args.update(base)
    num_envs = int(args["num_envs"])
    names = [f"env{i}" for i in range(num_envs)]
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    learner_dir = out / "learner"
    if learner_dir.exists():          # a fresh run: the learner would otherwise resume
        shutil.rmtree(learner_dir)
    per_env = max(1, math.ceil(ns.eval_episodes / num_envs))
    # evaluation runs no learner: one would train on the evaluation episodes and swap its
    # checkpoints into the policies mid-evaluation (and resume from a stale learner_dir)
    evaluation = {"deterministic": "true", "seed": str(ns.eval_seed), "learner": "none"}
    report = {"task": args["env_id"], "num_envs": num_envs, "arguments": base, "learning": _learning(base),
              "iterations_requested": ns.iterations, "episodes_per_iteration": ns.episodes_per_iteration}
    code = 0
    t0 = time.monotonic()
    log_path = out / "nodes.log"
    print(f"[demo] {num_envs} x {args['env_id']}, policy tiny_vla, reward lite "
          f"({args['reward_signal']}, K={args['reward_interval']}); node output -> {log_path}", flush=True)

    def evaluated(mon):
        return all(len(_ended(mon.records[n])) >= per_env for n in names)

    def eval_progress(mon):
        return sum(min(per_env, len(_ended(mon.records[n]))) for n in names)

    with open(log_path, "w") as log:
        try:
            mon, t_before = _run_phase(
                f"1/3 evaluate the IL policy: {per_env} episodes per env, deterministic",
                {**base, **evaluation}, names, evaluated, eval_progress, per_env * num_envs, ns.timeout, log)
            _check_no_fallbacks(mon, names, per_env, "1/3 evaluate the IL policy")
            _check_policy_version(mon, names, per_env, _checkpoint_version(args["policy_checkpoint"]),
                                  "1/3 evaluate the IL policy")
            report["before"] = _eval_summary(mon, names, per_env)
            report["traces"] = {"before": _traces(mon, names, per_env)}

            def learned(m):
                return len(m.learner_stats) >= ns.iterations

            mon, t_learn = _run_phase(
                f"2/3 learn: {ns.iterations} {_algo(base)} iterations x {ns.episodes_per_iteration} episodes",
                {**base, "learner_dir": str(learner_dir.resolve()),
                 "iterations": str(ns.iterations), "episodes_per_iteration": str(ns.episodes_per_iteration)},
                names, learned, lambda m: len(m.learner_stats), ns.iterations, ns.timeout, log,
                unit="iter")
            # the learner sets such episodes aside (never trained on); say how many there were
            learn_fallbacks = fallback_episodes(mon, names)
            report["learn_fallback_episodes"] = {n: [e for e, _ in v] for n, v in learn_fallbacks.items()}
            if learn_fallbacks:
                print(f"[demo] warning: {sum(len(v) for v in learn_fallbacks.values())} training "
                      "episode(s) ran on fallback commands; the learner did not train on them", flush=True)
            report["iterations"] = mon.learner_stats[: ns.iterations]
            report["iterations_done"] = len(report["iterations"])
            final = report["iterations"][-1]["checkpoint"]
            report["final_checkpoint"] = final
            mon, t_after = _run_phase(
                f"3/3 evaluate the learned policy (version {report['iterations'][-1]['version']}) on the same seeds",
                {**base, **evaluation, "policy_checkpoint": final},
                names, evaluated, eval_progress, per_env * num_envs, ns.timeout, log)
            _check_no_fallbacks(mon, names, per_env, "3/3 evaluate the learned policy")
            _check_policy_version(mon, names, per_env, int(report["iterations"][-1]["version"]),
                                  "3/3 evaluate the learned policy")
            report["after"] = _eval_summary(mon, names, per_env)
            report["traces"]["after"] = _traces(mon, names, per_env)
            report["seconds"] = {"evaluate_before": round(t_before, 1), "learn": round(t_learn, 1),
                                 "evaluate_after": round(t_after, 1)}
        except PhaseError as exc:
            print(f"[demo] FAILED: {exc}\n[demo] node output: {log_path}", flush=True)
            report["error"] = str(exc)
            (out / "report.json").write_text(json.dumps(report, indent=1))
            return 1
        except KeyboardInterrupt:
            return 130
    b, a = report["before"], report["after"]
    apart = b["ci95"][1] < a["ci95"][0] or a["ci95"][1] < b["ci95"][0]
    report["note"] = ("A few iterations on a handful of episodes: "
                      + ("the intervals do not overlap" if apart else "the intervals overlap, no effect shown")
                      + "; bench/bench_table3.py measures the effect over 100 episodes.")
    report["elapsed_s"] = round(time.monotonic() - t0, 1)
    paths = _plots(report, out)
    html = _html(report, paths, out)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"\n[demo] {args['env_id']} success, deterministic, same {b['episodes']} episode seeds:")
    print(f"  IL policy           {b['success_rate']:.2f}  ({b['successes']}/{b['episodes']}, "
          f"95% CI {b['ci95'][0]:.2f}-{b['ci95'][1]:.2f})")
    print(f"  after {report['iterations_done']} {_algo(base)} iter.  {a['success_rate']:.2f}  ({a['successes']}/"
          f"{a['episodes']}, 95% CI {a['ci95'][0]:.2f}-{a['ci95'][1]:.2f})")
    for h in report["iterations"]:
        what = (f"mean return {h.get('mean_return') or 0:.2f}, stale {h.get('stale_fraction') or 0:.2f}"
                if h.get("mean_return") is not None else
                f"trained on {int(h.get('episodes_selected') or 0)} successful episodes "
                f"({int(h.get('episodes_replayed') or 0)} from earlier iterations)")
        print(f"  iteration {h['iteration']}: {int(h.get('episodes') or 0)} episodes, rollout success "
              f"{h.get('env_success_rate') or 0:.2f}, {what}")
    print(f"[demo] {report['note']}")
    print(f"[demo] report: {html}, {out / 'report.json'}; plots: " + ", ".join(str(p) for p in paths.values()))
    print(f"[demo] OK in {report['elapsed_s']:.0f} s")
    return code
