"""bench_table3's report: rows from separate runs merged into table3_<task>.json with the fields
issue 12 asks for; each learned row's headroom against the same algorithm on the simulator's
signal; the filtered-BC labeller's precision and recall against the simulator's success."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_table3", ROOT / "bench" / "bench_table3.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(name, k, n=100, history=None, lr=2e-5, tasks=()):
    from lrm_ros.learn.rollout import wilson_interval
    return {"config": name, "task": "PullCube-v1", "iterations": 0 if name == "il" else 30,
            "eval": {"success_rate": k / n, "ci95": list(wilson_interval(k, n)), "episodes": n},
            "history": history or [], "total_s": 600.0, "git_rev": "abc", "lr": lr,
            "command": f"python bench/bench_table3.py --configs {name}", "reward_model_tasks": list(tasks)}


def test_report_merges_rows_with_headroom_and_labeller_quality(tmp_path):
    bench = _bench()
    fbc_last = {"iteration": 30, "train_success": 0.3, "episodes_seen": 240.0, "episodes_selected": 40.0,
                "selected_env_successes": 30.0, "env_successes_seen": 60.0}
    rows = {"il": _row("il", 14), "oracle": _row("oracle", 20, lr=1e-4),
            "filtered_bc_oracle": _row("filtered_bc_oracle", 36),
            "filtered_bc": _row("filtered_bc", 25, history=[fbc_last], tasks=("PickCube-v1", "StackCube-v1"))}
    for name, r in rows.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    bench.report(tmp_path)
    summary = json.loads((tmp_path / "table3_PullCube.json").read_text())
    assert summary["task"] == "PullCube-v1" and summary["eval_episodes"] == 100
    assert summary["reward_model_tasks"] == ["PickCube-v1", "StackCube-v1"]
    assert summary["wall_s"] == 2400.0 and len(summary["command"]) == 4
    got = summary["rows"]
    assert set(got) == {"il", "oracle", "filtered_bc_oracle", "filtered_bc"}
    # filtered BC against filtered BC on the simulator's success: (0.25 - 0.14) / (0.36 - 0.14)
    assert got["filtered_bc"]["headroom_captured"] == pytest.approx(0.5)
    assert got["oracle"]["headroom_captured"] is None and got["il"]["labeller"] is None
    lab = got["filtered_bc"]["labeller"]
    assert (lab["episodes"], lab["selected"], lab["selected_true"], lab["env_successes"]) == (240, 40, 30, 60)
    assert lab["precision"] == pytest.approx(0.75) and lab["recall"] == pytest.approx(0.5)
    assert summary["settings"]["oracle"]["lr"] == 1e-4 and summary["settings"]["il"]["lr"] == 2e-5
    md = (tmp_path / "table3.md").read_text()
    assert "| filtered_bc | 0.25 (25/100) |" in md and "precision 0.75" in md
    assert (tmp_path / "table3.png").stat().st_size > 1000


def test_the_labeller_is_judged_on_every_training_rollout_it_saw(tmp_path):
    """The per-rollout record: the ROC-AUC of the final completion against the simulator's
    success, and how many rollouts a 0.5 threshold would have taken, whatever rule selected."""
    bench = _bench()
    finals = [(0.30, True), (0.10, False), (None, False), (0.20, True), (0.25, False), (0.60, False)]
    history = [{"iteration": 1, "train_success": 0.33, "episodes_seen": 6.0, "episodes_selected": 2.0,
                "selected_env_successes": 1.0, "env_successes_seen": 2.0,
                "rollouts": [{"final_completion": f, "env_success": s, "selected": False} for f, s in finals]}]
    lab = bench._labeller(_row("filtered_bc", 25, history=history))
    # successes 0.30, 0.20 against failures 0.10, 0.25, 0.60 (the None is left out): 3 of 6 pairs
    assert lab["roc_auc"] == pytest.approx(3 / 6)
    assert lab["above_half"] == 1
    assert (lab["median_final_success"], lab["median_final_failure"]) == (pytest.approx(0.25), pytest.approx(0.25))


def test_each_row_is_paired_with_il_seed_by_seed_and_self_imitation_picks_are_counted(tmp_path):
    bench = _bench()
    il, ppo = _row("il", 3, n=10), _row("oracle", 6, n=10, history=[
        {"iteration": 30, "train_success": 0.5, "sil_episodes": 60.0, "sil_env_successes": 45.0}])
    il["eval"]["per_seed"] = [True, True, True] + [False] * 7
    ppo["eval"]["per_seed"] = [True, False] + [True] * 5 + [False] * 3      # seed 1 lost, 2..6 gained 4
    for name, r in (("il", il), ("oracle", ppo)):
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    bench.report(tmp_path)
    rows = json.loads((tmp_path / "table3_PullCube.json").read_text())["rows"]
    pair = rows["oracle"]["paired_vs_il"]
    assert (pair["seeds"], pair["gained"], pair["lost"]) == (10, 4, 1)
    assert pair["p_value"] == pytest.approx(0.375)       # two-sided binomial, 1 of 5 discordant
    assert rows["oracle"]["sil_picks"] == {"true_successes": 45, "episodes": 60}
    assert rows["il"]["paired_vs_il"] is None and rows["il"]["sil_picks"] is None
    md = (tmp_path / "table3.md").read_text()
    assert "oracle: paired against IL over the same 10 seeds: 4 gained, 1 lost" in md
    assert "self-imitation cloned 45 true successes in 60 picks" in md
    # rows without per-seed outcomes (older runs) are not paired
    assert bench._paired(_row("il", 3), _row("oracle", 6)) is None


def test_re_runs_of_a_row_are_listed_with_their_mean_and_how_far_they_disagree(tmp_path):
    """--runs: rows re-run with other --seed in other folders. Each row lists its runs; the two
    furthest apart are paired on the evaluation seeds (the spread between RL runs)."""
    bench = _bench()
    a, b, c = (tmp_path / d for d in ("a", "b", "c"))
    for d in (a, b, c):
        d.mkdir()
    il = _row("il", 3, n=10)
    il["eval"]["per_seed"] = [True] * 3 + [False] * 7
    runs = {a: 6, b: 2, c: 4}
    for d, k in runs.items():
        r = _row("progress", k, n=10)
        r["eval"]["per_seed"] = [True] * k + [False] * (10 - k)
        if d is not a:
            r["command"] += f" --seed {1 if d is b else 2}"      # older results: seed only in the command
        (d / "progress.json").write_text(json.dumps(r))
    (a / "il.json").write_text(json.dumps(il))
    bench.report(a, [b, c])
    rows = json.loads((a / "table3_PullCube.json").read_text())["rows"]
    got = rows["progress"]["runs"]
    assert [(x["seed"], x["success_rate"]) for x in got["runs"]] == [(0, 0.6), (1, 0.2), (2, 0.4)]
    assert got["mean"] == pytest.approx(0.4) and (got["min"], got["max"]) == (0.2, 0.6)
    far = got["most_apart"]
    assert far["seeds"] == [0, 1] and (far["gained"], far["lost"]) == (4, 0)
    assert far["p_value"] == pytest.approx(0.125)
    assert rows["il"]["runs"] is None                    # no re-run of IL
    (b / "il.json").write_text(json.dumps(il))           # a copy of a row is not a re-run
    assert bench.report(a, [b, c])["summary"]["rows"]["il"]["runs"] is None
    md = (a / "table3.md").read_text()
    assert "| progress | 0.60 (6/10) |" in md and "0.20 (1), 0.40 (2) | 0.40 |" in md
    assert "progress: 3 runs; the two furthest apart (--seed 0: 0.60, --seed 1: 0.20) differ on 4" in md
    # a folder whose row is another task's is refused
    other = _row("progress", 5, n=10)
    other["task"] = "PushCube-v1"
    (c / "progress.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="re-runs of the same rows"):
        bench.report(a, [b, c])


def test_the_weights_moving_average_is_evaluated_on_the_same_seeds_beside_the_last_policy(tmp_path):
    """--eval-ema: a real (tiny) oracle row in ManiSkill; the average of the weights over the
    iterations is saved and evaluated on the evaluation seeds of the last iteration's policy."""
    import torch
    from lrm_ros.policy.tiny_vla import load_policy
    bench = _bench()
    torch.set_num_threads(1)
    assert bench.main(["--task", "PushCube-v1", "--configs", "oracle", "--iterations", "2",
                       "--episodes-per-iteration", "2", "--group-size", "2", "--eval-episodes", "2",
                       "--max-ticks", "6", "--workers", "0", "--camera", "64", "--eval-ema", "0.5",
                       "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "oracle.json").read_text())
    assert res["eval_ema"] == 0.5
    last, ema = res["eval"], res["eval"]["ema"]
    assert ema["episodes"] == last["episodes"] == 2 and len(ema["per_seed"]) == 2
    final, _ = load_policy(tmp_path / "oracle_policy.pt")
    averaged, meta = load_policy(tmp_path / "oracle_ema_policy.pt")
    assert meta["ema_decay"] == 0.5 and meta["iterations"] == 2
    # two updates: the average (half the first iteration's weights, half the second's) is
    # not the last policy
    diff = max((p - q).abs().max().item() for p, q in zip(final.parameters(), averaged.parameters()))
    assert diff > 0


def test_the_checkpoint_chosen_on_validation_seeds_is_evaluated_on_the_evaluation_seeds(tmp_path):
    """--select-at: a real (tiny) oracle row in ManiSkill; the policy is validated after the listed
    iterations on seeds the evaluation never uses, and the best-validated one (ties: the later)
    is evaluated on the evaluation seeds beside the last policy."""
    import torch
    from lrm_ros.policy.tiny_vla import load_policy
    bench = _bench()
    torch.set_num_threads(1)
    assert bench.main(["--task", "PushCube-v1", "--configs", "oracle", "--iterations", "2",
                       "--episodes-per-iteration", "2", "--group-size", "2", "--eval-episodes", "2",
                       "--max-ticks", "6", "--workers", "0", "--camera", "64", "--select-at", "0", "1",
                       "--validation-episodes", "3", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "oracle.json").read_text())
    sel = res["selection"]
    assert sel["at"] == [0, 1] and sel["validation_seeds"] == [11_000, 11_002]
    assert [v["iteration"] for v in sel["validation"]] == [0, 1]
    rates = [v["success_rate"] for v in sel["validation"]]
    chosen = 1 if rates[1] >= rates[0] else 0
    picked = res["eval"]["selected"]
    assert picked["iteration"] == chosen and picked["episodes"] == 2 and len(picked["per_seed"]) == 2
    weights, meta = load_policy(tmp_path / "oracle_selected_policy.pt")
    assert meta["iteration"] == chosen
    final, _ = load_policy(tmp_path / "oracle_policy.pt")     # an earlier iteration's weights
    assert max((p - q).abs().max().item() for p, q in zip(final.parameters(), weights.parameters())) > 0


def test_validation_seeds_that_overlap_the_evaluation_are_refused(tmp_path, capsys):
    bench = _bench()
    with pytest.raises(SystemExit):
        bench.main(["--configs", "oracle", "--iterations", "2", "--eval-episodes", "100",
                    "--select-at", "2", "--validation-seed", "10050", "--out", str(tmp_path)])
    assert "overlap the evaluation's (10000..10099)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--configs", "oracle", "--iterations", "2", "--select-at", "3", "--out", str(tmp_path)])
    assert "must be in 0..--iterations (2)" in capsys.readouterr().err
    assert not (tmp_path / "oracle.json").exists()


def test_each_row_names_the_il_policy_it_started_from_and_rows_from_different_starts_are_not_merged(tmp_path):
    """--checkpoint: a real (tiny) IL row in ManiSkill from a policy other than the shipped one
    records that policy's path, SHA-256 and demonstrations; the report refuses to pair rows that
    started from different policies (their gains against IL would be against another IL)."""
    import hashlib
    import torch
    from lrm_ros.policy.adapter import DEFAULT_CHECKPOINT
    from lrm_ros.policy.tiny_vla import load_policy, save_policy
    bench = _bench()
    torch.set_num_threads(1)
    model, _ = load_policy(DEFAULT_CHECKPOINT)
    weak = tmp_path / "weak.pt"
    save_policy(model, weak, {"algorithm": "bc", "tasks": ["PushCube-v1"], "episodes": 16, "epochs": 300})
    out = tmp_path / "rows"
    assert bench.main(["--task", "PushCube-v1", "--configs", "il", "--eval-episodes", "1", "--max-ticks", "6",
                       "--workers", "0", "--camera", "64", "--checkpoint", str(weak), "--out", str(out)]) == 0
    start = json.loads((out / "il.json").read_text())["il_checkpoint"]
    assert start == {"path": str(weak), "shipped": False, "sha256": hashlib.sha256(weak.read_bytes()).hexdigest(),
                     "tasks": ["PushCube-v1"], "episodes": 16, "epochs": 300}
    other = _row("oracle", 1, n=1)
    other["task"] = "PushCube-v1"
    other["il_checkpoint"] = dict(start, path=str(DEFAULT_CHECKPOINT), shipped=True,
                                  sha256=hashlib.sha256(Path(DEFAULT_CHECKPOINT).read_bytes()).hexdigest())
    (out / "oracle.json").write_text(json.dumps(other))
    (out / "table3_PushCube.json").unlink()         # the IL run's own report
    with pytest.raises(SystemExit, match="started from different IL policies"):
        bench.report(out)
    assert not (out / "table3_PushCube.json").exists()


def test_self_imitation_clones_the_given_demonstrations_beside_its_picks(tmp_path, capsys):
    """--sil-demos: a real (tiny) oracle row in ManiSkill whose self-imitation step clones the
    episodes of a real demo bag with its picks; the row records which demos; without
    self-imitation the option is refused."""
    import torch
    from lrm_ros.sim.demos import generate_demos
    from lrm_ros.sim.maniskill_env import SimConfig
    bench = _bench()
    torch.set_num_threads(1)
    demos = tmp_path / "demos"
    generate_demos(["PushCube-v1"], 1, demos, SimConfig(env_id="PushCube-v1", camera_width=64, camera_height=64,
                                                        max_episode_ticks=100), seed=0, progress=False)
    common = ["--task", "PushCube-v1", "--configs", "oracle", "--iterations", "1", "--episodes-per-iteration", "2",
              "--group-size", "2", "--eval-episodes", "1", "--max-ticks", "6", "--workers", "0",
              "--camera", "64", "--sil-demos", str(demos), "--out", str(tmp_path / "rows")]
    with pytest.raises(SystemExit):
        bench.main(common + ["--sil-top-fraction", "0"])
    assert "self-imitation; it is off" in capsys.readouterr().err
    assert bench.main(common + ["--sil-top-fraction", "0.5"]) == 0
    res = json.loads((tmp_path / "rows" / "oracle.json").read_text())
    info = res["sil_demos"]
    assert info["dirs"] == [str(demos)] and info["episodes"] == 1 and info["tasks"] == ["PushCube-v1"]
    assert info["steps"] > 6                 # a whole demonstration, longer than the rollouts' 6 ticks
    (it,) = res["history"]
    assert it["sil_episodes"] == 1 and it["sil_demo_steps"] == info["steps"]
    assert it["sil_steps"] == info["steps"] + 6


def test_options_are_passed_on_without_the_ones_the_parent_uses():
    bench = _bench()
    argv = ["--task", "PushCube-v1", "--configs", "il", "oracle", "--jobs", "2", "--eval-stochastic",
            "--lr=1e-4", "--select-at", "0", "5", "--configs=random"]
    assert bench._without(argv, "--configs", "--jobs") == [
        "--task", "PushCube-v1", "--eval-stochastic", "--lr=1e-4", "--select-at", "0", "5"]


def test_the_whole_table_runs_as_one_command_with_rows_side_by_side(tmp_path):
    """--jobs 2: two real (tiny) rows in ManiSkill, each in its own process; the table is made
    from both and says how long they took together."""
    bench = _bench()
    assert bench.main(["--task", "PushCube-v1", "--configs", "il", "random", "--jobs", "2",
                       "--iterations", "1", "--episodes-per-iteration", "2", "--group-size", "2",
                       "--eval-episodes", "2", "--max-ticks", "6", "--workers", "0", "--camera", "64",
                       "--out", str(tmp_path)]) == 0
    run = json.loads((tmp_path / "table3_run.json").read_text())
    assert run["jobs"] == 2 and run["configs"] == ["il", "random"] and run["elapsed_s"] > 0
    summary = json.loads((tmp_path / "table3_PushCube.json").read_text())
    assert set(summary["rows"]) == {"il", "random"} and summary["together"] == run
    for name in ("il", "random"):      # each row ran in its own process, with only its own row
        row = json.loads((tmp_path / f"{name}.json").read_text())
        assert row["eval"]["episodes"] == 2 and "--jobs 1 --row-only" in row["command"]
        assert f"--configs {name} " in row["command"]
    assert "run as one command with --jobs 2" in (tmp_path / "table3.md").read_text()


def test_a_row_that_fails_stops_the_table_with_its_log(tmp_path):
    bench = _bench()
    with pytest.raises(SystemExit) as err:
        bench.main(["--configs", "il", "oracle", "--jobs", "2", "--checkpoint", str(tmp_path / "none.pt"),
                    "--workers", "0", "--out", str(tmp_path)])
    msg = str(err.value)
    assert "failed (exit 1)" in msg and "the other rows were stopped" in msg and "none.pt" in msg
    assert not (tmp_path / "table3_run.json").exists() and not (tmp_path / "table3.md").exists()
