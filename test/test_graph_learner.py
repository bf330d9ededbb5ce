"""The learning loop as users run it: bridge + ingest + tiny_vla policy + lite reward + PPO
learner (with self-imitation), real processes and real ManiSkill, two tiny iterations. Checks the weight hand-off
(new versions only from an episode start), that a bad checkpoint is refused while the policy
keeps acting, and that the learner's store and state survive the graph for a restart."""
import dataclasses
import json
import math
from collections import defaultdict
from pathlib import Path

import pytest

from lrm_ros.bringup.graph import load_graph, resolve
from lrm_ros.bringup.session import running_graph

NS = "env0"
ITERATIONS = 2
STARTUP_S = 120.0
LEARN_S = 420.0


@pytest.fixture(scope="module")
def run(tmp_path_factory, graph_domain):
    from lrm_ros.ros.monitor import GraphMonitor
    tmp = tmp_path_factory.mktemp("learner")
    domain, env = graph_domain
    specs = resolve(load_graph("sim"), {
        "env_id": "PushCube-v1", "policy": "tiny_vla", "reward": "lite", "reward_interval": "3",
        "max_episode_ticks": "8", "learner": "ppo", "learner_dir": str(tmp / "learner"),
        "episodes_per_iteration": "2", "iterations": str(ITERATIONS), "reward_prefix": ""})
    specs = [dataclasses.replace(s, parameters={**s.parameters, "ppo.minibatch_size": 8,
                                                "ppo.sil_top_fraction": 0.5,
                                                "diagnostics_period_s": 0.5})
             if s.executable == "learner" else s for s in specs]
    assert sorted(s.executable for s in specs) == ["camera_ingest", "learner", "maniskill_bridge",
                                                   "reward_model", "vla_policy"]
    with running_graph(specs, env=env, log=tmp / "nodes.log", monitor=GraphMonitor([NS])) as g:
        g.wait_up(lambda mon: len(mon.records[NS].policy_steps) >= 1, STARTUP_S, "no policy step")
        g.wait_up(lambda mon: len(mon.learner_stats) >= ITERATIONS
                  and any(v.policy_version >= ITERATIONS for v in mon.records[NS].policy_steps),
                  LEARN_S, lambda: f"the learner did not finish its {ITERATIONS} iterations "
                  f"(stats: {g.monitor.learner_stats})")
        yield g.monitor, g.runner, tmp


def test_learner_publishes_versioned_checkpoints_with_statistics(run):
    monitor, _, tmp = run
    stats = monitor.learner_stats[:ITERATIONS]
    assert [s["iteration"] for s in stats] == [1, 2] and [s["version"] for s in stats] == [1, 2]
    for s in stats:
        assert s["algorithm"] == "ppo" and s["episodes"] == 2
        for key in ("pg_loss", "v_loss", "approx_kl", "kl_to_init", "mean_return", "stale_fraction"):
            assert s[key] is not None and math.isfinite(s[key]), (key, s)
        assert Path(s["checkpoint"]).is_file()
    # ppo.sil_top_fraction 0.5: after each update, BC on the better half of all episodes so far
    assert [s["sil_episodes"] for s in stats] == [1, 2]
    assert all(s["sil_steps"] > 0 for s in stats)
    versions = [u.version for u in monitor.policy_updates]
    assert versions[-1] >= 2 and versions == sorted(versions)
    state = json.loads((tmp / "learner" / "learner_state.json").read_text())
    assert state["iteration"] >= 2 and state["version"] >= 2


def test_policy_swaps_weights_only_between_episodes(run):
    monitor, *_ = run
    steps = monitor.records[NS].policy_steps
    by_episode = defaultdict(set)
    for s in steps:
        by_episode[s.episode].add(s.policy_version)
        assert not s.deterministic and s.n_features == 1280 + 384 + 9
    assert all(len(v) == 1 for v in by_episode.values()), dict(by_episode)
    seen = [min(v) for _, v in sorted(by_episode.items())]
    assert seen == sorted(seen) and seen[0] == 0 and seen[-1] >= 2
    # every recorded step has a command: the policy acted on each non-final tick it saw
    ticks = {(t.episode, t.tick) for t in monitor.records[NS].ticks}
    assert {(s.episode, s.tick) for s in steps} <= ticks


def test_a_bad_checkpoint_is_refused_and_the_policy_keeps_running(run):
    monitor, _, tmp = run
    bad = tmp / "corrupt.pt"
    bad.write_bytes(b"\x80\x02 this is not a checkpoint")
    rec = monitor.records[NS]
    n_status, n_steps = len(rec.policy_status), len(rec.policy_steps)
    monitor.announce_policy(99, str(bad), "")
    assert monitor.wait_for(lambda: any("refused" in s for s in rec.policy_status[n_status:]), 30), \
        rec.policy_status
    assert monitor.wait_for(lambda: len(rec.policy_steps) > n_steps + 12, 120)
    assert max(v.policy_version for v in rec.policy_steps[n_steps:]) < 99
    diag = monitor.node_diagnostics(f"/{NS}/policy")
    assert monitor.wait_for(lambda: int(monitor.node_diagnostics(f"/{NS}/policy")
                                        .get("checkpoints_refused", 0)) >= 1, 10), diag


def test_the_learner_store_resumes_after_the_graph_stops(run):
    from lrm_ros.learn.learner_config import LearnerConfig
    from lrm_ros.learn.rl import Learner
    monitor, runner, tmp = run
    runner.stop()
    learner = Learner(LearnerConfig(store_dir=str(tmp / "learner"), max_iterations=ITERATIONS + 1,
                                    episodes_per_iteration=2))
    assert learner.resumed and learner.version >= ITERATIONS
    complete = learner.store.complete_episodes()
    assert len(complete) >= 2 * ITERATIONS
    ep = learner.store.load(complete[0])
    assert ep["features"].shape[1] == 1280 + 384 + 9 and ep["done"][-1]
    assert learner.store.pending_episodes() == []      # stop closed or recovery handled them
    # the updates trained on every step of the episodes they used, each with a finite reward
    import numpy as np
    state = json.loads((tmp / "learner" / "learner_state.json").read_text())
    used = [learner.store.load(i) for i in complete if i.path.name in set(state["used"])]
    assert len(used) == 2 * ITERATIONS
    assert all(np.all(np.isfinite(e["reward"])) for e in used)
    trained = [h for h in state["history"] if h.get("iteration")]
    assert sum(h["steps"] for h in trained) == sum(len(e["reward"]) for e in used)


def test_the_sim_graph_runs_on_simulated_time(run):
    """use_sim_time (the sim graph's default): stamps are the env's simulated time, starting
    at 1 s and advancing one control period (20 Hz) per step, whatever the wall clock did."""
    import numpy as np
    monitor, *_ = run
    stamps = np.array([t.stamp_ns for t in monitor.records[NS].ticks], dtype=np.int64)
    assert stamps.size > 10 and stamps.min() >= 1_000_000_000 and stamps.max() < 10**6 * 10**9
    d = np.diff(stamps)
    assert np.all(d >= 0)                        # re-announced episode ends repeat their stamp
    steps = d[d > 1000]
    assert np.all(np.abs(steps - 50_000_000) <= 1), np.unique(steps)[:5]
