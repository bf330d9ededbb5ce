"""The policy node's and the learner's ROS-free logic: weight hand-off between episodes,
observation matching, episode assembly from unordered messages, learner iterations,
checkpoints and restart."""
import json
import random

import numpy as np
import pytest
import torch

from lrm_ros.learn.assembler import EpisodeAssembler
from lrm_ros.learn.episode_store import EpisodeStore
from lrm_ros.learn.learner_config import LearnerConfig
from lrm_ros.learn.ppo import PPOConfig, discounted_returns
from lrm_ros.learn.rl import Learner
from lrm_ros.learn.updates import (episode_return, episode_succeeded, filtered_bc_update, judge_successes,
                                   self_imitation_update, step_rewards, top_returns)
from lrm_ros.policy.adapter import (PolicyAdapter, PolicyObservation, TinyVLAAdapter,
                                    adapter_class)
from lrm_ros.policy.runtime import ObservationSync, PolicyNodeConfig, PolicyRuntime, TickInfo
from lrm_ros.policy.tiny_vla import (PolicyCheckpointError, TinyVLA, TinyVLAConfig, load_policy,
                                     save_policy)

torch.set_num_threads(1)
CFG = TinyVLAConfig(action_dim=7, proprio_dim=9)


def _obs(seed=0):
    rng = np.random.default_rng(seed)
    return PolicyObservation(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
                             "push the cube", rng.normal(size=9))


@pytest.fixture(scope="module")
def base_adapter():
    torch.manual_seed(0)
    return TinyVLAAdapter(TinyVLA(CFG), {"version": 0})


def _loader(base):
    def load(path, sha):
        model, meta = load_policy(path, sha)
        return base.with_model(model, meta)
    return load


def test_new_weights_run_only_from_the_next_episode_start(tmp_path, base_adapter):
    rt = PolicyRuntime(base_adapter, _loader(base_adapter))
    torch.manual_seed(1)
    new = TinyVLA(CFG)
    sha = save_policy(new, tmp_path / "v1.pt", {"version": 1})
    obs = _obs()
    before = rt.adapter.act(obs, deterministic=True).action
    ok, text = rt.offer(1, str(tmp_path / "v1.pt"), sha)
    assert ok and "next episode" in text
    # mid-episode: still the old policy
    assert rt.version == 0 and rt.pending_version == 1
    np.testing.assert_array_equal(rt.adapter.act(obs, deterministic=True).action, before)
    assert rt.on_episode_start() == 1
    assert rt.version == 1 and rt.pending_version is None and rt.swaps == 1
    after = rt.adapter.act(obs, deterministic=True)
    assert not np.allclose(after.action, before)
    with torch.no_grad():
        want = new.act(*new.split(torch.as_tensor(after.features[None])), deterministic=True)[0][0]
    np.testing.assert_allclose(after.raw_action, want.numpy(), atol=1e-6)
    assert rt.on_episode_start() is None          # nothing pending: no swap


def test_bad_checkpoints_are_refused_and_the_old_policy_keeps_running(tmp_path, base_adapter):
    rt = PolicyRuntime(base_adapter, _loader(base_adapter))
    good = tmp_path / "v2.pt"
    sha = save_policy(TinyVLA(CFG), good, {"version": 2})
    half = tmp_path / "half.pt"
    half.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    nan_model = TinyVLA(CFG)
    with torch.no_grad():
        nan_model.log_std.fill_(float("nan"))
    nan_sha = save_policy(nan_model, tmp_path / "nan.pt")
    cases = [(1, str(good), "0" * 64, "SHA-256"),
             (1, str(half), "", "cannot be read"),
             (1, str(tmp_path / "nan.pt"), nan_sha, "non-finite"),
             (1, str(tmp_path / "missing.pt"), "", "does not exist")]
    for version, path, digest, why in cases:
        ok, text = rt.offer(version, path, digest)
        assert not ok and why in text and "keeps running" in text, text
    assert rt.refused == 4 and rt.pending_version is None
    assert rt.on_episode_start() is None and rt.version == 0
    assert rt.offer(2, str(good), sha)[0]
    ok, text = rt.offer(2, str(good), sha)          # the same version again: not newer
    assert not ok and "not newer" in text
    assert rt.on_episode_start() == 2


def test_adapter_specs_and_node_config_errors():
    assert adapter_class("tiny_vla") is TinyVLAAdapter
    with pytest.raises(ValueError, match="unknown policy adapter"):
        adapter_class("pi0")
    with pytest.raises(ValueError, match="cannot be imported"):
        adapter_class("no_such_module:Policy")
    with pytest.raises(ValueError, match="not a lrm_ros PolicyAdapter"):
        adapter_class("json:JSONDecoder")
    assert issubclass(adapter_class("lrm_ros.policy.adapter:TinyVLAAdapter"), PolicyAdapter)
    with pytest.raises(ValueError, match="action_low"):
        PolicyNodeConfig(action_low=1.0, action_high=-1.0)
    with pytest.raises(PolicyCheckpointError, match="does not exist.*checkpoint"):
        TinyVLAAdapter.from_checkpoint("/nonexistent/policy.pt")


def test_wrong_joint_count_is_a_clear_error(base_adapter):
    obs = _obs()
    obs.joint_positions = np.zeros(6)
    with pytest.raises(ValueError, match="9 joint positions, the robot sent 6"):
        base_adapter.act(obs)


def test_sampling_clips_the_sent_action_but_reports_the_raw_sample(base_adapter):
    adapter = TinyVLAAdapter(base_adapter.model, image_encoder=base_adapter.image_encoder,
                             text_encoder=base_adapter.text_encoder, action_low=-0.01, action_high=0.01)
    out = adapter.act(_obs(3))
    assert np.all(np.abs(out.action) <= 0.01) and np.any(np.abs(out.raw_action) > 0.01)
    feats = torch.as_tensor(out.features[None])
    logp = adapter.model.evaluate_actions(*adapter.model.split(feats),
                                          torch.as_tensor(out.raw_action[None], dtype=torch.float32))[0]
    assert abs(float(logp.detach()) - out.log_prob) < 1e-3


# ------------------------------------------------------------------------- ObservationSync
class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_sync_pairs_each_tick_with_its_own_frame_in_any_order():
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]):
        sync = ObservationSync(wait_s=0.5, clock=Clock())
        tick = TickInfo(0, 3, 300, False, False)
        calls = [lambda: sync.on_frame(300, "f300"), lambda: sync.on_joints(300, [3.0]),
                 lambda: sync.on_tick(tick)]
        sync.on_frame(200, "f200")
        sync.on_joints(200, [2.0])
        ready = []
        for i in order:
            ready += calls[i]()
        assert len(ready) == 1 and ready[0].frame == "f300" and not ready[0].late, order


def test_sync_late_frame_uses_the_newest_older_one_after_the_wait_or_skips():
    clock = Clock()
    sync = ObservationSync(wait_s=0.5, clock=clock)
    assert sync.on_tick(TickInfo(0, 0, 100, True, False)) == []
    clock.t = 0.6
    assert sync.poll() == [] and sync.skipped == 1          # nothing at all: skipped
    sync.on_frame(100, "f100")
    sync.on_joints(100, [1.0])
    sync.on_joints(200, [2.0])
    assert sync.on_tick(TickInfo(0, 1, 200, False, False)) == []   # frame 200 missing
    clock.t = 1.0
    assert sync.poll() == []                                 # still waiting
    clock.t = 1.2
    (late,) = sync.poll()
    assert late.late and late.frame == "f100" and list(late.joint_positions) == [2.0]
    assert sync.late == 1
    # an ending tick expects no command; a newer tick supersedes a waiting one
    assert sync.on_tick(TickInfo(0, 2, 300, False, True)) == []
    sync.on_tick(TickInfo(0, 3, 400, False, False))
    sync.on_tick(TickInfo(0, 4, 500, False, False))
    assert sync.superseded == 1


# ------------------------------------------------------------------------- EpisodeAssembler
def _feed(asm, episode, T, *, rewards, end_reason=1, terminal=(0.9, 0.95), shuffle=True,
          drop_result=False, version=0, seed=0, fallbacks=None):
    """Messages of one episode with ticks 0..T (T terminal), in random order per tick group.
    `fallbacks`: {tick: ControlTick.fallback_count} (0 elsewhere)."""
    msgs = []
    for t in range(T + 1):
        msgs.append(("tick", (episode, t, t == 0, t == T, end_reason if t == T else 0,
                              (fallbacks or {}).get(t, 0))))
        msgs.append(("held", (episode, t, rewards[t], 0.1 * t, t == 2)))
        if t < T:
            msgs.append(("step", (episode, t, {"features": np.full(4, t, np.float32),
                                               "action": np.full(2, 0.1 * t), "raw_action": np.full(2, 0.2 * t),
                                               "log_prob": -1.0 - t, "value": 0.5, "version": version,
                                               "deterministic": False})))
    if not drop_result:
        msgs.append(("result", (episode, T, True, *terminal)))
    if shuffle:
        first, rest = msgs[0], msgs[1:]
        random.Random(seed).shuffle(rest)
        msgs = [first] + rest            # tick 0 first: it opens the episode
    for kind, args in msgs:
        {"tick": asm.on_tick, "held": asm.on_held, "step": asm.on_step, "result": asm.on_result}[kind](*args)


def test_assembler_joins_unordered_messages_into_steps_with_next_tick_rewards(tmp_path):
    store = EpisodeStore(tmp_path)
    asm = EpisodeAssembler("env0", store, result_wait_s=5.0, clock=Clock())
    held = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    _feed(asm, 0, 5, rewards=held, seed=3)
    (info,) = store.complete_episodes()
    ep = store.load(info)
    assert ep["tick"].tolist() == [0, 1, 2, 3, 4]
    # step t's reward is the held value of tick t+1; the last is the terminal query's result
    np.testing.assert_allclose(ep["reward"], [0.1, 0.2, 0.3, 0.4, 0.9], atol=1e-6)
    assert ep["done"].tolist() == [False] * 4 + [True]
    assert ep["stale"].tolist() == [False, True, False, False, False]   # held of tick 2 was stale
    np.testing.assert_allclose(ep["raw_action"][:, 0], [0.0, 0.2, 0.4, 0.6, 0.8], atol=1e-6)
    extra = ep["meta"]["extra"]
    assert extra["env_success"] and extra["final_completion"] == pytest.approx(0.95)
    assert asm.counters["episodes_complete"] == 1 and asm.counters["stale_steps"] == 1


def test_assembler_sets_aside_an_episode_driven_by_fallback_commands(tmp_path):
    store = EpisodeStore(tmp_path)
    asm = EpisodeAssembler("env0", store, result_wait_s=5.0, clock=Clock())
    _feed(asm, 0, 4, rewards=[0, 0.1, 0.2, 0.3, 0.4], shuffle=False)
    # episode 1: the bridge stepped ticks 2 and 3 with its fallback (ControlTick.fallback_count)
    _feed(asm, 1, 4, rewards=[0, 0.1, 0.2, 0.3, 0.4], shuffle=False, fallbacks={3: 1, 4: 2})
    assert [i.episode for i in store.complete_episodes()] == [0]
    (aborted,) = store.incomplete_episodes()
    assert aborted.episode == 1 and "2 tick(s) driven by the bridge's fallback" in aborted.meta["abort_reason"]
    assert asm.counters["episodes_fallback"] == 1 and asm.counters["episodes_complete"] == 1


def test_assembler_keeps_only_the_last_finished_episodes_in_memory(tmp_path):
    store = EpisodeStore(tmp_path)
    asm = EpisodeAssembler("env0", store, result_wait_s=5.0, clock=Clock())
    for e in range(40):
        _feed(asm, e, 3, rewards=[0, 0.1, 0.2, 0.3], shuffle=False)
    assert asm.counters["episodes_complete"] == 40 and len(store.complete_episodes()) == 40
    assert [i.episode for i in asm.finished] == list(range(24, 40))     # bounded
    assert asm._eps == {}                                                # nothing left open


def test_assembler_waits_for_the_terminal_result_then_uses_the_held_value(tmp_path):
    clock = Clock()
    store = EpisodeStore(tmp_path)
    asm = EpisodeAssembler("env0", store, result_wait_s=2.0, clock=clock)
    _feed(asm, 0, 4, rewards=[0, 0.1, 0.2, 0.3, 0.4], drop_result=True, shuffle=False)
    assert store.complete_episodes() == []       # waiting for the terminal result
    clock.t = 1.0
    asm.poll()
    assert store.complete_episodes() == []
    clock.t = 2.5
    asm.poll()
    (info,) = store.complete_episodes()
    assert store.load(info)["reward"][-1] == pytest.approx(0.4)
    assert asm.counters["terminal_result_missing"] == 1


def test_assembler_aborts_an_episode_whose_messages_never_came_and_skips_late_joins(tmp_path):
    clock = Clock()
    store = EpisodeStore(tmp_path)
    asm = EpisodeAssembler("env0", store, result_wait_s=1.0, clock=clock)
    asm.on_tick(0, 0, True, False, 0)
    asm.on_tick(0, 1, False, False, 0)
    asm.on_step(0, 0, {"features": np.zeros(4, np.float32), "action": np.zeros(2), "raw_action": np.zeros(2),
                       "log_prob": -1.0, "value": 0.0, "version": 0, "deterministic": False})
    asm.on_held(0, 1, 0.3, 0.0, False)
    asm.on_step(0, 1, {"features": np.zeros(4, np.float32), "action": np.zeros(2), "raw_action": np.zeros(2),
                       "log_prob": -1.0, "value": 0.0, "version": 0, "deterministic": False})
    # held reward for tick 2 lost; the next episode begins
    _feed(asm, 1, 3, rewards=[0, 0.1, 0.2, 0.3], shuffle=False)
    (aborted,) = store.incomplete_episodes()
    assert aborted.steps == 1 and "began before" in aborted.meta["abort_reason"]
    assert len(store.complete_episodes()) == 1
    # a learner that starts mid-episode ignores that episode
    asm2 = EpisodeAssembler("env1", EpisodeStore(tmp_path / "b"), clock=clock)
    asm2.on_tick(7, 1, False, False, 0)
    asm2.on_held(7, 1, 0.5, 0.0, False)
    assert asm2.counters["joined_late"] == 1 and asm2.store.complete_episodes() == []


# ------------------------------------------------------------------------- Learner
def _record_episodes(store, n, T=12, version=0, success_every=2, seed=0, cfg=CFG):
    """Episodes whose 'good' actions (first component > 0) earn reward."""
    rng = np.random.default_rng(seed)
    model = TinyVLA(cfg)
    D = model.feature_dim
    for e in range(n):
        w = store.begin("env0", e, version)
        feats = rng.normal(size=(T, D)).astype(np.float32)
        x = torch.as_tensor(feats)
        with torch.no_grad():
            raw, logp, value = model.act(*model.split(x))
        for t in range(T):
            w.append({"features": feats[t], "action": np.clip(raw[t].numpy(), -1, 1),
                      "raw_action": raw[t].numpy(), "log_prob": np.float32(logp[t]),
                      "value": np.float32(value[t]), "version": np.int32(version), "tick": np.int32(t),
                      "reward": np.float32(float(raw[t, 0] > 0)), "completion": np.float32(0.9 if e % success_every == 0 else 0.1),
                      "stale": bool(t == 3), "done": t == T - 1})
        w.finish(success=e % success_every == 0,
                 extra={"env_success": e % success_every == 0, "deterministic": False,
                        "final_completion": 0.9 if e % success_every == 0 else 0.1, "final_value": 1.0})
    return model


def test_learner_ppo_iteration_writes_a_checkpoint_and_resumes_after_restart(tmp_path):
    init = tmp_path / "init.pt"
    torch.manual_seed(0)
    save_policy(TinyVLA(CFG), init, {"version": 0})
    cfg = LearnerConfig(store_dir=str(tmp_path / "learner"), init_checkpoint=str(init),
                        episodes_per_iteration=4, max_iterations=2)
    learner = Learner(cfg, PPOConfig(minibatch_size=16))
    assert not learner.ready() and not learner.resumed
    _record_episodes(learner.store, 5)
    assert learner.ready()
    res = learner.train_iteration()
    assert res.version == 1 and res.iteration == 1
    for key in ("pg_loss", "v_loss", "approx_kl", "clipfrac", "kl_to_init", "stale_fraction", "mean_return"):
        assert np.isfinite(res.stats[key]), key
    assert res.stats["stale_skipped"] == 4 * 1               # tick 3 of each episode: skipped
    model, meta = load_policy(res.checkpoint, res.sha256)
    assert meta["version"] == 1 and meta["algorithm"] == "ppo"
    init_model, _ = load_policy(init)
    changed = [not torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                      init_model.state_dict().values())]
    assert any(changed)
    assert len(learner.usable_episodes()) == 1 and not learner.ready()   # used episodes not reused
    # a restarted learner resumes: same version, same checkpoint, same used episodes
    again = Learner(cfg, PPOConfig(minibatch_size=16))
    assert again.resumed and again.version == 1 and again.checkpoint == res.checkpoint
    assert len(again.usable_episodes()) == 1
    state = json.loads((tmp_path / "learner" / "learner_state.json").read_text())
    assert state["history"][0]["version"] == 1
    # episodes of a policy older than max_policy_lag are not used
    _record_episodes(again.store, 4, version=0, seed=1)
    assert len(again.usable_episodes()) == 5                  # lag 1: version 0 still fine
    again.train_iteration()
    _record_episodes(again.store, 4, version=0, seed=2)
    assert again.usable_episodes() == [] and again.done


def test_ppo_raises_the_likelihood_of_rewarded_actions(tmp_path):
    torch.manual_seed(0)
    init = tmp_path / "init.pt"
    save_policy(TinyVLA(CFG), init)
    cfg = LearnerConfig(store_dir=str(tmp_path / "l"), init_checkpoint=str(init),
                        episodes_per_iteration=16, max_iterations=3)
    learner = Learner(cfg, PPOConfig(minibatch_size=64, update_epochs=8, learning_rate=1e-3,
                                     kl_coef=0.0, gamma=0.01, gae_lambda=0.0))
    _record_episodes(learner.store, 16, T=16, seed=4)
    feats = torch.as_tensor(np.random.default_rng(9).normal(size=(256, learner.model.feature_dim)),
                            dtype=torch.float32)
    before = learner.model(*learner.model.split(feats))[0][:, 0].mean().item()
    learner.train_iteration()
    after = learner.model(*learner.model.split(feats))[0][:, 0].mean().item()
    assert after > before + 0.02, (before, after)   # reward = 1 when action[0] > 0


def test_all_stale_rewards_refuse_to_train_and_flag_mode_counts(tmp_path):
    init = tmp_path / "init.pt"
    save_policy(TinyVLA(CFG), init)
    store = EpisodeStore(tmp_path / "s")
    _record_episodes(store, 2, T=4)
    eps = [store.load(i) for i in store.complete_episodes()]
    for e in eps:
        e["stale"][:] = True
    from lrm_ros.learn.updates import ppo_update
    cfg = LearnerConfig(store_dir=str(tmp_path))
    model, _ = load_policy(init)
    with pytest.raises(ValueError, match="every step's reward is stale"):
        ppo_update(model, load_policy(init)[0], eps, cfg, PPOConfig(stale_rewards="skip"))
    stats = ppo_update(model, load_policy(init)[0], eps, cfg, PPOConfig(stale_rewards="flag"))
    assert stats["stale_fraction"] == 1.0 and stats["stale_skipped"] == 0


def test_filtered_bc_trains_only_on_rollouts_the_completion_signal_calls_successful(tmp_path):
    store = EpisodeStore(tmp_path / "s")
    _record_episodes(store, 6, T=8, success_every=3)        # episodes 0 and 3 succeed
    eps = [store.load(i) for i in store.complete_episodes()]
    cfg = LearnerConfig(store_dir=str(tmp_path), algorithm="filtered_bc", success_threshold=0.5,
                        bc_epochs=30, bc_lr=1e-3)
    assert [episode_succeeded(e["meta"], cfg) for e in eps] == [True, False, False, True, False, False]
    model = TinyVLA(CFG)
    stats = filtered_bc_update(model, eps, cfg)
    assert stats["episodes_selected"] == 2 and stats["steps"] == 16
    chosen = np.concatenate([eps[0]["features"], eps[3]["features"]])
    target = np.concatenate([eps[0]["action"], eps[3]["action"]])
    with torch.no_grad():
        pred = model(*model.split(torch.as_tensor(chosen)))[0].numpy()
    assert np.mean((pred - target) ** 2) < 0.05
    env_cfg = LearnerConfig(store_dir=str(tmp_path), success_source="env")
    assert sum(episode_succeeded(e["meta"], env_cfg) for e in eps) == 2
    none = filtered_bc_update(TinyVLA(CFG), eps, LearnerConfig(store_dir=".", algorithm="filtered_bc",
                                                             success_threshold=0.99))
    assert none["episodes_selected"] == 0 and none["steps"] == 0
    # the labeller's precision against the simulator's verdict is reported where it is known
    eps[1]["meta"].setdefault("extra", {})["final_completion"] = 0.9      # a false positive
    fp = filtered_bc_update(TinyVLA(CFG), eps, LearnerConfig(store_dir=".", algorithm="filtered_bc",
                                                           success_threshold=0.5, bc_epochs=1))
    assert (fp["episodes_selected"], fp["selected_env_successes"], fp["env_successes_seen"]) == (3, 2, 2)


def _with_finals(finals):
    return [{"meta": {"extra": {"final_completion": c, "env_success": False}}} for c in finals]


def test_a_top_fraction_of_each_iteration_counts_as_successful_whatever_the_scale():
    """success_top_fraction: a labeller whose completions never reach the threshold (compressed,
    uncalibrated on the policy's rollouts) still picks the rollouts it ranks highest."""
    cfg = LearnerConfig(store_dir=".", algorithm="filtered_bc", success_top_fraction=0.25)
    eps = _with_finals([0.02, 0.11, float("nan"), 0.03, 0.09, None, 0.01, 0.11])
    assert judge_successes(eps, cfg) == [False, True, False, False, False, False, False, True]
    threshold = LearnerConfig(store_dir=".", algorithm="filtered_bc")          # 0.5: none of them
    assert judge_successes(eps, threshold) == [False] * 8
    # at least one, never one without a valid completion
    tiny = LearnerConfig(store_dir=".", algorithm="filtered_bc", success_top_fraction=0.01)
    assert judge_successes(_with_finals([0.2, 0.4, 0.3]), tiny) == [False, True, False]
    assert judge_successes(_with_finals([float("nan"), None]), cfg) == [False, False]
    # the simulator's verdict is not ranked
    env = LearnerConfig(store_dir=".", algorithm="filtered_bc", success_source="env", success_top_fraction=0.5)
    assert judge_successes([{"meta": {"extra": {"env_success": s, "final_completion": 0.9}}}
                            for s in (True, False, False)], env) == [True, False, False]
    with pytest.raises(ValueError, match="success_top_fraction"):
        LearnerConfig(store_dir=".", success_top_fraction=1.5)


def test_the_learner_ranks_each_iteration_once_and_replays_what_it_picked(tmp_path):
    init = tmp_path / "init.pt"
    torch.manual_seed(0)
    save_policy(TinyVLA(CFG), init, {"version": 0})
    cfg = LearnerConfig(store_dir=str(tmp_path / "l"), init_checkpoint=str(init), algorithm="filtered_bc",
                        success_top_fraction=0.25, episodes_per_iteration=4, max_iterations=3,
                        max_policy_lag=5)
    learner = Learner(cfg)
    _record_episodes(learner.store, 4, T=6, success_every=2)          # finals 0.9, 0.1, 0.9, 0.1
    first = learner.train_iteration()
    assert (first.stats["episodes_selected"], first.stats["episodes_replayed"]) == (1, 0)
    _record_episodes(learner.store, 4, T=6, success_every=4, seed=1)  # finals 0.9, 0.1, 0.1, 0.1
    second = learner.train_iteration()
    # one new pick (the best of these four) plus the one kept from iteration 1
    assert (second.stats["episodes_selected"], second.stats["episodes_replayed"]) == (2, 1)
    assert len(learner.bc_kept) == 2


def test_filtered_bc_learner_keeps_training_on_earlier_successes_across_restarts(tmp_path):
    """bc_replay: each iteration trains on this iteration's successes and every earlier one
    (as bench_table3's filtered rows do); the kept set survives a restart."""
    init = tmp_path / "init.pt"
    torch.manual_seed(0)
    save_policy(TinyVLA(CFG), init, {"version": 0})
    cfg = LearnerConfig(store_dir=str(tmp_path / "l"), init_checkpoint=str(init), algorithm="filtered_bc",
                        success_source="env", episodes_per_iteration=4, max_iterations=3,
                        max_policy_lag=5)
    learner = Learner(cfg)
    _record_episodes(learner.store, 4, T=6, success_every=2)          # 2 successes
    first = learner.train_iteration()
    assert (first.stats["episodes_selected"], first.stats["episodes_replayed"]) == (2, 0)
    again = Learner(cfg)                                                # restart
    _record_episodes(again.store, 4, T=6, success_every=4, seed=1)     # 1 new success
    second = again.train_iteration()
    assert (second.stats["episodes_selected"], second.stats["episodes_replayed"]) == (3, 2)
    assert second.stats["steps"] == 3 * 6
    off = LearnerConfig(store_dir=str(tmp_path / "off"), init_checkpoint=str(init), algorithm="filtered_bc",
                        success_source="env", episodes_per_iteration=4, bc_replay=False)
    plain = Learner(off)
    _record_episodes(plain.store, 4, T=6, success_every=2)
    plain.train_iteration()
    _record_episodes(plain.store, 4, T=6, success_every=4, seed=1)
    assert plain.train_iteration().stats["episodes_selected"] == 1


def test_reward_transforms_and_config_validation():
    np.testing.assert_allclose(step_rewards([0.2, 0.2, 0.5], "value", 2.0), [0.4, 0.4, 1.0])
    np.testing.assert_allclose(step_rewards([0.2, 0.2, 0.5], "delta", 1.0), [0.2, 0.0, 0.3])
    with pytest.raises(ValueError, match="algorithm"):
        LearnerConfig(algorithm="sac")
    with pytest.raises(ValueError, match="success_source"):
        LearnerConfig(success_source="operator")


def test_an_iteration_that_cannot_train_sets_its_episodes_aside(tmp_path):
    init = tmp_path / "init.pt"
    save_policy(TinyVLA(CFG), init)
    learner = Learner(LearnerConfig(store_dir=str(tmp_path / "l"), init_checkpoint=str(init),
                                    episodes_per_iteration=2))
    _record_episodes(learner.store, 2, T=4)
    for info in learner.store.complete_episodes():       # make every reward stale
        for chunk in info.path.glob("chunk_*.npz"):
            data = dict(np.load(chunk))
            data["stale"][:] = True
            np.savez(chunk, **data)
    with pytest.raises(ValueError, match="stale"):
        learner.train_iteration()
    assert learner.version == 0 and not learner.ready()
    assert learner.history[-1]["skipped_episodes"] == 2


def test_an_ended_episode_waits_for_its_terminal_result_while_the_next_one_runs(tmp_path):
    clock = Clock()
    store = EpisodeStore(tmp_path)
    asm = EpisodeAssembler("env0", store, result_wait_s=5.0, clock=clock)
    _feed(asm, 0, 4, rewards=[0, 0.1, 0.2, 0.3, 0.4], drop_result=True, shuffle=False)
    asm.on_tick(1, 0, True, False, 0)                  # auto-reset: episode 1 starts at once
    asm.on_held(1, 0, 0.0, 0.0, False)
    assert store.complete_episodes() == [] and store.incomplete_episodes() == []
    asm.on_result(0, 4, True, 0.8, 0.9)                # the terminal query of episode 0 lands
    (info,) = store.complete_episodes()
    assert info.episode == 0 and store.load(info)["reward"][-1] == pytest.approx(0.8)
    _feed(asm, 1, 3, rewards=[0, 0.1, 0.2, 0.3], shuffle=False)
    assert len(store.complete_episodes()) == 2 and asm.counters["episodes_aborted"] == 0


def test_ppo_stops_an_iteration_early_when_the_policy_moves_too_far(tmp_path):
    torch.manual_seed(0)
    init = tmp_path / "init.pt"
    save_policy(TinyVLA(CFG), init)
    store = EpisodeStore(tmp_path / "s")
    _record_episodes(store, 4, T=32, seed=5)
    eps = [store.load(i) for i in store.complete_episodes()]
    from lrm_ros.learn.updates import ppo_update
    cfg = LearnerConfig(store_dir=str(tmp_path))
    free = ppo_update(load_policy(init)[0], load_policy(init)[0], eps, cfg,
                      PPOConfig(learning_rate=1e-2, minibatch_size=16, update_epochs=8, target_kl=0.0))
    capped = ppo_update(load_policy(init)[0], load_policy(init)[0], eps, cfg,
                        PPOConfig(learning_rate=1e-2, minibatch_size=16, update_epochs=8, target_kl=0.01))
    assert free["stopped_early"] == 0 and free["gradient_steps"] == 8 * 8
    assert capped["stopped_early"] == 1 and capped["gradient_steps"] < free["gradient_steps"]


def test_critic_prefit_fits_the_discounted_returns(tmp_path):
    from lrm_ros.learn.ppo import discounted_returns
    from lrm_ros.learn.updates import prefit_critic
    torch.manual_seed(0)
    store = EpisodeStore(tmp_path / "s")
    _record_episodes(store, 4, T=16, seed=7)
    eps = [store.load(i) for i in store.complete_episodes()]
    cfg, ppo = LearnerConfig(store_dir=str(tmp_path)), PPOConfig(value_prefit_epochs=60, minibatch_size=16)
    target = np.concatenate([discounted_returns(e["reward"], e["done"], ppo.gamma) for e in eps])
    model = TinyVLA(CFG)
    before = np.mean((np.concatenate([e["value"] for e in eps]) - target) ** 2)
    actor_before = [p.detach().clone() for p in model.actor.parameters()]
    values, mse = prefit_critic(model, eps, cfg, ppo)
    assert mse < 0.5 * before
    np.testing.assert_allclose(np.concatenate(values), model(*model.split(torch.as_tensor(
        np.concatenate([e["features"] for e in eps]))))[2].detach().numpy(), atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(actor_before, model.actor.parameters()))


def test_learning_gate_holds_updates_while_paused_or_rewards_are_stale(tmp_path):
    from lrm_ros.learn.assembler import LearningGate
    g = LearningGate(max_stale_fraction=0.5, window=20)
    assert g.reason() == ""
    g.on_pause("env1", True)
    assert "robot paused in ['env1']" in g.reason()
    g.on_pause("env1", False)
    for i in range(20):
        g.on_held("env0", stale=i % 4 != 0)          # 75% stale
    assert "rewards stale in ['env0'] (75%" in g.reason()
    for _ in range(20):
        g.on_held("env0", stale=False)
    assert g.reason() == "" and g.stale_fraction("env0") == 0.0
    # a pause closes the episodes in progress as incomplete
    store = EpisodeStore(tmp_path)
    asm = EpisodeAssembler("env0", store, clock=Clock())
    _feed(asm, 0, 4, rewards=[0, 0.1, 0.2, 0.3, 0.4], drop_result=True, shuffle=False)
    asm.on_tick(1, 0, True, False, 0)
    asm.abort_open("robot paused")
    (aborted,) = store.incomplete_episodes()
    assert aborted.meta["abort_reason"] == "robot paused"


# ------------------------------------------------------------------------- success is absorbing
def _ep(rewards, success):
    n = len(rewards)
    done = np.zeros(n, bool)
    done[-1] = True
    return {"reward": np.asarray(rewards, np.float32), "done": done,
            "meta": {"complete": True, "extra": {"env_success": success}}}


def test_a_quick_success_is_worth_more_than_a_slow_one_or_hovering():
    from lrm_ros.learn.updates import training_rewards
    cfg, gamma = LearnerConfig(store_dir="unused"), 0.99
    ramp = lambda n: list(np.linspace(0.1, 0.8, n - 1)) + [1.0]          # noqa: E731
    quick, slow = _ep(ramp(20), True), _ep(ramp(60), True)
    hover = _ep([0.1] * 5 + [0.8] * 95, False)                              # near the goal, never there
    ret = lambda ep, c=cfg: discounted_returns(training_rewards(ep, c, gamma), ep["done"], gamma)[0]  # noqa: E731
    assert ret(quick) > ret(slow) > ret(hover)
    r = training_rewards(quick, cfg, gamma)
    assert r[-1] == pytest.approx(1.0 / (1 - gamma)) and np.allclose(r[:-1], quick["reward"][:-1])
    assert np.allclose(training_rewards(hover, cfg, gamma), hover["reward"])       # failures unchanged
    # without it, the plain held values pay hovering more than succeeding (what PPO then learns)
    off = LearnerConfig(store_dir="unused", success_absorbing=False)
    assert ret(hover, off) > ret(slow, off) and ret(slow, off) > ret(quick, off)
    # potential-based (delta) rewards need nothing: a goal state pays no more change
    delta = LearnerConfig(store_dir="unused", reward_transform="delta")
    assert np.allclose(training_rewards(quick, delta, gamma), np.diff(np.concatenate([[0.0], quick["reward"]])))


def test_group_advantages_compare_episodes_from_the_same_start_by_hand():
    from lrm_ros.learn.updates import group_advantages

    def ep(rewards, seed, success):
        e = _ep(rewards, success)
        e["meta"]["extra"]["seed"] = seed
        e["value"] = np.full(len(rewards), 99.0, np.float32)      # the critic is not used
        return e
    cfg, ppo = LearnerConfig(store_dir="unused"), PPOConfig(advantage="group", gamma=0.5)
    quick = ep([0.0, 1.0], 1, True)            # G = [0 + 0.5 * 2, 1 / (1 - 0.5)] = [1, 2]
    stuck = ep([0.0, 0.0, 0.0], 1, False)      # G = [0, 0, 0]
    alone = ep([1.0, 1.0, 1.0], 2, False)      # G = [1.75, 1.5, 1]: no peer with its seed
    adv = group_advantages([quick, stuck, alone], cfg, ppo)
    np.testing.assert_allclose(adv[0], [1.0, 2.0])
    # after its success, `quick` counts with its absorbing value 2 at step 2
    np.testing.assert_allclose(adv[1], [-1.0, -2.0, -2.0])
    # compared with every other episode of the batch: mean of [1, 2, 2] and [0, 0, 0]
    np.testing.assert_allclose(adv[2], [1.25, 0.5, 0.0])
    # without seeds (the graph's episodes) the whole batch is one group
    for e in (quick, stuck):
        del e["meta"]["extra"]["seed"]
    adv = group_advantages([quick, stuck], cfg, ppo)
    np.testing.assert_allclose(adv[0], [1.0, 2.0])
    with pytest.raises(ValueError, match="advantage"):
        PPOConfig(advantage="critic")


def test_assembler_drops_malformed_policy_steps_and_counts_them(tmp_path):
    store = EpisodeStore(tmp_path)
    asm = EpisodeAssembler("env0", store, result_wait_s=5.0, clock=Clock(), feature_dim=4, action_dim=2)
    good = {"features": np.zeros(4, np.float32), "action": np.zeros(2), "raw_action": np.zeros(2),
            "log_prob": -1.0, "value": 0.0, "version": 0, "deterministic": False}
    asm.on_tick(0, 0, True, False, 0)
    for bad in ({**good, "features": np.zeros(3, np.float32)},            # wrong size
                {**good, "features": np.zeros(10**5, np.float32)},        # huge
                {**good, "raw_action": np.array([np.nan, 0.0])},          # NaN
                {**good, "log_prob": float("inf")}):
        asm.on_step(0, 0, bad)
    assert asm.counters["steps_invalid"] == 4 and "non-finite" in asm.last_invalid
    assert asm._eps[0].steps == {}                 # nothing recorded for tick 0
    asm.on_step(0, 0, good)
    assert 0 in asm._eps[0].steps


def test_assembler_counts_an_episode_dropped_before_its_first_step(tmp_path):
    store = EpisodeStore(tmp_path)
    asm = EpisodeAssembler("env0", store, result_wait_s=1.0, clock=Clock())
    asm.on_tick(0, 0, True, False, 0)
    asm.on_tick(0, 1, False, False, 0)            # no PolicyStep ever came (the policy was gone)
    _feed(asm, 1, 3, rewards=[0, 0.1, 0.2, 0.3], shuffle=False)
    assert asm.counters["episodes_dropped"] == 1 and asm.counters["episodes_aborted"] == 0
    assert "episode 0 dropped" in asm.last_invalid and len(store.complete_episodes()) == 1


def test_assembler_keeps_steps_that_overtake_their_episodes_tick_0(tmp_path):
    """policy/step and reward/held are other topics than control/tick: under load the step of
    tick 0 can arrive first. It must not be lost (the episode would never complete)."""
    store = EpisodeStore(tmp_path)
    asm = EpisodeAssembler("env0", store, result_wait_s=5.0, clock=Clock())
    _feed(asm, 0, 3, rewards=[0, 0.1, 0.2, 0.3], shuffle=False)
    step = {"features": np.zeros(4, np.float32), "action": np.zeros(2), "raw_action": np.zeros(2),
            "log_prob": -1.0, "value": 0.0, "version": 0, "deterministic": False}
    asm.on_step(1, 0, step)                       # episode 1's first step, before its tick 0
    asm.on_held(1, 1, 0.5, 0.0, False)
    asm.on_step(3, 0, step)                       # a far future episode: kept, then discarded
    asm.on_tick(1, 0, True, False, 0)
    asm.on_tick(1, 1, False, True, 2)
    asm.on_result(1, 1, True, 0.7, 0.0)
    assert [i.episode for i in store.complete_episodes()] == [0, 1]
    assert asm.counters["episodes_dropped"] == 0
    asm.on_step(0, 5, step)                        # an old episode's straggler: not kept
    assert 0 not in asm._early


def test_learner_explores_from_a_wider_imitation_policy_and_uses_only_its_episodes(tmp_path):
    """ppo.explore_std: a fresh learner first publishes version 1 = the imitation policy with
    the wider action spread; episodes of the narrow version 0 are not trained on."""
    import math as _m
    init = tmp_path / "init.pt"
    torch.manual_seed(0)
    narrow = TinyVLA(CFG)
    with torch.no_grad():
        narrow.log_std.fill_(-2.9)
    save_policy(narrow, init, {"version": 0})
    cfg = LearnerConfig(store_dir=str(tmp_path / "learner"), init_checkpoint=str(init),
                        episodes_per_iteration=4, max_iterations=2)
    learner = Learner(cfg, PPOConfig(minibatch_size=16, explore_std=0.2))
    assert learner.version == 1 and learner.iteration == 0 and learner.min_episode_version == 1
    v1, meta = load_policy(learner.checkpoint, learner.sha256)
    assert meta["explore_std"] == 0.2
    np.testing.assert_allclose(v1.effective_log_std().detach().numpy(), _m.log(0.2), rtol=1e-6)
    np.testing.assert_allclose(learner.init_model.effective_log_std().numpy(), _m.log(0.2), rtol=1e-6)
    for a, b in zip(v1.actor.parameters(), narrow.actor.parameters()):
        assert torch.equal(a, b)                            # the same means
    _record_episodes(learner.store, 4, version=0)
    assert learner.usable_episodes() == []                  # recorded with the narrow policy
    _record_episodes(learner.store, 4, version=1, seed=3)
    assert len(learner.usable_episodes()) == 4
    res = learner.train_iteration()
    assert res.version == 2 and res.iteration == 1
    again = Learner(cfg, PPOConfig(minibatch_size=16, explore_std=0.2))   # resumes, no new v1
    assert again.resumed and again.version == 2 and again.min_episode_version == 1
    with pytest.raises(ValueError, match="explore_std"):
        PPOConfig(explore_std=-1)


def test_ppo_can_keep_the_imitation_projections_fixed(tmp_path):
    """ppo.train_projections off: the update changes the actor head (and critic, log-std),
    never the image/text projections behaviour cloning learned."""
    init = tmp_path / "init.pt"
    torch.manual_seed(0)
    save_policy(TinyVLA(CFG), init, {"version": 0})
    cfg = LearnerConfig(store_dir=str(tmp_path / "learner"), init_checkpoint=str(init),
                        episodes_per_iteration=4, max_iterations=1)
    learner = Learner(cfg, PPOConfig(minibatch_size=16, learning_rate=1e-3, target_kl=0,
                                     train_projections=False, sil_top_fraction=0.0))
    _record_episodes(learner.store, 4)
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    learner.train_iteration()
    after = learner.model.state_dict()
    for name in before:
        same = torch.equal(before[name], after[name])
        if name.startswith(("image_proj.", "text_proj.")):
            assert same, name
    assert not torch.equal(before["actor.4.weight"], after["actor.4.weight"])


def test_assembler_waits_for_the_end_tick_before_writing_the_last_step(tmp_path):
    """PolicyStep T-1 and HeldReward T can overtake ControlTick T (the end): the last step is
    still the one marked done, with the terminal query's result as its reward (a graph run
    recorded a 'complete' episode without any done step)."""
    store = EpisodeStore(tmp_path)
    asm = EpisodeAssembler("env0", store, result_wait_s=5.0, clock=Clock())
    T = 4
    msgs = []
    _feed(_Recorder(msgs), 0, T, rewards=[0.0, 0.1, 0.2, 0.3, 0.4], shuffle=False, terminal=(0.9, 0.95))
    end = [m for m in msgs if m[0] == "tick" and m[1][1] == T]
    rest = [m for m in msgs if m not in end]
    for kind, args in rest + end:                   # the end tick comes last of all
        {"tick": asm.on_tick, "held": asm.on_held, "step": asm.on_step, "result": asm.on_result}[kind](*args)
    (info,) = store.complete_episodes()
    ep = store.load(info)
    assert ep["done"].tolist() == [False] * (T - 1) + [True]
    assert ep["reward"][-1] == pytest.approx(0.9)   # the terminal result, not the held 0.4


class _Recorder:
    """Collects the messages `_feed` would deliver, in its order."""

    def __init__(self, out):
        self.out = out
        for kind in ("tick", "held", "step", "result"):
            setattr(self, f"on_{kind}", lambda *a, k=kind: self.out.append((k, a)))


def test_top_returns_picks_the_best_fraction_with_ties_by_name():
    returns = {"c": 1.0, "a": 5.0, "b": 5.0, "d": -2.0, "e": 0.5, "f": 3.0, "g": 0.0, "h": 0.1}
    assert top_returns(returns, 0.25) == ["a", "b"]
    assert top_returns(returns, 0.5) == ["a", "b", "f", "c"]
    assert top_returns(returns, 0.01) == ["a"]                 # at least one
    assert top_returns(returns, 0.0) == [] and top_returns({}, 0.5) == []
    # a success's absorbing last reward makes it outrank a failure with more reward on the way
    cfg = LearnerConfig(store_dir="unused")
    assert episode_return(_ep([0.1, 0.2, 0.9], True), cfg, 0.99) > episode_return(
        _ep([0.8, 0.8, 0.8], False), cfg, 0.99)
    with pytest.raises(ValueError, match="sil_top_fraction"):
        PPOConfig(sil_top_fraction=1.5)


def test_ppo_self_imitation_clones_the_best_return_episodes_so_far(tmp_path):
    """PPOConfig.sil_top_fraction: after the PPO step the learner clones the episodes whose
    return ranks in the top fraction of every episode trained on so far, across restarts."""
    init = tmp_path / "init.pt"
    torch.manual_seed(0)
    save_policy(TinyVLA(CFG), init, {"version": 0})

    def learner(name, sil):
        cfg = LearnerConfig(store_dir=str(tmp_path / name), init_checkpoint=str(init),
                            episodes_per_iteration=4, max_iterations=3, max_policy_lag=5,
                            bc_epochs=20, bc_lr=1e-3)
        return Learner(cfg, PPOConfig(minibatch_size=16, sil_top_fraction=sil, learning_rate=1e-6))

    runs = {}
    for name, sil in (("plain", 0.0), ("sil", 0.25)):
        lr = learner(name, sil)
        _record_episodes(lr.store, 4, T=6, seed=3)
        runs[name] = (lr, lr.train_iteration())
    lr, first = runs["sil"]
    infos = lr.store.complete_episodes()
    eps = {i.path.name: lr.store.load(i) for i in infos}
    returns = {n: episode_return(e, lr.cfg, lr.ppo.gamma) for n, e in eps.items()}
    assert lr.sil_returns == pytest.approx(returns)
    best = top_returns(returns, 0.25)
    assert len(best) == 1 and first.stats["sil_episodes"] == 1 and first.stats["sil_steps"] == 6
    assert first.stats["sil_env_successes"] == float(bool(eps[best[0]]["meta"]["extra"]["env_success"]))
    assert "sil_episodes" not in runs["plain"][1].stats
    # the clone moved the policy's mean towards the chosen episode's actions; PPO alone did not
    x = torch.as_tensor(eps[best[0]]["features"])
    target = torch.as_tensor(eps[best[0]]["action"])
    with torch.no_grad():
        err = {n: float(((r[0].model(*r[0].model.split(x))[0] - target) ** 2).mean()) for n, r in runs.items()}
        init_model, _ = load_policy(init)
        before = float(((init_model(*init_model.split(x))[0] - target) ** 2).mean())
    assert err["sil"] < 0.1 * before and err["plain"] > 0.9 * before, (before, err)
    # a restarted learner keeps every return so far and picks the top quarter of all eight
    again = learner("sil", 0.25)
    assert again.sil_returns == pytest.approx(returns)
    _record_episodes(again.store, 4, T=6, seed=4)
    second = again.train_iteration()
    assert len(again.sil_returns) == 8 and second.stats["sil_episodes"] == 2


def test_self_imitation_clones_the_demonstrations_beside_its_picks():
    """`demos` (the steps the IL policy was cloned from) are cloned with the picked episodes:
    the policy's mean moves towards both; demos of another feature width are refused."""
    rng = np.random.default_rng(5)
    torch.manual_seed(5)
    model = TinyVLA(CFG)
    D = model.feature_dim
    picked = {"features": rng.normal(size=(8, D)).astype(np.float32),
              "action": np.full((8, 7), 0.5, np.float32), "meta": {"extra": {"env_success": True}}}
    demos = (rng.normal(size=(16, D)).astype(np.float32), np.full((16, 7), -0.5, np.float32))
    cfg = LearnerConfig(store_dir="unused", bc_epochs=60, bc_lr=1e-3)

    def err(m, x, y):
        with torch.no_grad():
            return float(((m(*m.split(torch.as_tensor(x)))[0] - torch.as_tensor(y)) ** 2).mean())

    alone, mixed = TinyVLA(CFG), TinyVLA(CFG)
    alone.load_state_dict(model.state_dict())
    mixed.load_state_dict(model.state_dict())
    s_alone = self_imitation_update(alone, [picked], cfg, seed=1)
    s_mixed = self_imitation_update(mixed, [picked], cfg, seed=1, demos=demos)
    assert s_alone["sil_steps"] == 8 and "sil_demo_steps" not in s_alone
    assert s_mixed["sil_steps"] == 24 and s_mixed["sil_demo_steps"] == 16 and s_mixed["sil_env_successes"] == 1
    before = err(model, *demos)
    assert err(mixed, *demos) < 0.2 * before, (before, err(mixed, *demos))
    assert err(alone, *demos) > 0.5 * before        # the picks alone do not teach the demos
    assert err(mixed, picked["features"], picked["action"]) < 0.2 * err(model, picked["features"], picked["action"])
    with pytest.raises(ValueError, match="features per step"):
        self_imitation_update(mixed, [picked], cfg, demos=(demos[0][:, :10], demos[1]))
