"""Offline evaluation: queries as the online interval-hold makes them, batching, metrics, and
end to end on a tiny fixture (one motion-planned PickCube demo at 64x64 + one noisy-replay
failure generated in ManiSkillSim) with the oracle backend."""
import json
import math
import re

import numpy as np
import pytest

from lrm_ros.bags.reader import Episode
from lrm_ros.evaluation.evaluate import bag_labels, evaluate, main
from lrm_ros.evaluation.scores import METRIC_KEYS, EpisodeScores, compute_metrics
from lrm_ros.rewards.base import RewardBackend, RewardResult
from lrm_ros.rewards.offline import episode_queries, score_episodes


def synthetic(T=25, ep=0, task="PickCube-v1", success=True):
    frames = np.zeros((T, 8, 8, 3), np.uint8)
    frames[..., 0] = np.arange(T)[:, None, None]
    succ = np.zeros(T, bool)
    succ[-1] = success
    z = np.zeros((T, 2))
    return Episode(task=task, instruction="pick", episode=ep, ticks=np.arange(T),
                   stamps_ns=1_000_000_000 + np.arange(T) * 50_000_000, frames=frames,
                   actions=np.zeros((T - 1, 7)), joint_names=["a", "b"], joint_positions=z,
                   joint_velocities=z, dense_rewards=np.linspace(0, 1, T),
                   normalized_dense_rewards=np.linspace(0, 1, T), successes=succ,
                   failures=np.zeros(T, bool), episode_end=True, end_reason=1)


class Recorder(RewardBackend):
    """Answers contrastive +1 always and progress = tick / 24; records what it was asked."""
    name = "recorder"
    needs = frozenset({"previous_frame", "first_frame", "frames"})
    max_batch = 3

    def __init__(self):
        self.seen, self.ended = [], []

    def score_batch(self, queries):
        self.seen.append([(q.env, q.tick) for q in queries])
        return [RewardResult(value=q.tick / 24, progress=q.tick / 24, contrastive=1.0) for q in queries]

    def end_episode(self, env, episode):
        self.ended.append(env)


def tick_of(frame):
    return int(frame[0, 0, 0])


def test_queries_match_the_interval_hold():
    ep = synthetic(T=25)
    qs = episode_queries(ep, "e", 10, {"previous_frame", "first_frame", "frames", "oracle"})
    assert [q.tick for q in qs] == [10, 20, 24]                # K, 2K and the terminal tick
    assert [tick_of(q.frame) for q in qs] == [10, 20, 24]
    assert [tick_of(q.previous_frame) for q in qs] == [0, 10, 20]
    assert all(tick_of(q.first_frame) == 0 for q in qs)
    assert [[tick_of(f) for f in q.frames] for q in qs] == [[0, 10], [0, 10, 20], [0, 10, 20, 24]]
    np.testing.assert_allclose([q.oracle for q in qs], [10 / 24, 20 / 24, 1.0])
    # only what the backend needs is snapshotted
    q = episode_queries(ep, "e", 10, {"oracle"})[0]
    assert q.previous_frame is None and q.first_frame is None and q.frames == ()
    # reversed replay: the first query sees the end of the episode first
    r = episode_queries(ep, "e", 10, {"previous_frame"}, reverse=True)
    assert [tick_of(q.frame) for q in r] == [14, 4, 0] and tick_of(r[0].previous_frame) == 24


def test_batches_interleave_episodes_in_tick_order():
    b = Recorder()
    work = [((i, False), episode_queries(synthetic(T=25, ep=i), f"e{i}", 10, b.needs)) for i in range(2)]
    res = score_episodes(b, work, progress=False)
    assert all(len(batch) <= 3 for batch in b.seen)
    order = [x for batch in b.seen for x in batch]
    assert order[:2] == [("e0", 10), ("e1", 10)]
    for env in ("e0", "e1"):
        assert [t for e, t in order if e == env] == [10, 20, 24]
    assert sorted(b.ended) == ["e0", "e1"] and [r.value for r in res[(0, False)]] == [10 / 24, 20 / 24, 1.0]


class Broken(Recorder):
    def score_batch(self, queries):
        raise RuntimeError("model fell over")


def test_backend_failure_gives_invalid_results():
    errors = {}
    work = [((0, False), episode_queries(synthetic(), "e0", 10, ()))]
    res = score_episodes(Broken(), work, progress=False, errors=errors)
    assert all(not r.valid for r in res[(0, False)]) and "model fell over" in errors["backend recorder"]


def scores(values, success, ticks=(10, 20, 30, 39), progress=None, contrastive=None, completion=None):
    n = len(values)
    nan = np.full(n, np.nan)
    return EpisodeScores(bag="b", task="T", episode=0, instruction="i", success=success, num_ticks=40,
                         query_ticks=np.array(ticks[:n]), value=np.array(values, float),
                         progress=nan if progress is None else np.array(progress, float),
                         completion=nan if completion is None else np.array(completion, float),
                         contrastive=nan if contrastive is None else np.array(contrastive, float),
                         valid=np.ones(n, bool), oracle_ticks=np.linspace(0, 1, 40))


def test_pairwise_accuracy_is_not_the_completion_auc():
    # the successes end higher than every failure (AUC 1) but their values zig-zag on the way
    succ = [scores([0.5, 0.2, 0.1, 0.9], True, progress=[0.5, 0.2, 0.1, 0.9]),
            scores([0.1, 0.4, 0.3, 0.8], True, progress=[0.1, 0.4, 0.3, 0.8])]
    fail = [scores([0.1, 0.2, 0.3, 0.4], False)]
    m, notes = compute_metrics(succ + fail)
    assert m["completion_auc"] == 1.0
    # per episode: 3 of 6 and 5 of 6 (earlier, later) pairs rise
    assert m["pairwise_accuracy"] == pytest.approx((3 / 6 + 5 / 6) / 2)
    only_fail, notes = compute_metrics(fail)
    assert math.isnan(only_fail["pairwise_accuracy"]) and "no successful" in notes["pairwise_accuracy"]


def test_progress_metrics_use_progress_answers_only():
    # a contrastive backend: value is its -1/0/+1 answer, no progress estimate
    contr = [scores([1.0, 1.0, -1.0, 1.0], True, contrastive=[1, 1, -1, 1])]
    m, notes = compute_metrics(contr)
    for k in ("progress_mae", "progress_acc_0.1", "progress_acc_0.2"):
        assert math.isnan(m[k]) and "no progress estimates" in notes[k]
    # with a progress estimate (here exactly t / (T-1)) the error is of that, not of the value
    exact = [scores([1.0, -1.0, 1.0, 1.0], True, progress=[10 / 39, 20 / 39, 30 / 39, 1.0],
                    contrastive=[1, -1, 1, 1])]
    m, notes = compute_metrics(exact)
    assert m["progress_mae"] == pytest.approx(0.0) and m["progress_acc_0.1"] == 1.0


def test_bag_labels_tell_same_named_bags_apart(tmp_path):
    paths = [tmp_path / "demos" / "PickCube-v1", tmp_path / "failures" / "PickCube-v1",
             tmp_path / "run1" / "demos" / "PushCube-v1", tmp_path / "run2" / "demos" / "PushCube-v1"]
    labels = bag_labels(paths)
    assert labels[paths[0]] == "demos/PickCube-v1" and labels[paths[1]] == "failures/PickCube-v1"
    assert labels[paths[2]] == "run1/demos/PushCube-v1" and labels[paths[3]] == "run2/demos/PushCube-v1"


# ------------------------------------------------------------------ end to end (ManiSkill)
@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    pytest.importorskip("torch").set_num_threads(1)
    from lrm_ros.data.failures import FailureConfig, generate_failures
    from lrm_ros.sim.demos import generate_demos
    from lrm_ros.sim.maniskill_env import SimConfig

    root = tmp_path_factory.mktemp("eval")
    cfg = SimConfig(env_id="PickCube-v1", camera_width=64, camera_height=64, max_episode_ticks=100)
    s = generate_demos(["PickCube-v1"], 1, root / "demos", cfg, seed=0, progress=False)
    assert s["tasks"]["PickCube-v1"]["episodes_written"] == 1
    fcfg = FailureConfig(noise_per_demo=1, stretch_per_demo=0, random_per_task=0, zero_per_task=0,
                         stall_per_demo=0, undo_per_demo=0, noise_std=0.6, max_episode_ticks=40)
    f = generate_failures([root / "demos"], root / "failures", fcfg, progress=False)
    e = f["tasks"]["PickCube-v1"]
    assert e["episodes_written"] == 1 and e["camera"] == [64, 64] and e["episodes"][0]["kind"] == "noise"
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / "metadata.yaml").write_text("not: [a bag")
    # a task without a dense reward (StackPyramid): 12 zero-action ticks in the real sim
    from lrm_ros.bags.writer import EpisodeBagWriter
    from lrm_ros.sim.demos import _replay_episode, _write_episode
    from lrm_ros.sim.maniskill_env import ManiSkillSim

    sim = ManiSkillSim(SimConfig(env_id="StackPyramid-v1", camera_width=64, camera_height=64,
                                 max_episode_ticks=12))
    try:
        assert not sim.has_dense_reward
        ticks = _replay_episode(sim, 0, None, np.zeros((12, 7)))
        with EpisodeBagWriter(root / "nodense" / "StackPyramid-v1", metadata={"format": "lrm_ros.failures/1"}) as w:
            w.write_instruction(sim.instruction, 1_000_000_000)
            _write_episode(w, sim, 0, 1.0, ticks)
    finally:
        sim.close()
    return root


def test_failures_are_readable_episodes(bags):
    from lrm_ros.bags.reader import read_episodes

    (ep,) = read_episodes(bags / "failures" / "PickCube-v1")
    assert ep.task == "PickCube-v1" and not ep.success and ep.frames.shape[1:] == (64, 64, 3)
    assert ep.num_ticks == 41 and ep.actions.shape == (40, 7) and np.all(np.abs(ep.actions) <= 1)
    summary = json.loads((bags / "failures" / "summary.json").read_text())
    assert summary["tasks"]["PickCube-v1"]["episodes"][0]["end"] == "time limit"


def test_evaluate_oracle_end_to_end(bags, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["--bags", str(bags / "demos"), str(bags / "failures"), str(bags / "corrupt"),
               str(bags / "missing"), "--backend", "oracle", "--interval", "10", "--out", str(out),
               "--no-progress"])
    assert rc == 1                                  # partial results: two bad inputs reported
    err = capsys.readouterr().err
    assert "corrupt" in err and "missing" in err
    m = json.loads((out / "metrics.json").read_text())
    for group in (m["overall"], m["per_task"]["PickCube-v1"]):
        assert set(METRIC_KEYS) <= set(group)
    o = m["overall"]
    assert (o["n_episodes"], o["n_success"], o["n_failure"]) == (2, 1, 1)
    assert o["voc"] > 0.8                           # the oracle's value rises along the success
    assert o["completion_auc"] == 1.0 and o["pairwise_accuracy"] == 1.0
    assert o["pearson_oracle"] == pytest.approx(1.0)
    assert 0 <= o["progress_mae"] <= 1 and 0 <= o["progress_acc_0.1"] <= o["progress_acc_0.2"] <= 1
    assert o["contrastive_accuracy"] is None and "contrastive" in m["notes"]["overall"]["contrastive_accuracy"]
    assert set(m["errors"]) == {str(bags / "corrupt"), str(bags / "missing")}
    succ = [e for e in m["episodes"] if e["success"]][0]
    assert succ["query_ticks"][0] == 10 and succ["query_ticks"][-1] == succ["num_ticks"] - 1
    html = (out / "report.html").read_text()
    pngs = re.findall(r'src="([^"]+\.png)"', html)
    assert pngs == ["PickCube-v1.png"] and all((out / p).stat().st_size > 1000 for p in pngs)
    assert "completion_auc" in html
    # the plot titles tell the demo bag from the failure bag of the same task
    titles = m["plot_titles"]["PickCube-v1"]
    assert len(titles) == 2
    demo_t = [t for t in titles if ": demo, success" in t]
    fail_t = [t for t in titles if ": failure (noise), failure" in t]
    assert len(demo_t) == 1 and "[demos/PickCube-v1]" in demo_t[0]
    assert len(fail_t) == 1 and "[failures/PickCube-v1]" in fail_t[0]
    assert {e["source"] for e in m["episodes"]} == {"demo", "failure (noise)"}


def test_oracle_says_what_it_leaves_out(bags, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["--bags", str(bags / "demos"), str(bags / "failures"), str(bags / "nodense"),
               "--backend", "oracle", "--interval", "5", "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    o = m["overall"]
    assert (o["n_episodes"], o["n_unscored"], o["n_no_dense_reward"]) == (3, 1, 1)
    lo = m["left_out"]["StackPyramid-v1"]
    assert lo["episodes"] == 1 and lo["no_dense_reward"] == 1 and lo["reasons"] == {"no_oracle": 3}
    assert "1 of 3 episodes have no valid score and are left out of every metric" in printed
    assert "StackPyramid-v1: 1 (no_oracle x3; 1 without a dense reward" in printed
    assert "no dense reward (StackPyramid-v1: the task has none): left out of pearson_oracle" in printed
    assert "n_unscored" in m["notes"]["overall"] and m["per_task"]["PickCube-v1"]["n_unscored"] == 0
    # the metrics are those of the two scored episodes: the scored PickCube pair alone gives the same
    assert o["completion_auc"] == m["per_task"]["PickCube-v1"]["completion_auc"] == 1.0


def test_evaluate_contrastive_with_reversed_replays(bags, tmp_path):
    b = Recorder()
    m = evaluate([bags / "demos", bags / "failures"], b, tmp_path, interval=10, progress=False,
                 plot_episodes=1)
    o = m["overall"]
    # always answering +1: right on the forward success, wrong on its reversed replay
    assert o["contrastive_accuracy"] == pytest.approx(0.5)
    assert o["n_episodes"] == 2 and sum(e["reversed"] for e in m["episodes"]) == 1
    assert math.isnan(o["voc_minmax"])              # only for topreward
    assert o["voc"] == pytest.approx(1.0) and o["progress_mae"] > 0


def test_no_episodes_is_an_error(tmp_path, capsys):
    rc = main(["--bags", str(tmp_path / "nothing"), "--backend", "oracle", "--out", str(tmp_path / "o"),
               "--no-progress"])
    assert rc == 2 and "no episode" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["overall"]["n_episodes"] == 0
    assert main(["--bags", str(tmp_path), "--backend", "nope", "--out", str(tmp_path / "o")]) == 2
