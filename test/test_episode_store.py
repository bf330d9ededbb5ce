"""EpisodeStore: round trip, validation, crash recovery (a real SIGKILL), prune."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lrm_ros.learn.episode_store import EpisodeStore

REPO = Path(__file__).resolve().parents[1]


def _step(t, rng=None, dim=5, adim=3):
    rng = rng or np.random.default_rng(t)
    return {
        "obs_features": rng.standard_normal(dim).astype(np.float32),
        "action": rng.standard_normal(adim).astype(np.float32),
        "log_prob": float(rng.standard_normal()),
        "value": np.float32(rng.standard_normal()),
        "reward": float(t) * 0.5,
        "reward_stale": bool(t % 3 == 0),
        "done": t == 149,
    }


def _write(store, env="pick", episode=0, n=150, success=True, **kw):
    w = store.begin(env, episode, policy_version=7, **kw)
    steps = [_step(t) for t in range(n)]
    for s in steps:
        w.append(s)
    return w.finish(success=success, extra={"note": "x"}), steps


def test_round_trip_150_steps_chunk_64(tmp_path):
    store = EpisodeStore(tmp_path, chunk_size=64)
    path, steps = _write(store, meta={"seed": 3})
    assert sorted(p.name for p in path.glob("chunk_*.npz")) == [
        "chunk_000000.npz", "chunk_000001.npz", "chunk_000002.npz"]
    eps = store.complete_episodes()
    assert [e.path for e in eps] == [path] and eps[0].steps == 150 and eps[0].complete
    data = store.load(path)
    meta = data.pop("meta")
    for k in steps[0]:
        expect = np.stack([np.asarray(s[k]) for s in steps])
        assert data[k].dtype == expect.dtype and data[k].shape == expect.shape
        np.testing.assert_array_equal(data[k], expect)
    assert data["obs_features"].shape == (150, 5) and data["reward_stale"].dtype == np.bool_
    assert meta["env"] == "pick" and meta["episode"] == 0 and meta["policy_version"] == 7
    assert meta["steps"] == 150 and meta["success"] is True and meta["complete"] is True
    assert meta["recovered"] is False and meta["meta"] == {"seed": 3}
    assert meta["return"] == pytest.approx(sum(t * 0.5 for t in range(150)))
    assert meta["extra"] == {"note": "x"} and meta["created"] > 0
    assert store.incomplete_episodes() == [] and store.pending_episodes() == []
    batches = list(store.iter_batches(batch_size=64, seed=0))
    assert [len(b["reward"]) for b in batches] == [64, 64, 22]
    assert sorted(np.concatenate([b["reward"] for b in batches])) == sorted(data["reward"])


def test_field_mismatch_messages(tmp_path):
    store = EpisodeStore(tmp_path)
    w = store.begin("pick", 1, policy_version=0)
    w.append(_step(0))
    bad = _step(1)
    bad["action"] = np.zeros(4, np.float32)
    with pytest.raises(ValueError,
                       match=r"'action' has shape \(4,\).*first step's has shape \(3,\)"):
        w.append(bad)
    bad = _step(1)
    bad["obs_features"] = bad["obs_features"].astype(np.float64)
    with pytest.raises(ValueError, match=r"'obs_features' has dtype float64.*float32"):
        w.append(bad)
    bad = _step(1)
    del bad["value"]
    bad["extra_thing"] = 1.0
    with pytest.raises(ValueError, match=r"missing \['value'\], unexpected \['extra_thing'\]"):
        w.append(bad)
    with pytest.raises(ValueError, match="unsupported dtype"):
        w.append({**_step(1), "log_prob": "abc"})
    w.append(_step(1))  # a good step still goes in after rejections
    assert w.steps == 2
    w.finish(success=False)
    assert store.load(store.complete_episodes()[0])["reward"].shape == (2,)
    with pytest.raises(RuntimeError, match="closed"):
        w.append(_step(2))


@pytest.mark.parametrize("field,value", [
    ("reward", float("nan")), ("reward", float("inf")),
    ("action", np.array([0.0, np.nan, 1.0], np.float32))])
def test_non_finite_rejected_and_not_written(tmp_path, field, value):
    store = EpisodeStore(tmp_path, chunk_size=1)
    w = store.begin("pick", 2, policy_version=0)
    w.append(_step(0))
    with pytest.raises(ValueError, match=rf"field '{field}' contains non-finite.*nothing written"):
        w.append({**_step(1), field: value})
    # a NaN in the very first step is rejected too (before the field spec is fixed)
    w2 = store.begin("pick", 3, policy_version=0)
    with pytest.raises(ValueError, match="non-finite"):
        w2.append({**_step(0), field: value})
    w2.abort("test")
    w.finish(success=True)
    data = store.load(w.path)
    assert data["meta"]["steps"] == 1 and np.all(np.isfinite(data["reward"]))
    assert len(list(w.path.glob("chunk_*.npz"))) == 1


_KILL_SCRIPT = r"""
import sys, time
import numpy as np
from lrm_ros.learn.episode_store import EpisodeStore
store = EpisodeStore(sys.argv[1], chunk_size=16)
w = store.begin("kill-env", 42, policy_version=3, meta={"who": "child"})
for t in range(100):
    w.append({"obs_features": np.full(4, t, np.float32), "action": np.array([t, -t], np.float64),
              "reward": float(t), "reward_stale": False, "done": False})
print(w.path, flush=True)
time.sleep(120)
"""

_KILL_LOOP = r"""
import sys
import numpy as np
from lrm_ros.learn.episode_store import EpisodeStore
store = EpisodeStore(sys.argv[1], chunk_size=8)
w = store.begin("loop", 1, policy_version=0)
t = 0
while True:
    w.append({"x": np.full(64, t, np.int64), "reward": float(t)})
    t += 1
"""


def _child(script, root):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", script, str(root)], env=env, cwd="/",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_episode_recovers_flushed_steps(tmp_path):
    store = EpisodeStore(tmp_path)
    done_path, _ = _write(store, env="other", episode=9, n=20)
    done_meta = (done_path / "meta.json").read_bytes()
    proc = _child(_KILL_SCRIPT, tmp_path)
    try:
        line = proc.stdout.readline().strip()
        assert line, proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ep = Path(line)
    assert not (ep / "meta.json").exists() and store.pending_episodes() == [ep]

    report = store.recover()
    assert report.recovered == [ep] and report.steps == {ep.name: 96}  # 6 chunks of 16
    assert report.corrupt_chunks == []
    inc = store.incomplete_episodes()
    assert [i.path for i in inc] == [ep] and inc[0].recovered and not inc[0].complete
    assert inc[0].env == "kill-env" and inc[0].episode == 42 and inc[0].steps == 96
    data = store.load(ep)
    meta = data["meta"]
    assert meta["recovered"] is True and meta["complete"] is False and meta["steps"] == 96
    assert meta["policy_version"] == 3 and meta["meta"] == {"who": "child"}
    np.testing.assert_array_equal(data["reward"], np.arange(96, dtype=np.float64))
    np.testing.assert_array_equal(data["action"][:, 1], -np.arange(96, dtype=np.float64))
    assert meta["return"] == float(sum(range(96)))
    # the complete episode is untouched and still the only complete one
    assert [e.path for e in store.complete_episodes()] == [done_path]
    assert (done_path / "meta.json").read_bytes() == done_meta
    # recover is idempotent
    again = store.recover()
    assert again.recovered == [] and again.corrupt_chunks == []


def test_sigkill_at_random_moment_leaves_a_consistent_prefix(tmp_path):
    proc = _child(_KILL_LOOP, tmp_path)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if len(list(tmp_path.glob("ep_*/chunk_*.npz"))) >= 3:
                break
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = EpisodeStore(tmp_path)
    report = store.recover()
    assert len(report.recovered) == 1 and report.corrupt_chunks == []
    steps = report.total_steps
    assert steps >= 24 and steps % 8 == 0
    data = store.load(report.recovered[0])
    np.testing.assert_array_equal(data["x"][:, 0], np.arange(steps))
    assert list(report.recovered[0].glob(".tmp-*")) == []


def test_corrupt_chunk_moved_aside_and_tmp_removed(tmp_path):
    store = EpisodeStore(tmp_path, chunk_size=10)
    w = store.begin("pick", 5, policy_version=1)
    for t in range(35):
        w.append(_step(t))
    ep = w.path
    store._release(ep)  # simulate the writing process having died
    chunks = sorted(ep.glob("chunk_*.npz"))
    assert len(chunks) == 3
    raw = chunks[2].read_bytes()
    chunks[2].write_bytes(raw[: len(raw) // 2])           # truncated by a crash / bad disk
    tmp = ep / ".tmp-chunk_000003.npz.999.deadbeef"
    tmp.write_bytes(b"partial")                           # left by a killed write
    stray_dir = tmp_path / ".tmp-ep_pick_6_abcdef12"      # a half-built episode directory
    stray_dir.mkdir()

    report = store.recover()
    assert report.steps == {ep.name: 20}
    assert report.corrupt_chunks == [ep / "chunk_000002.npz.corrupt"]
    assert (ep / "chunk_000002.npz.corrupt").read_bytes() == raw[: len(raw) // 2]  # kept
    assert not tmp.exists() and not stray_dir.exists()
    assert set(report.removed_tmp) == {tmp, stray_dir}
    data = store.load(ep)
    assert data["meta"]["steps"] == 20 and data["meta"]["recovery"]["corrupt_chunks"] == [
        "chunk_000002.npz.corrupt"]
    np.testing.assert_array_equal(data["reward"], np.arange(20) * 0.5)
    assert store.complete_episodes() == []


def test_gap_after_corrupt_chunk_detaches_later_chunks(tmp_path):
    store = EpisodeStore(tmp_path, chunk_size=4)
    w = store.begin("pick", 1, policy_version=0)
    for t in range(12):
        w.append(_step(t))
    store._release(w.path)
    (w.path / "chunk_000001.npz").write_bytes(b"not a zip")
    report = store.recover()
    assert report.steps == {w.path.name: 4}
    assert report.detached_chunks == [w.path / "chunk_000002.npz.detached"]


def test_active_writer_is_not_recovered(tmp_path):
    store = EpisodeStore(tmp_path, chunk_size=4)
    w = store.begin("pick", 1, policy_version=0)
    for t in range(6):
        w.append(_step(t))
    report = store.recover()
    assert report.skipped_active == [w.path] and report.recovered == []
    w.finish(success=True)
    assert store.load(w.path)["meta"]["steps"] == 6


def test_abort_is_listed_incomplete(tmp_path):
    store = EpisodeStore(tmp_path, chunk_size=64)
    w = store.begin("pick", 1, policy_version=0)
    for t in range(5):
        w.append(_step(t))
    w.abort("reset timeout")
    [inc] = store.incomplete_episodes()
    assert inc.steps == 5 and inc.meta["abort_reason"] == "reset timeout"
    assert store.complete_episodes() == []


def test_prune_keeps_newest_and_disk_usage(tmp_path):
    store = EpisodeStore(tmp_path, chunk_size=16)
    paths = [_write(store, episode=i, n=10)[0] for i in range(5)]
    pending = store.begin("pick", 99, policy_version=0)
    pending.append(_step(0))
    pending.flush()
    usage = store.disk_usage()
    assert usage["episodes"] == 6 and usage["complete"] > 0 and usage["pending"] > 0
    assert usage["total"] == usage["complete"] + usage["incomplete"] + usage["pending"]
    removed = store.prune(keep_last=2)
    assert removed == paths[:3]
    assert [e.path for e in store.complete_episodes()] == paths[3:]
    assert [e.episode for e in store.complete_episodes()] == [3, 4]
    assert pending.path.exists()                      # never prunes an open episode
    assert store.disk_usage()["total"] < usage["total"]
    pending.finish(success=False)
    assert [e.episode for e in store.complete_episodes()] == [3, 4, 99]
    assert json.loads((paths[4] / "meta.json").read_text())["steps"] == 10
