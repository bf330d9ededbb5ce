"""The `vllm` reward backend against a REAL vLLM server (the CPU build, set up by
scripts/setup_vllm.sh, which `make test` runs): one server for the whole session
(`vllm_server` in conftest.py) on a random-weight Qwen3-VL (head_dim 32) with three random
LoRA adapters served as LoRA modules.

- LRM signals: the server's answers are the in-process `vlm` backend's, token for token
  (greedy, float32, the same weights), for the base model and with one LoRA module per
  signal (the in-process backend holding the same three adapters in peft).
- TOPReward: log P(" True") through the server equals the in-process `topreward` backend's
  (frames as one video, open user turn) for odd and even frame counts, and with frames as
  images (closed turn); the server's prefix cache reuses earlier frames as images, while a
  grown video (one multimodal item, hashed whole) only hits on an identical repeat.
- Faults: closed port, unknown model, a paused (SIGSTOP) server, HTTP 5xx and malformed JSON
  (a tiny local HTTP server: the only way to make a server answer so), and the server
  stopped: each query gets an error/timeout result with the reason, never a hang.
- One graph: the reward node scores a 2-env ManiSkill run through the server.
"""
import dataclasses
import http.server
import json
import math
import os
import signal
import threading

import numpy as np
import pytest

from lrm_ros.rewards import RewardQuery, make_backend
from lrm_ros.rewards.engine import ERROR, TIMEOUT, EngineConfig, RewardEngine
from lrm_ros.rewards.server import ServerUnavailableError

INSTR = "pick up the red cube"


@pytest.fixture(scope="module")
def local(vllm_server):
    """The same weights in-process (float32)."""
    from lrm_ros.rewards.qwen import load_qwen_vl
    return load_qwen_vl(str(vllm_server.model_dir), dtype="float32")


def _frames(n, seed=0, size=64):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def _lrm_queries(frames, env="env0", episode=1):
    """Three queries of one episode: the first has no previous frame (contrastive not asked)."""
    out = []
    for i in range(3):
        out.append(RewardQuery(env, episode, 10 * i, INSTR, frames[i],
                               previous_frame=frames[i - 1] if i else None,
                               previous_tick=10 * (i - 1) if i else -1, first_frame=frames[0]))
    return out


def _server(vllm_server, **kw):
    kw.setdefault("server_url", vllm_server.url)
    kw.setdefault("model", vllm_server.model)
    return make_backend("vllm", **kw)


def test_lrm_signals_are_the_in_process_answers(vllm_server, local):
    model, proc = local
    frames = _frames(4, seed=1)
    queries = _lrm_queries(frames) + _lrm_queries(frames[1:], env="env1")
    srv = _server(vllm_server, signal="tri", max_in_flight=8)
    ref = make_backend("vlm", model_path=str(vllm_server.model_dir), model=model, processor=proc,
                       signal="tri")
    got, want = srv.score_batch(queries), ref.score_batch(queries)
    for g, w in zip(got, want):
        assert g.status == ""
        assert g.raw["answers"] == w.raw["answers"]
        assert set(g.raw["answers"]) == set(w.raw["answers"])
        assert g.valid == w.valid and g.invalid == w.invalid
        assert (math.isnan(g.value) and math.isnan(w.value)) or g.value == w.value
    # the first query of an episode asks no contrastive; the others ask all three
    assert set(got[0].raw["answers"]) == {"progress", "completion"}
    assert set(got[1].raw["answers"]) == {"progress", "completion", "contrastive"}
    # each distinct frame was encoded once for the whole batch (4 frames, 6 queries, 16 prompts)
    assert srv.stats["frames_encoded"] == 4
    for sig in ("progress", "completion", "contrastive"):   # one signal alone
        one = _server(vllm_server, signal=sig).score_batch(queries[1:2])[0]
        assert one.raw["answers"] == {sig: got[1].raw["answers"][sig]}


def test_each_signal_names_its_lora_module(vllm_server, local):
    """vLLM serving the three adapters as LoRA modules gives what peft gives in-process
    with the same adapters switched per signal."""
    from lrm_ros.rewards.qwen import load_qwen_vl
    frames = _frames(3, seed=2)
    queries = _lrm_queries(frames)
    names = {f"adapter_{s}": s for s in vllm_server.adapters}
    srv = _server(vllm_server, signal="tri", prompts="lrm_ros", **names)
    base = _server(vllm_server, signal="tri", prompts="lrm_ros")
    model, proc = load_qwen_vl(str(vllm_server.model_dir), dtype="float32")  # peft wraps it
    ref = make_backend("vlm", model_path=str(vllm_server.model_dir), model=model, processor=proc,
                       signal="tri", prompts="lrm_ros",
                       **{f"adapter_{s}": str(d) for s, d in vllm_server.adapters.items()})
    got, want, plain = srv.score_batch(queries), ref.score_batch(queries), base.score_batch(queries)
    assert "+progress=progress" in srv.model_id
    for g, w, p in zip(got, want, plain):
        assert g.raw["answers"] == w.raw["answers"]
        assert g.raw["answers"] != p.raw["answers"]      # the adapters change the answers
    # a module the server does not serve: configure fails naming it
    with pytest.raises(ServerUnavailableError, match="nonexistent"):
        _server(vllm_server, signal="tri", adapter_progress="nonexistent")


def test_topreward_log_p_true_equals_the_in_process_backend(vllm_server, local):
    model, proc = local
    frames = _frames(6, seed=3, size=224)     # 49 tokens per pair: the prefix fills cache blocks
    srv = _server(vllm_server, signal="topreward")
    assert srv.answer_id == 3007                          # " True" (with its space)
    ref = make_backend("topreward", model_path=str(vllm_server.model_dir), model=model,
                       processor=proc)
    before = srv.metrics()["vllm:prefix_cache_hits_total"]
    for n in (1, 2, 3, 5, 6):                             # odd counts: a padded last pair
        q = RewardQuery("env0", 1, 10 * n, INSTR, frames[n - 1], frames=tuple(frames[:n]))
        (g,), (w,) = srv.score_batch([q]), ref.score_batch([q])
        assert g.status == "" and g.valid, g.invalid
        assert abs(g.raw["log_p_true"] - w.raw["log_p_true"]) < 2e-3, (n, g.raw, w.raw)
        assert abs(g.value - w.value) < 1e-3
    lp = [srv.score_batch([RewardQuery("env0", 2, 1, INSTR, f, frames=(f,))])[0].raw["log_p_true"]
          for f in frames[:3]]
    assert len(set(round(x, 4) for x in lp)) == 3         # it depends on the frames
    # each query's frames were encoded once: the episode's earlier frames are reused
    assert srv.stats["frames_encoded"] == 6 + 3
    # the video is ONE multimodal item, hashed whole: a grown video shares no cached block
    # with the previous query beyond the text before it; the same query again hits the cache
    mid = srv.metrics()["vllm:prefix_cache_hits_total"]
    q = RewardQuery("env0", 1, 60, INSTR, frames[5], frames=tuple(frames))
    assert srv.score_batch([q])[0].raw["log_p_true"] == g.raw["log_p_true"]
    assert srv.metrics()["vllm:prefix_cache_hits_total"] > mid
    print("prefix cache hits: growing video episode", mid - before)


def test_topreward_with_frames_as_images_equals_in_process_and_reuses_the_prefix(vllm_server, local):
    """lrm_ros's TOPReward variant (one image per frame, closed turn, "True"): equal to the
    in-process backend; each frame is its own multimodal item, so the growing episode's
    earlier frames are cached blocks on the server."""
    model, proc = local
    frames = _frames(5, seed=6, size=224)
    srv = _server(vllm_server, signal="topreward", prompts="lrm_ros")
    ref = make_backend("topreward", model_path=str(vllm_server.model_dir), model=model,
                       processor=proc, prompts="lrm_ros")
    assert srv.answer_id == ref.answer_id
    before = srv.metrics()["vllm:prefix_cache_hits_total"]
    for n in range(1, 6):
        q = RewardQuery("env0", 1, 10 * n, INSTR, frames[n - 1], frames=tuple(frames[:n]))
        (g,), (w,) = srv.score_batch([q]), ref.score_batch([q])
        assert g.status == "" and g.valid, g.invalid
        assert abs(g.raw["log_p_true"] - w.raw["log_p_true"]) < 2e-3, (n, g.raw, w.raw)
    assert srv.metrics()["vllm:prefix_cache_hits_total"] > before


def test_configure_fails_on_a_closed_port_or_an_unknown_model(vllm_server):
    from vllm_server import closed_port
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(ServerUnavailableError) as exc:
        make_backend("vllm", server_url=url, model=vllm_server.model, retries=1,
                     retry_backoff_s=0.01, timeout_s=2.0)
    assert url in str(exc.value) and vllm_server.model in str(exc.value)
    with pytest.raises(ServerUnavailableError) as exc:
        _server(vllm_server, model="no-such-model")
    assert "no-such-model" in str(exc.value) and vllm_server.url in str(exc.value)
    # and the configuration can simply be tried again once it is right
    assert _server(vllm_server, signal="progress").model_id.startswith("vllm:")


def test_faults_give_error_and_timeout_results_with_the_reason(vllm_server):
    from vllm_server import closed_port
    queries = _lrm_queries(_frames(3, seed=4))
    # server down (nothing listens): error after the retries, fast
    down = make_backend("vllm", server_url=f"http://127.0.0.1:{closed_port()}/v1",
                        model="m", check_on_start=False, retries=2, retry_backoff_s=0.01,
                        signal="tri")
    res = down.score_batch(queries)
    assert all(r.status == ERROR and not r.valid and "unreachable" in r.invalid[0] for r in res)
    # every request was tried 3 times (2 retries with backoff), then given up: no more, no fewer
    assert down.stats["retries"] > 0 and 2 * down.stats["requests"] == 3 * down.stats["retries"]
    # wrong model name at run time: the server's 404, not retried
    wrong = _server(vllm_server, model="no-such-model", check_on_start=False, signal="progress")
    (r,) = wrong.score_batch(queries[:1])
    assert r.status == ERROR and "HTTP 404" in r.invalid[0] and "no-such-model" in r.invalid[0]
    assert wrong.stats["retries"] == 0
    # a request the server refuses (4xx): an unserved LoRA module named at run time
    bad = _server(vllm_server, signal="completion", adapter_completion="nope", check_on_start=False)
    (r,) = bad.score_batch(queries[:1])
    assert r.status == ERROR and "HTTP 4" in r.invalid[0]


def test_a_paused_server_gives_timeouts_and_the_engine_never_blocks(vllm_server):
    """SIGSTOP the API server: connections are accepted but never answered."""
    srv = _server(vllm_server, signal="progress", timeout_s=1.0)
    seen = []
    done = threading.Event()

    def cb(query, result, status, info):
        seen.append((query.tick, status, result))
        if len(seen) == 3:
            done.set()

    engine = RewardEngine(srv, EngineConfig(max_batch=4, max_wait_s=0.01, timeout_s=3.0), cb)
    os.kill(vllm_server.proc.pid, signal.SIGSTOP)
    try:
        for q in _lrm_queries(_frames(3, seed=5)):
            engine.submit(q)
        assert seen == []          # submit returned before any answer: it never waits on the server
        assert done.wait(10.0)
    finally:
        os.kill(vllm_server.proc.pid, signal.SIGCONT)
        engine.close()
    assert [s for _, s, _ in seen] == [TIMEOUT] * 3
    assert all(r is not None and "within 1 s" in r.invalid[0] for _, _, r in seen)
    assert "within 1 s" in engine.last_error
    # and the server serves again once resumed
    (r,) = srv.score_batch(_lrm_queries(_frames(3, seed=5))[:1])
    assert r.status == "" and "progress" in r.raw["answers"]


class _FaultyServer(http.server.ThreadingHTTPServer):
    """A local HTTP server answering every request with one canned fault (vLLM cannot be made
    to answer HTTP 500 or malformed JSON on demand)."""

    def __init__(self, status, body):
        self.status, self.body, self.hits = status, body, 0
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                outer.hits += 1
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            do_GET = do_POST = _answer

            def log_message(self, *a):
                pass

        super().__init__(("127.0.0.1", 0), H)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@pytest.mark.parametrize("status,body,want", [
    (500, b'{"error": {"message": "engine died"}}', "HTTP 500"),
    (200, b"{not json", "malformed JSON"),
    (200, b'{"choices": []}', "malformed response"),
])
def test_server_faults_5xx_and_malformed_json(status, body, want):
    fake = _FaultyServer(status, body)
    try:
        b = make_backend("vllm", server_url=fake.url, model="m", check_on_start=False,
                         retries=2, retry_backoff_s=0.01, signal="progress")
        (r,) = b.score_batch(_lrm_queries(_frames(3))[:1])
        assert r.status == ERROR and not r.valid and want in r.invalid[0], r.invalid
        assert fake.hits == (3 if status >= 500 else 1)   # 5xx retried, the rest not
        if status == 500:
            assert "engine died" in r.invalid[0]
            with pytest.raises(ServerUnavailableError, match=fake.url):
                make_backend("vllm", server_url=fake.url, model="m", retries=0)
    finally:
        fake.shutdown()
        fake.server_close()


def test_api_key_is_sent_and_never_shown(monkeypatch):
    seen = []
    fake = _FaultyServer(200, b'{"data": [{"id": "m"}]}')
    orig = fake.RequestHandlerClass._answer

    def spy(h):
        seen.append(h.headers.get("Authorization"))
        orig(h)
    fake.RequestHandlerClass.do_GET = fake.RequestHandlerClass.do_POST = spy
    monkeypatch.setenv("MY_REWARD_KEY", "sk-secret-123")
    try:
        b = make_backend("vllm", server_url=fake.url, model="m", api_key_env="MY_REWARD_KEY",
                         signal="progress")
        (r,) = b.score_batch(_lrm_queries(_frames(3))[:1])   # {"data": ...}: malformed answer
    finally:
        fake.shutdown()
        fake.server_close()
    assert seen and all(s == "Bearer sk-secret-123" for s in seen)
    shown = b.model_id + repr(r) + json.dumps(r.raw) + repr(b.config)
    assert "sk-secret-123" not in shown


def test_reward_node_scores_a_two_env_sim_through_the_server(vllm_server, tmp_path_factory,
                                                             graph_domain):
    """The reward node (reward:=vllm, tri) in the simulated graph with 2 envs: every query is
    answered OK through the server, ticks go on."""
    from lrm_ros.bringup.graph import load_graph, resolve
    from lrm_ros.bringup.session import running_graph
    from lrm_ros.msg import RewardQueryResult
    from lrm_ros.ros.monitor import GraphMonitor
    envs = ("env0", "env1")
    domain, env = graph_domain
    specs = resolve(load_graph("sim"), {
        "num_envs": "2", "policy": "none", "reward": "vllm", "reward_signal": "tri",
        "reward_server_url": vllm_server.url, "reward_model_name": vllm_server.model,
        "reward_interval": "3", "max_episode_ticks": "8", "image_size": "64"})
    specs = [dataclasses.replace(s, parameters={**s.parameters, "camera_width": 64,
                                                "camera_height": 64, "command_timeout_s": 30.0})
             if s.executable == "maniskill_bridge" else s for s in specs]
    (reward,) = [s for s in specs if s.executable == "reward_model"]
    assert reward.parameters["backend"] == "vllm"
    assert reward.parameters["server_url"] == vllm_server.url
    # this checks that queries are scored through the server, not how fast: on 2 shared cores
    # (the graph, the server and other work) a query took up to 10 s, the default timeout
    reward = dataclasses.replace(reward, parameters={**reward.parameters, "timeout_s": 120.0,
                                                     "request_timeout_s": 100.0})
    specs = [s for s in specs if s.executable != "reward_model"] + [reward]

    def answer(ns, tick):
        if not tick.episode_end:
            monitor.send_command(ns, [0.0] * 7)

    monitor = GraphMonitor(list(envs), on_tick=answer)
    with running_graph(specs, env=env, log=tmp_path_factory.mktemp("graph_vllm") / "nodes.log",
                       monitor=monitor) as g:
        g.wait_up(lambda mon: all(mon.subscribers(f"/{e}/control/tick") >= 1
                                  and mon.subscribers(f"/{e}/camera/frame") >= 1
                                  and mon.subscribers(f"/{e}/camera/image_raw") >= 1
                                  for e in envs), 180.0, "the reward node does not listen")
        for e in envs:
            monitor.reset(e)
        # the sim runs free (the monitor answers every tick at once), so when the server is
        # slower than the ticks the engine drops the oldest waiting queries (its documented
        # back-pressure, reported as STATUS_DROPPED): what this test checks is that queries
        # which reach the server are scored, never an error or a timeout
        answered = (RewardQueryResult.STATUS_OK, RewardQueryResult.STATUS_INVALID)
        g.wait_up(lambda mon: all(
            len([r for r in mon.records[e].results if r.episode >= 1 and r.status in answered]) >= 3
            for e in envs), 180.0,
            lambda: f"fewer than 3 answered queries per env: { {e: monitor.records[e].results for e in envs} }")
        for e in envs:
            res = [r for r in monitor.records[e].results if r.episode >= 1]
            # scored through the server: OK or INVALID (random weights answer gibberish), or
            # dropped while waiting; never an error or a timeout
            assert {r.status for r in res} <= {*answered, RewardQueryResult.STATUS_DROPPED}, res
            assert all(r.batch_size >= 1 for r in res if r.status in answered), res
            held = [h for h in monitor.records[e].held if h.episode >= 1]
            assert len(held) >= 8
        assert not g.runner.dead()


class _Relay:
    """A TCP relay from a local port to the vLLM server: 'the server comes up' on that port."""

    def __init__(self, port, target_port):
        import socket
        self.sock = socket.create_server(("127.0.0.1", port))
        self.target = target_port
        self.alive = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        while self.alive:
            try:
                a, _ = self.sock.accept()
            except OSError:
                return
            b = socket.create_connection(("127.0.0.1", self.target))
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(2)
                except OSError:
                    pass

    def close(self):
        self.alive = False
        self.sock.close()


def test_reward_node_configure_fails_naming_the_server_then_configures_once_it_is_up(
        vllm_server, graph_domain):
    """The lifecycle reward node (autostart false): configure against a server that is not
    up fails with the URL and model in the reason and leaves the node unconfigured; once the
    server answers on that URL, configure again succeeds."""
    import rclpy
    from rclpy.parameter import Parameter
    from vllm_server import free_port
    from lrm_ros.nodes.reward_model import RewardModelNode
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=graph_domain[0])
    relay = node = None
    try:
        node = RewardModelNode(context=ctx, parameter_overrides=[
            Parameter("autostart", value=False), Parameter("backend", value="vllm"),
            Parameter("server_url", value=url), Parameter("model_name", value=vllm_server.model),
            Parameter("signal", value="tri"), Parameter("envs", value=["env0"]),
            Parameter("retries", value=0)])
        node.trigger_configure()
        assert not node.configured and node.lifecycle_state == "unconfigured"
        assert url in node._configure_error and vllm_server.model in node._configure_error
        relay = _Relay(port, vllm_server.port)
        node.trigger_configure()
        assert node.configured, node._configure_error
        assert node.model_id.startswith(f"vllm:{url}:{vllm_server.model}")
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        if relay is not None:
            relay.close()
        rclpy.shutdown(context=ctx)


def test_server_stopped_gives_errors_and_configure_fails(vllm_server):
    """Last: stops the session's server."""
    srv = _server(vllm_server, signal="progress", retries=1, retry_backoff_s=0.01, timeout_s=3.0)
    vllm_server.stop()
    assert not vllm_server.alive()
    (r,) = srv.score_batch(_lrm_queries(_frames(3))[:1])
    assert r.status == ERROR and "unreachable" in r.invalid[0] and vllm_server.url in r.invalid[0]
    with pytest.raises(ServerUnavailableError, match="server_url"):
        _server(vllm_server, signal="progress", retries=0)


def test_node_config_for_the_vllm_backend():
    from lrm_ros.rewards.config import RewardNodeConfig
    with pytest.raises(ValueError, match="server_url"):
        RewardNodeConfig(backend="vllm", model_name="m")
    with pytest.raises(ValueError, match="model_name"):
        RewardNodeConfig(backend="vllm", server_url="http://gpu-box:8000/v1")
    with pytest.raises(ValueError, match="request_timeout_s"):
        RewardNodeConfig(backend="vllm", server_url="http://h:1/v1", model_name="m",
                         request_timeout_s=20.0, timeout_s=10.0)
    with pytest.raises(ValueError, match="signal"):
        RewardNodeConfig(backend="vlm", model_path="/m", signal="topreward")
    cfg = RewardNodeConfig(backend="vllm", server_url="http://gpu-box:8000/v1",
                           model_name="Qwen/Qwen3-VL-8B-Instruct", signal="topreward",
                           adapter_path="progress=p,completion=c,contrastive=k")
    kw = cfg.backend_kwargs()
    assert kw["server_url"] == "http://gpu-box:8000/v1" and kw["model"] == "Qwen/Qwen3-VL-8B-Instruct"
    assert kw["signal"] == "topreward" and kw["timeout_s"] == cfg.request_timeout_s
    from lrm_ros.rewards.server import ServerConfig
    sc = ServerConfig(**kw)
    assert sc.adapters() == {"progress": "p", "completion": "c", "contrastive": "k"}
    assert ServerConfig(server_url="http://h/v1", model="m", adapter="lrm").adapters() == {
        "progress": "lrm", "completion": "lrm", "contrastive": "lrm"}
    with pytest.raises(ValueError, match="signal=name"):
        ServerConfig(server_url="http://h/v1", model="m", adapter="progres=p").adapters()
