"""Offline evaluation: queries as the online interval-hold makes them, batching, metrics, and
end to end on a tiny fixture (one motion-planned PickCube demo at 64x64 + one noisy-replay
failure generated in ManiSkillSim) with the oracle backend."""
import json
import math
import re

import numpy as np
import pytest

from lrm_ros.bags.reader import Episode
from lrm_ros.core.evaluate import METRIC_KEYS, episode_queries, evaluate, main, score_episodes
from lrm_ros.core.rewards.base import RewardBackend, RewardResult


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


# ------------------------------------------------------------------ end to end (ManiSkill)
@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    pytest.importorskip("torch").set_num_threads(1)
    from lrm_ros.core.data.failures import FailureConfig, generate_failures
    from lrm_ros.core.sim.demos import generate_demos
    from lrm_ros.core.sim.maniskill_env import SimConfig

    root = tmp_path_factory.mktemp("eval")
    cfg = SimConfig(env_id="PickCube-v1", camera_width=64, camera_height=64, max_episode_ticks=100)
    s = generate_demos(["PickCube-v1"], 1, root / "demos", cfg, seed=0, progress=False)
    assert s["tasks"]["PickCube-v1"]["episodes_written"] == 1
    fcfg = FailureConfig(noise_per_demo=1, stretch_per_demo=0, random_per_task=0, zero_per_task=0,
                         noise_std=0.6, max_episode_ticks=40)
    f = generate_failures([root / "demos"], root / "failures", fcfg, progress=False)
    e = f["tasks"]["PickCube-v1"]
    assert e["episodes_written"] == 1 and e["camera"] == [64, 64] and e["episodes"][0]["kind"] == "noise"
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / "metadata.yaml").write_text("not: [a bag")
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
