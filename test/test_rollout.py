"""In-process rollouts (real ManiSkill, real tiny_vla and lite models): what the benchmark
and the demo's numbers rest on. The held rewards of a rollout must be the ones the online
interval-hold would publish."""
import math

import numpy as np
import pytest
import torch

from lrm_ros.common.episode_end import END_TIME_LIMIT
from lrm_ros.learn.learner_config import LearnerConfig
from lrm_ros.learn.ppo import PPOConfig
from lrm_ros.learn.rollout import (as_store_episode, evaluate_policy, held_rewards,
                                   oracle_rewards, random_rewards, run_episode, wilson_interval)
from lrm_ros.learn.updates import filtered_bc_update, ppo_update
from lrm_ros.policy.adapter import DEFAULT_CHECKPOINT, TinyVLAAdapter
from lrm_ros.policy.tiny_vla import load_policy
from lrm_ros.rewards import make_backend

torch.set_num_threads(1)
TICKS = 7


@pytest.fixture(scope="module")
def sim():
    from lrm_ros.sim.maniskill_env import ManiSkillSim, SimConfig
    with ManiSkillSim(SimConfig(env_id="PushCube-v1", max_episode_ticks=TICKS)) as s:
        yield s


@pytest.fixture(scope="module")
def adapter():
    return TinyVLAAdapter.from_checkpoint("")      # the shipped policy


def test_an_episode_records_what_ppo_needs(sim, adapter):
    ep = run_episode(sim, adapter, seed=5, deterministic=False)
    T = ep.num_ticks
    # PushCube cannot fail; in TICKS ticks the arm does not reach the goal: the time limit ends it
    assert (ep.success, ep.end_reason, T) == (False, END_TIME_LIMIT, TICKS + 1)
    assert ep.frames.shape == (T, 224, 224, 3) and ep.features.shape == (T - 1, 1280 + 384 + 9)
    assert ep.action.shape == ep.raw_action.shape == (T - 1, 7)
    assert np.all(np.abs(ep.action) <= 1.0)
    # the recorded log-prob is the policy's density of the raw sample
    m = adapter.model
    logp = m.evaluate_actions(*m.split(torch.as_tensor(ep.features)),
                              torch.as_tensor(ep.raw_action, dtype=torch.float32))[0].detach().numpy()
    np.testing.assert_allclose(logp, ep.log_prob, rtol=1e-4, atol=1e-3)
    again = run_episode(sim, adapter, seed=5, deterministic=True)
    same = run_episode(sim, adapter, seed=5, deterministic=True)
    np.testing.assert_allclose(again.action, same.action)       # deterministic is repeatable


def test_held_rewards_follow_the_interval_hold_and_feed_ppo_and_filtered_bc(sim, adapter):
    backend = make_backend("lite", signal="progress")
    eps = [run_episode(sim, adapter, seed=s, deterministic=False) for s in (1, 2)]
    held_rewards(backend, eps, interval=3)
    for ep in eps:
        T = ep.num_ticks
        assert ep.reward.shape == (T - 1,) and ep.stale.shape == (T - 1,)
        # before the first result (queried at tick 3, published from tick 4) the held value is 0
        assert np.all(ep.reward[:3] == 0.0)
        # the held value changes only on the tick after a query (3, 6), and at the terminal step
        changes = {t + 1 for t in range(1, T - 2) if ep.reward[t] != ep.reward[t - 1]}
        assert changes <= {4, 7}, changes
        assert 0.0 <= ep.reward[-1] <= 1.0 and not ep.stale[-1]
        assert math.isfinite(ep.completion[-1])             # lite always runs completion
    init, _ = load_policy(DEFAULT_CHECKPOINT)
    model, _ = load_policy(DEFAULT_CHECKPOINT)
    batch = [as_store_episode(e) for e in eps]
    stats = ppo_update(model, init, batch, LearnerConfig(store_dir="."), PPOConfig(minibatch_size=4))
    assert all(math.isfinite(stats[k]) for k in ("pg_loss", "v_loss", "approx_kl", "kl_to_init"))
    fb = filtered_bc_update(model, batch, LearnerConfig(store_dir=".", algorithm="filtered_bc",
                                                       success_threshold=0.0, bc_epochs=1))
    assert fb["episodes_selected"] == 2
    oracle_rewards(eps)
    np.testing.assert_allclose(eps[0].reward, eps[0].normalized_dense_rewards[1:])


def test_random_rewards_are_held_like_a_model_s_and_know_nothing(sim, adapter):
    """bench_table3's `random` control: uniform values held over each K-tick interval, a fresh
    one at the terminal tick (also the final completion), reproducible from the generator."""
    ep = run_episode(sim, adapter, seed=3, deterministic=False)
    T = ep.num_ticks
    random_rewards([ep], np.random.default_rng(0), interval=3)
    first = ep.reward.copy()
    assert first.shape == ep.stale.shape == (T - 1,) and not ep.stale.any()
    assert np.all((first >= 0.0) & (first < 1.0))
    held = np.concatenate([[np.nan], first])            # by tick: reward[t - 1] is tick t's
    changes = {t for t in range(2, T) if held[t] != held[t - 1]}
    assert changes <= {3, 6, T - 1} and {3, 6} <= changes, changes
    assert ep.completion[-1] == first[-1] and np.isnan(ep.completion[:-1]).all()
    random_rewards([ep], np.random.default_rng(0), interval=3)
    np.testing.assert_array_equal(ep.reward, first)
    random_rewards([ep], np.random.default_rng(1), interval=3)
    assert not np.array_equal(ep.reward, first)
    assert as_store_episode(ep)["meta"]["extra"]["final_completion"] == pytest.approx(ep.reward[-1])


def test_evaluation_counts_successes_with_an_interval(sim, adapter):
    res = evaluate_policy(sim, adapter, [3, 4], progress=False)
    assert res["episodes"] == 2 and len(res["per_seed"]) == 2
    lo, hi = res["ci95"]
    assert 0.0 <= lo <= res["success_rate"] <= hi <= 1.0
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)


def test_parallel_rollouts_equal_serial_ones_and_follow_the_set_policy():
    """RolloutPool: the same seeds give the same (stochastic) episodes in worker processes as
    in this process, and a new policy reaches the workers."""
    import math as _m
    from lrm_ros.learn.updates import widen_action_std
    from lrm_ros.learn.rollout_pool import RolloutPool
    from lrm_ros.sim.maniskill_env import SimConfig
    cfg = SimConfig(env_id="PushCube-v1", max_episode_ticks=TICKS, camera_width=224, camera_height=224)
    model, _ = load_policy(DEFAULT_CHECKPOINT)
    with RolloutPool(cfg, workers=0, noise_seed=3) as serial:
        serial.set_policy(model)
        want = serial.run([11, 12], deterministic=False)
    with RolloutPool(cfg, workers=2, noise_seed=3) as pool:
        pool.set_policy(model)
        got = pool.run([11, 12, 11], deterministic=False, episode_ids=[5, 6, 7])
        assert [e.episode for e in got] == [5, 6, 7] and [e.seed for e in got] == [11, 12, 11]
        for a, b in zip(want, got):
            np.testing.assert_allclose(a.raw_action, b.raw_action, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(a.frames, b.frames)
        # a seed given twice (a group for PPOConfig.advantage 'group'): same start, new noise
        np.testing.assert_array_equal(got[2].frames[0], got[0].frames[0])
        assert not np.allclose(got[2].raw_action[0], got[0].raw_action[0])
        oracle_rewards([got[2]])
        assert as_store_episode(got[2])["meta"]["extra"]["seed"] == 11
        widen_action_std(model, 0.5)
        assert torch.all(model.log_std >= _m.log(0.5) - 1e-6)
        pool.set_policy(model)
        wide = pool.run([11], deterministic=False, keep_frames=False)[0]
        assert wide.frames.shape[0] == 2                 # first and last frame only
        # the wider spread reached the worker: the sampled actions leave the mean further
        m = model
        mean = m.evaluate_actions(*m.split(torch.as_tensor(wide.features)),
                                  torch.as_tensor(wide.raw_action, dtype=torch.float32))[3]
        spread = np.abs(wide.raw_action - mean.detach().numpy()).mean()
        assert spread > 0.2, spread
        res = pool.evaluate([11, 12], desc="t", show_progress=False)
        assert res["episodes"] == 2 and res["steps"] >= 2
