#!/usr/bin/env python3
"""The LRM paper's Table III on this machine: does RL from the lite reward model improve the
imitation-learned tiny VLA, and how much of the IL -> oracle-reward headroom does it capture?

Configurations (same IL start, same iterations, same seeds):
  il           the behaviour-cloned policy, no RL
  oracle       PPO on the simulator's normalised dense reward ("Env reward")
  progress / completion / contrastive / tri
               PPO on the lite reward model's signal, through the real interval-hold (K)
  filtered_bc  behaviour cloning on the rollouts the lite completion signal calls successful
  filtered_bc_oracle  the same on the rollouts the simulator calls successful (its upper bound)
  random       PPO on uniform random held values (a reward model that knows nothing): the
               control that shows what the update gains without any information on the task

Each RL configuration: `--iterations` x (`--episodes-per-iteration` stochastic rollouts ->
rewards -> one update). Then every configuration is evaluated deterministically on the same
`--eval-episodes` seeds (never used in training): success rate with a 95% Wilson interval.
headroom captured = (RL_signal - IL) / (RL_oracle - IL). The PPO settings default to
PPOConfig's, which the graph's learner uses too: group advantages over 4 rollouts per start
and self-imitation of the top quarter by return (bench/results/rl_diagnosis_PushCube.md).

Run (the paper's settings; hours on 2 CPU cores):
  .venv/bin/python bench/bench_table3.py --task PushCube-v1
The whole table as one command, two rows at a time, each in its own process with one
rollout worker (a failed row stops the run, non-zero, with its log's end):
  .venv/bin/python bench/bench_table3.py --task PushCube-v1 --jobs 2 --workers 1
Or split by hand (each writes <out>/<config>.json; --report merges):
  .venv/bin/python bench/bench_table3.py --configs il oracle --iterations 10 &
  .venv/bin/python bench/bench_table3.py --configs progress filtered_bc --iterations 10 &
  wait; .venv/bin/python bench/bench_table3.py --report
Writes <out>/table3.json, table3.md and table3.png (with --jobs, <out>/table3_run.json: the
rows' wall time together).

One run per row is not enough to rank rows: two RL runs of one row that differ only in
`--seed` (action noise, update order, random rewards; the same episode seeds) can differ by
more than the evaluation interval. Re-run rows with other seeds into other folders and merge
with `--report --out A --runs B C`: each row then lists every run, their mean and how far
its two most distant runs disagree (paired on the evaluation seeds).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = ("il", "oracle", "progress", "completion", "contrastive", "tri", "filtered_bc",
           "filtered_bc_oracle", "random")
FILTERED = ("filtered_bc", "filtered_bc_oracle")
SETTINGS = ("episodes_per_iteration", "interval", "reward_transform", "explore_std", "reuse_iterations", "freeze_projections",
            "lr", "advantage", "group_size", "minibatch", "update_epochs", "kl_coef", "target_kl",
            "bc_epochs", "success_threshold", "success_top_fraction", "sil_top_fraction", "sil_demos", "workers", "camera")
LITE = ("progress", "completion", "contrastive", "tri")


def run_config(name: str, a) -> dict:
    import torch
    from tqdm.auto import tqdm
    from lrm_ros.learn.ppo import PPOConfig
    from lrm_ros.learn.learner_config import LearnerConfig
    from lrm_ros.learn.updates import (episode_return, filtered_bc_update, judge_successes, ppo_update,
                                       self_imitation_update, top_returns, widen_action_std)
    from lrm_ros.learn.rollout import as_store_episode, held_rewards, oracle_rewards, random_rewards
    from lrm_ros.learn.rollout_pool import RolloutPool
    from lrm_ros.policy.tiny_vla import load_policy, save_policy
    from lrm_ros.rewards import make_backend
    from lrm_ros.sim.maniskill_env import SimConfig
    from lrm_ros.sim.tasks import recommended_max_ticks

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t0 = time.monotonic()
    from lrm_ros.common.provenance import git_revision
    git_rev = git_revision()       # the code this run started with (commits may land meanwhile)
    from lrm_ros.policy.adapter import DEFAULT_CHECKPOINT
    ckpt = a.checkpoint or str(DEFAULT_CHECKPOINT)
    model, ckpt_meta = load_policy(ckpt)
    # the policy every row starts from, recorded so that rows from different starts are never paired
    start = {"path": str(ckpt), "shipped": Path(ckpt).resolve() == Path(DEFAULT_CHECKPOINT).resolve(),
             "sha256": hashlib.sha256(Path(ckpt).read_bytes()).hexdigest(),
             **{k: ckpt_meta[k] for k in ("tasks", "episodes", "epochs") if k in ckpt_meta}}
    init = copy.deepcopy(model)        # the frozen start, for the KL to it
    demos, demo_info = None, None      # --sil-demos: cloned beside self-imitation's picks
    if a.sil_demos and name not in FILTERED and name != "il" and a.sil_top_fraction > 0:
        from lrm_ros.policy.tiny_vla import bc_arrays_from_episodes
        from lrm_ros.policy.train_bc import load_demo_episodes
        demo_eps = load_demo_episodes(a.sil_demos, image_size=a.camera)
        img, txt, pro, act = bc_arrays_from_episodes(demo_eps)
        demos = (np.concatenate([img, txt, pro], axis=1), act)
        demo_info = {"dirs": list(a.sil_demos), "episodes": len(demo_eps), "steps": int(len(act)),
                     "tasks": sorted({e.task for e in demo_eps})}
    for p in init.parameters():
        p.requires_grad_(False)
    if a.explore_std > 0 and name != "il":
        widen_action_std(model, a.explore_std)
        widen_action_std(init, a.explore_std)
    sim_cfg = SimConfig(env_id=a.task, max_episode_ticks=a.max_ticks or recommended_max_ticks(a.task),
                        camera_width=a.camera, camera_height=a.camera)
    pool = RolloutPool(sim_cfg, ckpt, workers=a.workers, threads=a.threads, noise_seed=a.seed)
    history = []
    noise = np.random.default_rng(a.seed + 7)   # the random row's rewards
    backend = None
    if name in LITE or name == "filtered_bc":
        backend = make_backend("lite", signal="completion" if name == "filtered_bc" else name,
                               **({"model_path": a.lite_checkpoint} if a.lite_checkpoint else {}))
    lcfg = LearnerConfig(store_dir="unused", algorithm="filtered_bc" if name in FILTERED else "ppo",
                         success_source="env" if name == "filtered_bc_oracle" else "completion",
                         success_absorbing=not a.no_success_absorbing,
                         reward_transform=a.reward_transform,
                         success_threshold=a.success_threshold, bc_epochs=a.bc_epochs,
                         success_top_fraction=a.success_top_fraction)
    ppo = PPOConfig(learning_rate=a.lr, kl_coef=a.kl_coef, minibatch_size=a.minibatch,
                    update_epochs=a.update_epochs, target_kl=a.target_kl,
                    train_projections=not a.freeze_projections, advantage=a.advantage,
                    sil_top_fraction=a.sil_top_fraction)
    if a.episodes_per_iteration % a.group_size:
        raise SystemExit(f"--episodes-per-iteration ({a.episodes_per_iteration}) must be a multiple "
                         f"of --group-size ({a.group_size})")
    train_seed = 100_000          # the same training seeds for every configuration
    iterations = 0 if name == "il" else a.iterations
    bar = tqdm(range(iterations), desc=f"{name}", unit="iter")
    steps = 0
    recent: list = []          # the last --reuse-iterations batches (PPO: max_policy_lag)
    judged: list = []          # filtered BC: each episode judged once, in its own iteration (as the learner node)
    trained: list = []         # PPO's self-imitation: every episode trained on,
    returns: dict = {}         # and its return, by index in `trained`
    ema = None                 # --eval-ema: the weights' moving average over iterations
    if a.eval_ema > 0 and iterations:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(a.eval_ema), use_buffers=True)
    select_at = sorted(set(a.select_at)) if iterations else []     # checked in main()
    val_seeds = range(a.validation_seed, a.validation_seed + a.validation_episodes)
    validation: list = []      # --select-at: the policy's success on the validation seeds,
    leader = None              # and the best-validated weights so far (ties: the later)

    def validate(k: int) -> None:
        nonlocal leader, steps
        pool.set_policy(model)
        res = pool.evaluate(val_seeds, deterministic=True, desc=f"{name} validation (iteration {k})")
        steps += res["steps"]
        validation.append({"iteration": k, **{f: res[f] for f in ("success_rate", "successes", "ci95")}})
        if leader is None or res["success_rate"] >= leader[1]:
            leader = (k, res["success_rate"], copy.deepcopy(model.state_dict()))

    if 0 in select_at:
        validate(0)
    for it in bar:
        pool.set_policy(model)
        starts = a.episodes_per_iteration // a.group_size
        first = train_seed + it * starts
        seeds = [s for s in range(first, first + starts) for _ in range(a.group_size)]
        eps = pool.run(seeds, deterministic=False, keep_frames=backend is not None)
        steps += sum(len(e.action) for e in eps)
        if name in ("oracle", "filtered_bc_oracle"):
            oracle_rewards(eps)
        elif name == "random":
            random_rewards(eps, noise, interval=a.interval)
        else:
            held_rewards(backend, eps, interval=a.interval)
        recent.append([as_store_episode(e) for e in eps])
        if name in FILTERED:
            judged += judge_successes(recent[-1], lcfg)
        if name not in FILTERED:       # filtered BC keeps every success so far (LearnerConfig.bc_replay)
            del recent[:-a.reuse_iterations]
        batch = [e for group in recent for e in group]
        if name in FILTERED:
            stats = filtered_bc_update(model, batch, lcfg, seed=a.seed + it, judged=judged)
        else:
            stats = ppo_update(model, init, batch, lcfg, ppo, seed=a.seed + it)
            if ppo.sil_top_fraction > 0:        # as Learner._self_imitate
                for e in recent[-1]:
                    returns[len(trained)] = episode_return(e, lcfg, ppo.gamma)
                    trained.append(e)
                best = top_returns(returns, ppo.sil_top_fraction)
                stats.update(self_imitation_update(model, [trained[k] for k in best], lcfg,
                                                   seed=a.seed + it, demos=demos))
        row = {"iteration": it + 1, "train_success": float(np.mean([e.success for e in eps])),
               "mean_return": float(np.mean([e.reward.sum() for e in eps])),
               "oracle_return": float(np.mean([e.normalized_dense_rewards[1:].sum() for e in eps])),
               **{k: float(v) for k, v in stats.items()}}
        if name in FILTERED:           # what the labeller saw, per rollout: judge it offline too
            row["rollouts"] = [{"final_completion": _finite_or_none(e["meta"]["extra"]["final_completion"]),
                                "env_success": bool(e["meta"]["extra"]["env_success"]), "selected": bool(j)}
                               for e, j in zip(recent[-1], judged[-len(recent[-1]):])]
        history.append(row)
        if ema is not None:
            ema.update_parameters(model)
        if it + 1 in select_at:
            validate(it + 1)
        shown = {"train_success": f"{row['train_success']:.2f}", "ret": f"{row['mean_return']:.1f}"}
        if "kl_to_init" in row:        # PPO's; filtered BC reports none
            shown["kl0"] = f"{row['kl_to_init']:.3f}"
        bar.set_postfix(**shown)
    train_s = time.monotonic() - t0
    if iterations:
        save_policy(model, Path(a.out) / f"{name}_policy.pt", {"config": name, "iterations": iterations})
    seeds = range(a.eval_seed, a.eval_seed + a.eval_episodes)
    pool.set_policy(model)
    ev = pool.evaluate(seeds, deterministic=True, desc=f"{name} eval")
    steps += ev["steps"]
    if a.eval_stochastic:
        ev["stochastic"] = pool.evaluate(seeds, deterministic=False, desc=f"{name} eval (sampled)")
    if ema is not None:                # the same seeds: paired with the last iteration's policy
        save_policy(ema.module, Path(a.out) / f"{name}_ema_policy.pt",
                    {"config": name, "iterations": iterations, "ema_decay": a.eval_ema})
        pool.set_policy(ema.module)
        ev["ema"] = pool.evaluate(seeds, deterministic=True, desc=f"{name} eval (weights' EMA)")
        steps += ev["ema"]["steps"]
    if leader is not None:             # the checkpoint chosen on the validation seeds, evaluated
        chosen = leader[0]             # on the evaluation's (the last policy's outcomes if it won)
        if chosen == iterations:
            ev["selected"] = {k: v for k, v in ev.items() if k not in ("stochastic", "ema")}
        else:
            selected, _ = load_policy(ckpt)
            selected.load_state_dict(leader[2])
            save_policy(selected, Path(a.out) / f"{name}_selected_policy.pt",
                        {"config": name, "iteration": chosen, "validation_seeds": [val_seeds[0], val_seeds[-1]]})
            pool.set_policy(selected)
            ev["selected"] = pool.evaluate(seeds, deterministic=True, desc=f"{name} eval (iteration {chosen})")
            steps += ev["selected"]["steps"]
        ev["selected"]["iteration"] = chosen
    pool.close()
    total_s = time.monotonic() - t0
    return {"config": name, "task": a.task, "iterations": iterations,
            "reward_model_tasks": list(backend.meta.get("training_tasks", [])) if backend is not None
            and hasattr(backend, "meta") else [],
            "git_rev": git_rev, "command": "python bench/bench_table3.py " + " ".join(sys.argv[1:]),
            "seed": a.seed, "success_absorbing": lcfg.success_absorbing, "reward_transform": lcfg.reward_transform,
            "episodes_per_iteration": a.episodes_per_iteration, "interval": a.interval,
            "explore_std": a.explore_std, "reuse_iterations": a.reuse_iterations, "lr": a.lr,
            "freeze_projections": a.freeze_projections, "advantage": a.advantage,
            "group_size": a.group_size, "minibatch": a.minibatch, "update_epochs": a.update_epochs,
            "kl_coef": a.kl_coef, "target_kl": a.target_kl, "bc_epochs": a.bc_epochs,
            "success_threshold": a.success_threshold, "success_top_fraction": a.success_top_fraction,
            "sil_top_fraction": a.sil_top_fraction, "lite_checkpoint": a.lite_checkpoint,
            "il_checkpoint": start, "sil_demos": demo_info,
            "eval_ema": a.eval_ema,
            "selection": {"at": select_at, "validation_seeds": [val_seeds[0], val_seeds[-1]],
                          "validation": validation} if select_at else None,
            "workers": a.workers, "camera": a.camera, "env_steps": steps,
            "steps_per_s": steps / total_s,
            "eval": ev, "history": history, "train_s": train_s, "total_s": total_s}


def report(out: Path, runs: Sequence[Path] = ()) -> dict:
    """Merge <out>/<config>.json into the table; `runs`: folders with re-runs of the same
    rows (other --seed), listed per row with their spread."""
    rows = {}
    for p in sorted(out.glob("*.json")):
        if p.stem in CONFIGS:
            rows[p.stem] = json.loads(p.read_text())
    if not rows:
        raise SystemExit(f"no per-config results in {out}")
    starts = {n: r["il_checkpoint"]["sha256"] for n, r in rows.items() if "il_checkpoint" in r}
    if len(set(starts.values())) > 1:      # rows paired against IL must start from that IL
        raise SystemExit(f"the rows in {out} started from different IL policies (SHA-256 "
                         f"{', '.join(f'{n}: {h[:12]}' for n, h in sorted(starts.items()))}); "
                         "put each start's rows in their own --out folder")
    def rate(name):
        return rows.get(name, {}).get("eval", {}).get("success_rate", math.nan)

    il, orc = rate("il"), rate("oracle")
    table = []
    for name in CONFIGS:
        if name not in rows:
            continue
        ev = rows[name]["eval"]
        sr = ev["success_rate"]
        # each learned row against the same algorithm on the privileged signal: PPO rows against
        # PPO on the simulator's dense reward, filtered BC against filtered BC on its success
        ref = rate("filtered_bc_oracle" if name == "filtered_bc" else "oracle")
        head = (sr - il) / (ref - il) if name not in ("il", "oracle", "filtered_bc_oracle") and ref - il > 0 else math.nan
        table.append({"config": name, "success": sr, "ci95": ev["ci95"], "episodes": ev["episodes"],
                      "iterations": rows[name]["iterations"], "headroom_captured": head,
                      "minutes": rows[name]["total_s"] / 60, "labeller": _labeller(rows[name]),
                      "paired_vs_il": _paired(rows.get("il"), rows[name]) if name != "il" else None,
                      "sil_picks": _sil_picks(rows[name]),
                      "runs": _runs(name, rows[name], out, runs)})
    lines = ["| config | success (eval) | 95% CI | iterations | headroom captured (vs the same algorithm on the simulator's signal) | minutes |"
             + (" re-runs (--seed): success | mean of all runs |" if runs else ""),
             "|---|---|---|---|---|---|" + ("---|---|" if runs else "")]
    for r in table:
        h = "" if math.isnan(r["headroom_captured"]) else f"{100 * r['headroom_captured']:.0f}%"
        more = ""
        if runs:
            rr = r["runs"]
            more = (" " + ", ".join(f"{x['success_rate']:.2f} ({x['seed']})" for x in rr["runs"][1:]) +
                    f" | {rr['mean']:.2f} |") if rr else " | |"
        lines.append(f"| {r['config']} | {r['success']:.2f} ({int(round(r['success'] * r['episodes']))}/"
                     f"{r['episodes']}) | {r['ci95'][0]:.2f}-{r['ci95'][1]:.2f} | {r['iterations']} | {h} | "
                     f"{r['minutes']:.1f} |" + more)
    for r in table:
        far = (r["runs"] or {}).get("most_apart")
        if far:
            lines.append(f"\n{r['config']}: {len(r['runs']['runs'])} runs; the two furthest apart (--seed "
                         f"{far['seeds'][0]}: {far['rates'][0]:.2f}, --seed {far['seeds'][1]}: "
                         f"{far['rates'][1]:.2f}) differ on {far['gained'] + far['lost']} evaluation seeds "
                         f"({far['gained']}/{far['lost']}, exact McNemar p = {far['p_value']:.2g})")
    for r in table:
        pair, picks = r["paired_vs_il"], r["sil_picks"]
        if pair or picks:
            said = [f"paired against IL over the same {pair['seeds']} seeds: {pair['gained']} gained, "
                    f"{pair['lost']} lost (exact McNemar p = {pair['p_value']:.2g})"] if pair else []
            if picks:
                said.append(f"self-imitation cloned {picks['true_successes']} true successes in "
                            f"{picks['episodes']} picks")
            lines.append(f"\n{r['config']}: " + "; ".join(said))
    if "oracle" in rows and not orc - il > 0:
        lines.append(f"\nheadroom undefined: oracle RL ({orc:.2f}) did not beat IL ({il:.2f})")
    for r in table:
        lab = r["labeller"]
        if lab:
            lines.append(f"\n{r['config']}: over all {lab['episodes']} training rollouts the labeller "
                         f"called {lab['selected']} successful, {lab['selected_true']} of them truly "
                         f"(precision {_fmt(lab['precision'])}); it found {lab['selected_true']} of the "
                         f"{lab['env_successes']} the simulator saw (recall {_fmt(lab['recall'])})")
            if "roc_auc" in lab:
                lines.append(f"its final completion ranks those rollouts at ROC-AUC {_fmt(lab['roc_auc'])} "
                             f"(median {_fmt(lab['median_final_success'])} on successes, "
                             f"{_fmt(lab['median_final_failure'])} on failures; {lab['above_half']} reach 0.5)")
    together = out / "table3_run.json"     # --jobs: the rows run together by one command
    together = json.loads(together.read_text()) if together.exists() else None
    if together:
        lines.append(f"\nrun as one command with --jobs {together['jobs']}: {together['elapsed_s'] / 60:.1f} min "
                     f"of wall time for {', '.join(together['configs'])} ({together['command']})")
    md = "\n".join(lines)
    first = next(iter(rows.values()))
    task = first["task"]
    summary = {
        "task": task,
        "reward_model_tasks": sorted({t for r in rows.values() for t in r.get("reward_model_tasks", [])}),
        "iterations": max(r["iterations"] for r in rows.values()),
        "eval_episodes": max(r["eval"]["episodes"] for r in rows.values()),
        "wall_s": sum(r["total_s"] for r in rows.values()),     # as if one row ran after another
        "together": together,        # --jobs: the rows' wall time side by side, and its command
        "git_rev": sorted({r.get("git_rev", "") for r in rows.values()}),
        "command": sorted({r.get("command", "") for r in rows.values()}),
        "rows": {r["config"]: {"success_rate": r["success"], "ci95": r["ci95"], "labeller": r["labeller"],
                               "headroom_captured": None if math.isnan(r["headroom_captured"])
                               else r["headroom_captured"], "paired_vs_il": r["paired_vs_il"],
                               "sil_picks": r["sil_picks"], "runs": r["runs"]} for r in table},
        # per row: the rows may come from separate runs with their own settings
        "settings": {name: {k: r.get(k) for k in SETTINGS} for name, r in rows.items()},
    }
    (out / "table3.md").write_text(md + "\n")
    (out / "table3.json").write_text(json.dumps({"rows": table, "raw": rows}, indent=1))
    (out / f"table3_{task.split('-')[0]}.json").write_text(json.dumps(summary, indent=1))
    _plot(rows, table, out / "table3.png")
    print(md)
    return {"rows": table, "summary": summary}


def _run_seed(row: dict) -> int:
    """A row's --seed (older results recorded it only in their command)."""
    if "seed" in row:
        return int(row["seed"])
    words = str(row.get("command", "")).split()
    return int(words[words.index("--seed") + 1]) if "--seed" in words else 0


def _runs(name: str, row: dict, out: Path, runs: Sequence[Path]):
    """Every run of row `name`: this folder's and the re-runs in `runs` (same task, same
    evaluation episodes): their rates and seeds, the mean, and the paired comparison of the
    two furthest apart. None when the row has a single run."""
    all_runs = [(out, row)]
    for d in runs:
        p = Path(d) / f"{name}.json"
        if p.exists():
            r = json.loads(p.read_text())
            if r["task"] != row["task"] or r["eval"]["episodes"] != row["eval"]["episodes"]:
                raise SystemExit(f"{p}: {r['task']} / {r['eval']['episodes']} evaluation episodes; "
                                 f"{out / (name + '.json')} has {row['task']} / {row['eval']['episodes']}: "
                                 "--runs must hold re-runs of the same rows")
            if "il_checkpoint" in r and "il_checkpoint" in row and \
                    r["il_checkpoint"]["sha256"] != row["il_checkpoint"]["sha256"]:
                raise SystemExit(f"{p} started from another IL policy ({r['il_checkpoint']['path']}) than "
                                 f"{out / (name + '.json')} ({row['il_checkpoint']['path']}): "
                                 "--runs must hold re-runs of the same rows")
            if not any(r == seen for _, seen in all_runs):   # a copy (e.g. IL's, which has no training)
                all_runs.append((Path(d), r))
    if len(all_runs) < 2:
        return None
    listed = [{"dir": str(d), "seed": _run_seed(r), "success_rate": r["eval"]["success_rate"],
               "ci95": r["eval"]["ci95"]} for d, r in all_runs]
    lo = min(range(len(all_runs)), key=lambda i: listed[i]["success_rate"])
    hi = max(range(len(all_runs)), key=lambda i: listed[i]["success_rate"])
    pair = _paired(all_runs[lo][1], all_runs[hi][1]) if lo != hi else None
    far = None if pair is None else {"seeds": [listed[hi]["seed"], listed[lo]["seed"]],
                                     "rates": [listed[hi]["success_rate"], listed[lo]["success_rate"]],
                                     "gained": pair["gained"], "lost": pair["lost"], "p_value": pair["p_value"]}
    return {"runs": listed, "mean": float(np.mean([x["success_rate"] for x in listed])),
            "min": listed[lo]["success_rate"], "max": listed[hi]["success_rate"], "most_apart": far}


def _fmt(x) -> str:
    return "undefined" if x is None else f"{x:.2f}"


def _finite_or_none(x):
    x = float(x)
    return x if math.isfinite(x) else None


def _paired(il: dict | None, row: dict):
    """Per-seed comparison with IL on the same evaluation seeds: seeds gained and lost, and the
    exact McNemar p (two-sided binomial test on the discordant seeds); None without both."""
    a = (il or {}).get("eval", {}).get("per_seed")
    b = row.get("eval", {}).get("per_seed")
    if not a or not b or len(a) != len(b):
        return None
    from scipy.stats import binomtest
    gained = sum(1 for x, y in zip(a, b) if y and not x)
    lost = sum(1 for x, y in zip(a, b) if x and not y)
    p = binomtest(gained, gained + lost, 0.5).pvalue if gained + lost else 1.0
    return {"seeds": len(a), "gained": gained, "lost": lost, "p_value": float(p)}


def _sil_picks(row: dict):
    """PPO's self-imitation: how many of the episodes cloned in the last iteration (the top
    fraction of all so far) the simulator calls successful; None without self-imitation."""
    h = (row.get("history") or [{}])[-1]
    if "sil_env_successes" not in h:
        return None
    return {"true_successes": int(h["sil_env_successes"]), "episodes": int(h["sil_episodes"])}


def _labeller(row: dict):
    """Filtered BC: how the success labeller did against the simulator, over every training
    rollout (the last iteration's statistics cover all of them: filtered BC keeps them all)."""
    h = (row.get("history") or [{}])[-1]
    if "selected_env_successes" not in h:
        return None
    sel, true, env = h["episodes_selected"], h["selected_env_successes"], h["env_successes_seen"]
    out = {"episodes": int(h["episodes_seen"]), "selected": int(sel), "selected_true": int(true),
           "env_successes": int(env), "precision": true / sel if sel else None,
           "recall": true / env if env else None}
    rollouts = [r for x in row.get("history") or [] for r in x.get("rollouts", [])]
    if rollouts:     # the labeller's ranking of the policy's own rollouts, whatever the selection rule
        from lrm_ros.evaluation.metrics import roc_auc
        finals = [math.nan if r["final_completion"] is None else r["final_completion"] for r in rollouts]
        auc = roc_auc(finals, [r["env_success"] for r in rollouts])
        out.update(roc_auc=None if math.isnan(auc) else auc,
                   above_half=sum(f >= 0.5 for f in finals if math.isfinite(f)),
                   median_final_success=_median([f for f, r in zip(finals, rollouts) if r["env_success"]]),
                   median_final_failure=_median([f for f, r in zip(finals, rollouts) if not r["env_success"]]))
    return out


def _median(xs):
    xs = [x for x in xs if math.isfinite(x)]
    return float(np.median(xs)) if xs else None


def _plot(rows, table, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [r["config"] for r in table]
    sr = np.array([r["success"] for r in table])
    err = np.array([[r["success"] - r["ci95"][0], r["ci95"][1] - r["success"]] for r in table]).T
    ax1.bar(names, sr, yerr=err, capsize=4, color=["grey" if n == "il" else "C0" for n in names])
    dots = [(i, x["success_rate"]) for i, r in enumerate(table) if r.get("runs")
            for x in r["runs"]["runs"][1:]]       # the re-runs with other --seed
    if dots:
        ax1.plot(*zip(*dots), "o", color="k", ms=5, label="re-runs (--seed)")
        ax1.legend(fontsize=8)
    ax1.set_ylabel("evaluation success rate (95% CI)")
    ax1.set_ylim(0, 1)
    ax1.tick_params(axis="x", labelrotation=30)
    ax1.set_title("success after RL")
    for name, r in rows.items():
        h = r.get("history") or []
        if h:
            ax2.plot([x["iteration"] for x in h], [x["train_success"] for x in h], label=name)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("training rollout success")
    ax2.set_title("success of the stochastic training rollouts")
    if ax2.lines:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _without(argv: Sequence[str], *options: str) -> list:
    """`argv` without the given options and their values (the tokens up to the next option)."""
    kept, skipping = [], False
    for tok in argv:
        if tok.startswith("--"):
            skipping = tok.split("=", 1)[0] in options
            if skipping:
                continue
        if not skipping:
            kept.append(tok)
    return kept


def run_together(a, argv: Sequence[str], out: Path) -> None:
    """--jobs N: each row in its own process (this script with `--configs <row>`), N at a time,
    each logging to <out>/<row>.log. If a row fails, the others are stopped and the run exits
    non-zero with the row's last log lines: no table is made from a run with a missing row."""
    import os
    import signal
    import subprocess
    base = _without(argv, "--configs", "--jobs")
    queue, running, t0 = list(a.configs), {}, time.monotonic()
    print(f"[table3] {len(queue)} rows, {a.jobs} at a time; logs in {out}/<row>.log", flush=True)
    try:
        while queue or running:
            while queue and len(running) < a.jobs:
                name = queue.pop(0)
                with open(out / f"{name}.log", "w") as log:
                    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *base,
                                             "--configs", name, "--jobs", "1", "--row-only"],
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                running[proc.pid] = (name, proc, time.monotonic())
                print(f"[table3] {name}: started", flush=True)
            pid, status = os.wait()                      # whichever row ends first
            if pid not in running:
                continue
            name, proc, started = running.pop(pid)
            proc.returncode = code = os.waitstatus_to_exitcode(status)
            minutes = (time.monotonic() - started) / 60
            if code != 0:
                tail = (out / f"{name}.log").read_text(errors="replace").replace("\r", "\n").splitlines()[-15:]
                raise SystemExit(f"[table3] row {name} failed (exit {code}) after {minutes:.1f} min; the other "
                                 f"rows were stopped. Its log ({out / (name + '.log')}) ends:\n" + "\n".join(tail))
            ev = json.loads((out / f"{name}.json").read_text())["eval"]
            print(f"[table3] {name}: success {ev['success_rate']:.2f} CI {ev['ci95'][0]:.2f}-"
                  f"{ev['ci95'][1]:.2f} ({minutes:.1f} min; {len(queue)} rows waiting, "
                  f"{len(running)} running, {(time.monotonic() - t0) / 60:.1f} min so far)", flush=True)
    finally:
        for _, proc, _ in running.values():         # a failure or Ctrl-C: stop the rest, rollout workers too
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait()
    from lrm_ros.common.provenance import git_revision
    (out / "table3_run.json").write_text(json.dumps({
        "command": "python bench/bench_table3.py " + " ".join(argv), "jobs": a.jobs,
        "configs": list(a.configs), "elapsed_s": time.monotonic() - t0, "git_rev": git_revision()}, indent=1))


def main(argv=None) -> int:
    from lrm_ros.learn.ppo import PPOConfig
    PPO_DEFAULTS = PPOConfig()        # the graph learner's defaults too (config/params/learner.yaml)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)    # --jobs passes the options on by name
    ap.add_argument("--task", default="PushCube-v1")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--episodes-per-iteration", type=int, default=8)
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument("--eval-seed", type=int, default=10_000)
    ap.add_argument("--eval-stochastic", action="store_true",
                    help="also evaluate the sampling policy (as trained), not only its mean")
    ap.add_argument("--interval", type=int, default=10, help="K of the interval-hold")
    ap.add_argument("--max-ticks", type=int, default=0, help="0 = the task's recommended limit")
    ap.add_argument("--checkpoint", default="", help="IL policy ('' = the shipped tiny_vla)")
    ap.add_argument("--lr", type=float, default=PPO_DEFAULTS.learning_rate)
    ap.add_argument("--kl-coef", type=float, default=PPO_DEFAULTS.kl_coef)
    ap.add_argument("--minibatch", type=int, default=PPO_DEFAULTS.minibatch_size)
    ap.add_argument("--update-epochs", type=int, default=PPO_DEFAULTS.update_epochs)
    ap.add_argument("--bc-epochs", type=int, default=2, help="filtered BC: epochs per iteration")
    ap.add_argument("--success-threshold", type=float, default=0.5)
    ap.add_argument("--success-top-fraction", type=float, default=0.0,
                    help="filtered_bc: count the top fraction of each iteration's rollouts by final "
                         "completion as successes instead of --success-threshold (0 = threshold)")
    ap.add_argument("--sil-top-fraction", type=float, default=PPO_DEFAULTS.sil_top_fraction,
                    help="PPO rows: after each update, behaviour cloning (--bc-epochs) on the episodes "
                         "whose return ranks in this top fraction of all trained on so far "
                         "(PPOConfig.sil_top_fraction; 0 = plain PPO)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-success-absorbing", action="store_true",
                    help="train on the plain held values (LearnerConfig.success_absorbing off)")
    ap.add_argument("--reward-transform", default="value", choices=("value", "delta"),
                    help="LearnerConfig.reward_transform: train on the held values, or on their "
                         "change (potential-based shaping: an episode's return is then its last "
                         "value minus its first, whatever its length)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rollout worker")
    ap.add_argument("--workers", type=int, default=2, help="rollout processes (0 = in this process)")
    ap.add_argument("--camera", type=int, default=224,
                    help="camera side in pixels (224 = the models' input: no resize)")
    ap.add_argument("--explore-std", type=float, default=0.0,
                    help="raise the IL policy's action std to at least this before RL (0 = keep)")
    ap.add_argument("--target-kl", type=float, default=PPO_DEFAULTS.target_kl)
    ap.add_argument("--freeze-projections", action="store_true",
                    help="PPO updates the actor's MLP head only (ppo.train_projections off)")
    ap.add_argument("--reuse-iterations", type=int, default=1,
                    help="train each update on the episodes of the last N iterations (PPO's ratio "
                         "is taken to the policy that recorded them; 1 = on-policy)")
    ap.add_argument("--advantage", default=PPO_DEFAULTS.advantage, choices=("gae", "group"),
                    help="PPOConfig.advantage: GAE on the critic, or the return-to-go minus that of "
                         "the other episodes from the same start (use with --group-size > 1)")
    ap.add_argument("--group-size", type=int, default=4,
                    help="episodes per initial state (seed) in each iteration")
    ap.add_argument("--eval-ema", type=float, default=0.0,
                    help="also evaluate (on the same seeds) an exponential moving average of the "
                         "policy's weights, updated after every iteration with this decay "
                         "(torch.optim.swa_utils; 0 = off): does averaging out the last updates' "
                         "noise make the final policy better or less variable between runs?")
    ap.add_argument("--select-at", type=int, nargs="*", default=[],
                    help="iterations after which the policy is evaluated on the validation seeds "
                         "(0 = the IL policy); the best (ties: the later) is then evaluated on the "
                         "evaluation seeds beside the last policy, as eval.selected")
    ap.add_argument("--validation-episodes", type=int, default=50,
                    help="--select-at: deterministic episodes per validation")
    ap.add_argument("--validation-seed", type=int, default=11_000,
                    help="--select-at: the first validation seed (disjoint from the evaluation's "
                         "and from training's, which start at 100000)")
    ap.add_argument("--sil-demos", nargs="*", default=[], metavar="DIR",
                    help="demo folders (lrm-ros demos) whose episodes PPO's self-imitation clones "
                         "beside its best-return rollouts, to hold the policy near the "
                         "demonstrations (default: none)")
    ap.add_argument("--lite-checkpoint", default="", help="lite reward checkpoint ('' = shipped)")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "table3"))
    ap.add_argument("--jobs", type=int, default=1,
                    help="rows run at once, each in its own process (with --workers each): the "
                         "whole table as one command; a failed row stops the run")
    ap.add_argument("--row-only", action="store_true", help=argparse.SUPPRESS)   # --jobs' rows: no report
    ap.add_argument("--report", action="store_true", help="only merge the per-config results")
    ap.add_argument("--runs", nargs="*", default=[],
                    help="folders with re-runs of the same rows (other --seed): the report lists each "
                         "row's runs, their mean and how far they disagree")
    a = ap.parse_args(argv)
    if a.select_at and not a.report:
        if min(a.select_at) < 0 or max(a.select_at) > a.iterations:
            ap.error(f"--select-at {a.select_at}: the iterations must be in 0..--iterations ({a.iterations})")
        if a.validation_episodes < 1:
            ap.error("--select-at needs --validation-episodes >= 1")
        val = set(range(a.validation_seed, a.validation_seed + a.validation_episodes))
        if val & set(range(a.eval_seed, a.eval_seed + a.eval_episodes)) or max(val) >= 100_000:
            ap.error(f"--validation-seed {a.validation_seed}: the validation seeds overlap the evaluation's "
                     f"({a.eval_seed}..{a.eval_seed + a.eval_episodes - 1}) or training's (100000 on); "
                     "choose seeds neither uses")
    if a.sil_demos and a.sil_top_fraction <= 0:
        ap.error("--sil-demos are cloned by PPO's self-imitation; it is off (--sil-top-fraction 0)")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.jobs < 1:
        ap.error(f"--jobs {a.jobs}: must be >= 1")
    if not a.report and a.jobs > 1 and len(a.configs) > 1:
        (out / "table3_run.json").unlink(missing_ok=True)
        run_together(a, sys.argv[1:] if argv is None else list(argv), out)
    elif not a.report:
        (out / "table3_run.json").unlink(missing_ok=True)   # a row run on its own: not timed together
        for name in a.configs:
            res = run_config(name, a)
            (out / f"{name}.json").write_text(json.dumps(res, indent=1))
            ev = res["eval"]
            print(f"{name}: success {ev['success_rate']:.2f} CI {ev['ci95'][0]:.2f}-{ev['ci95'][1]:.2f} "
                  f"({res['total_s'] / 60:.1f} min)", flush=True)
            if "ema" in ev:
                print(f"{name}, weights' EMA (decay {a.eval_ema}): success {ev['ema']['success_rate']:.2f} "
                      f"CI {ev['ema']['ci95'][0]:.2f}-{ev['ema']['ci95'][1]:.2f}", flush=True)
            if "selected" in ev:
                sel = ev["selected"]
                print(f"{name}, iteration {sel['iteration']} chosen on the validation seeds: success "
                      f"{sel['success_rate']:.2f} CI {sel['ci95'][0]:.2f}-{sel['ci95'][1]:.2f}", flush=True)
    if not a.row_only:
        report(out, [Path(d) for d in a.runs])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
