"""The reward engine: batching, timeouts, errors, drops, counters. The backends here are
tiny stand-ins defined in this file (the engine's collaborators); the real backends have
their own tests."""
import threading

import numpy as np
import pytest

from lrm_ros.rewards.base import RewardBackend, RewardQuery, RewardResult
from lrm_ros.rewards.engine import EngineConfig, RewardEngine


class EchoBackend(RewardBackend):
    """value = tick / 100; records batch sizes; can be blocked or made to raise.
    `entered` is set once the worker is inside score_batch (then held by `gate`, if cleared)."""
    name = "echo"

    def __init__(self, fail_on=(), invalid_on=()):
        self.fail_on = set(fail_on)
        self.invalid_on = set(invalid_on)
        self.batches = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def score_batch(self, queries):
        self.entered.set()
        self.gate.wait()
        self.batches.append([q.tick for q in queries])
        if any(q.tick in self.fail_on for q in queries):
            raise RuntimeError("model exploded")
        return [RewardResult.invalid_result("garbage") if q.tick in self.invalid_on
                else RewardResult(value=q.tick / 100) for q in queries]


def query(tick, env="env0"):
    return RewardQuery(env=env, episode=0, tick=tick, instruction="x",
                       frame=np.zeros((2, 2, 3), np.uint8))


class Collector:
    def __init__(self):
        self.outcomes = {}
        self.cond = threading.Condition()

    def __call__(self, q, result, status, info):
        with self.cond:
            self.outcomes[(q.env, q.tick)] = (status, result, info)
            self.cond.notify_all()

    def wait(self, n, timeout=10.0):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.outcomes) >= n, timeout), self.outcomes
        return self.outcomes


def test_config_validation():
    with pytest.raises(ValueError, match="max_batch"):
        EngineConfig(max_batch=0)
    with pytest.raises(ValueError, match="timeout_s"):
        EngineConfig(timeout_s=0)


def test_queries_from_many_envs_are_batched_and_all_answered():
    backend = EchoBackend()
    backend.gate.clear()                             # hold the worker until all are queued
    got = Collector()
    engine = RewardEngine(backend, EngineConfig(max_batch=4, max_wait_s=0.2), got)
    try:
        for i in range(12):
            engine.submit(query(10 + i, env=f"env{i}"))
        backend.gate.set()
        out = got.wait(12)
        assert all(s == "ok" for s, _, _ in out.values())
        assert out[("env5", 15)][1].value == pytest.approx(0.15)
        assert max(len(b) for b in backend.batches) == 4 and sum(map(len, backend.batches)) == 12
        stats = engine.stats()
        assert stats["submitted"] == 12 and stats["ok"] == 12 and stats["batch_mean"] > 1
    finally:
        engine.close()


def test_submit_never_blocks_on_a_stuck_backend_and_timeouts_are_reported():
    backend = EchoBackend()
    backend.gate.clear()                             # the backend hangs
    got = Collector()
    engine = RewardEngine(backend, EngineConfig(max_batch=2, timeout_s=0.3, max_wait_s=0.0), got)
    try:
        engine.submit(query(0))
        assert backend.entered.wait(10)              # the worker is stuck in the backend
        for t in range(1, 5):
            engine.submit(query(t))                  # returns although the backend is stuck
        out = got.wait(5)
        assert {s for s, _, _ in out.values()} == {"timeout"}
    finally:
        backend.gate.set()                           # the stuck batch's result comes late
        engine.close()                               # joins the worker: the count is final
    stats = engine.stats()
    assert (stats["late"], stats["timeout"], stats["ok"]) == (1, 5, 0)
    assert backend.batches == [[0]]                  # the queued ones timed out unscored


def test_a_backend_that_raises_is_counted_and_the_engine_keeps_serving():
    backend = EchoBackend(fail_on={1})
    got = Collector()
    engine = RewardEngine(backend, EngineConfig(max_batch=1, max_wait_s=0.0), got)
    try:
        engine.submit(query(1))
        got.wait(1)
        engine.submit(query(2))
        out = got.wait(2)
        assert out[("env0", 1)][0] == "error" and out[("env0", 2)][0] == "ok"
        assert engine.stats()["error"] == 1 and "model exploded" in engine.last_error
    finally:
        engine.close()


def test_a_callback_that_raises_is_counted_with_its_reason_and_the_engine_keeps_serving():
    got = Collector()

    def callback(q, result, status, info):
        got(q, result, status, info)
        if q.tick == 1:
            raise KeyError("the node's table has no env0")
    engine = RewardEngine(EchoBackend(), EngineConfig(max_batch=1, max_wait_s=0.0), callback)
    try:
        engine.submit(query(1))
        got.wait(1)
        engine.submit(query(2))
        assert got.wait(2)[("env0", 2)][0] == "ok"
    finally:
        engine.close()                               # joins the worker: the counts are final
    assert engine.stats()["callback_errors"] == 1
    assert engine.last_callback_error == "KeyError: \"the node's table has no env0\""


def test_invalid_results_are_delivered_and_counted():
    got = Collector()
    engine = RewardEngine(EchoBackend(invalid_on={3}), EngineConfig(max_wait_s=0.0), got)
    try:
        engine.submit(query(3))
        status, result, _ = got.wait(1)[("env0", 3)]
        assert status == "ok" and not result.valid and result.invalid == ("garbage",)
        assert engine.stats()["invalid"] == 1
    finally:
        engine.close()


def test_a_full_queue_drops_the_oldest():
    backend = EchoBackend()
    backend.gate.clear()
    got = Collector()
    engine = RewardEngine(backend, EngineConfig(max_batch=1, queue_size=2, max_wait_s=0.0,
                                                timeout_s=30), got)
    try:
        engine.submit(query(0))                      # taken by the worker, stuck in the backend
        assert backend.entered.wait(10)
        for t in (1, 2, 3):
            engine.submit(query(t))
        out = got.wait(1)
        assert out[("env0", 1)][0] == "dropped"
        backend.gate.set()
        out = got.wait(4)
        assert [out[("env0", t)][0] for t in (0, 2, 3)] == ["ok"] * 3
        assert engine.stats()["dropped"] == 1
    finally:
        backend.gate.set()
        engine.close()


def test_close_reports_waiting_queries_as_dropped():
    backend = EchoBackend()
    backend.gate.clear()
    got = Collector()
    engine = RewardEngine(backend, EngineConfig(max_batch=1, max_wait_s=0.0, timeout_s=30), got)
    engine.submit(query(0))
    assert backend.entered.wait(10)                  # query 0 is in the backend, 1 will wait
    engine.submit(query(1))
    closing = threading.Thread(target=engine.close)
    closing.start()                                  # close() reports the waiting query at once,
    got.wait(1)                                      # then waits for the stuck one
    assert list(got.outcomes) == [("env0", 1)] and got.outcomes[("env0", 1)][:2] == ("dropped", None)
    backend.gate.set()
    closing.join(10)
    assert not closing.is_alive()
    assert {k: v[0] for k, v in got.outcomes.items()} == {("env0", 0): "ok", ("env0", 1): "dropped"}
    assert backend.batches == [[0]]


class EndRecordingBackend(EchoBackend):
    """Records, in the order the worker does them, the batches it scores and the episodes it
    is told are over."""

    def __init__(self):
        super().__init__()
        self.events = []

    def score_batch(self, queries):
        out = super().score_batch(queries)
        self.events.append(("score", tuple((q.episode, q.tick) for q in queries)))
        return out

    def end_episode(self, env, episode):
        self.events.append(("end", env, episode))


def test_an_ended_episode_is_released_after_its_last_query_is_answered():
    backend = EndRecordingBackend()
    backend.gate.clear()                             # the worker is busy: queries queue up
    got = Collector()
    engine = RewardEngine(backend, EngineConfig(max_batch=1, max_wait_s=0.0), got)
    try:
        ep0 = [RewardQuery(env="env0", episode=0, tick=t, instruction="x",
                           frame=np.zeros((2, 2, 3), np.uint8)) for t in (10, 20)]
        for q in ep0:
            engine.submit(q)
        engine.end_episode("env0", 0)                # the terminal query is still queued
        engine.submit(RewardQuery(env="env0", episode=1, tick=30, instruction="x",
                                  frame=np.zeros((2, 2, 3), np.uint8)))
        assert engine.stats()["episode_ends_pending"] == 1
        backend.gate.set()
        got.wait(3)
        with got.cond:
            assert got.cond.wait_for(lambda: engine.stats()["episodes_ended"] == 1, 10)
        ends = [i for i, e in enumerate(backend.events) if e[0] == "end"]
        last_ep0 = max(i for i, e in enumerate(backend.events) if e[0] == "score" and e[1][0][0] == 0)
        assert ends and len(ends) == 1 and ends[0] > last_ep0
        assert backend.events[ends[0]] == ("end", "env0", 0)
        assert engine.stats()["episode_ends_pending"] == 0
    finally:
        engine.close()


class PerQueryFailureBackend(RewardBackend):
    """Reports that it could not score some queries (as an inference-server backend does)."""
    name = "per_query"

    def score_batch(self, queries):
        out = []
        for q in queries:
            if q.tick == 1:
                out.append(RewardResult(value=float("nan"), valid=False, status="error",
                                        invalid=("HTTP 503 from server",)))
            elif q.tick == 2:
                out.append(RewardResult(value=float("nan"), valid=False, status="timeout",
                                        invalid=("no answer within 1 s",)))
            else:
                out.append(RewardResult(value=0.5))
        return out


def test_a_backend_can_fail_single_queries_with_error_or_timeout_and_a_reason():
    got = Collector()
    engine = RewardEngine(PerQueryFailureBackend(), EngineConfig(max_batch=8, max_wait_s=0.05), got)
    for t in (1, 2, 3):
        engine.submit(query(t))
    out = got.wait(3)
    engine.close()
    assert out[("env0", 1)][0] == "error" and out[("env0", 1)][1].invalid == ("HTTP 503 from server",)
    assert out[("env0", 2)][0] == "timeout"
    assert out[("env0", 3)][0] == "ok" and out[("env0", 3)][1].value == 0.5
    st = engine.stats()
    assert (st["ok"], st["error"], st["timeout"], st["invalid"]) == (1, 1, 1, 0)
    assert engine.last_error == "no answer within 1 s"       # the queue is FIFO: tick 2 came last
