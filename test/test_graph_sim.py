"""The simulated graph with real processes and real ManiSkill rendering.

maniskill_bridge + camera_ingest come up from config/graphs/sim.yaml through the pip-only
runner (the same description sim.launch.py uses); this test acts as the policy. It checks
lockstep ticking, frames at the configured resolution, command timeouts and rejections,
malformed images, reset, episode ends, and that nothing is left behind.
"""
import array
import dataclasses
import os

import pytest

from lrm_ros.bringup.graph import load_graph, resolve
from lrm_ros.bringup.runner import stale_shm
from lrm_ros.bringup.session import GraphNotUp, running_graph
from lrm_ros.common.episode_end import END_RESET_REQUEST, END_TIME_LIMIT

IMAGE_SIZE = 96          # not the default 224: proves the parameter reaches the node
MAX_TICKS = 6
TIMEOUT_S = 1.0
NS = "env0"
STARTUP_S = 120.0


@pytest.fixture(scope="module")
def graph(tmp_path_factory, graph_domain):
    from lrm_ros.ros.monitor import GraphMonitor
    domain, env = graph_domain
    specs = resolve(load_graph("sim"), {"policy": "none", "reward": "lite",
                                        "reward_signal": "tri", "reward_interval": "3",
                                        "image_size": str(IMAGE_SIZE),
                                        "max_episode_ticks": str(MAX_TICKS)})
    specs = [dataclasses.replace(s, parameters={**s.parameters, "command_timeout_s": TIMEOUT_S,
                                                "camera_width": 128, "camera_height": 128,
                                                "diagnostics_period_s": 0.2})
             if s.executable == "maniskill_bridge" else
             dataclasses.replace(s, parameters={
                 **s.parameters, "diagnostics_period_s": 0.2,
                 "inputs": ["camera/image_raw", "camera/image_raw/compressed"],
                 "outputs": ["camera/frame", "camera/frame_from_compressed"]})
             for s in specs]
    assert sorted(s.executable for s in specs) == ["camera_ingest", "maniskill_bridge", "reward_model"]
    with running_graph(specs, env=env, log=tmp_path_factory.mktemp("graph") / "nodes.log",
                       monitor=GraphMonitor([NS])) as g:
        g.wait_up(lambda mon: len(mon.records[NS].ticks) >= 1 and mon.records[NS].instruction is not None,
                  STARTUP_S, "no first tick and instruction")
        yield g.monitor, g.runner


def _ticks(mon):
    return mon.records[NS].ticks


def _step(mon, action=(0.0,) * 7, timeout=20.0):
    """Send one command and wait for the next tick; returns that tick record."""
    n = len(_ticks(mon))
    mon.send_command(NS, action)
    assert mon.wait_for(lambda: len(_ticks(mon)) > n, timeout), "no tick after a command"
    return _ticks(mon)[n]


def _diag(mon, node, key, at_least, timeout=10.0):
    name = f"/{NS}/{node}"
    ok = mon.wait_for(lambda: int(mon.node_diagnostics(name).get(key, -1)) >= at_least, timeout)
    assert ok, f"{name} diagnostics {key} never reached {at_least}: {mon.node_diagnostics(name)}"


def test_first_tick_instruction_and_frame(graph):
    mon, _ = graph
    rec = mon.records[NS]
    first = rec.ticks[0]
    assert (first.episode, first.tick, first.start, first.end) == (0, 0, True, False)
    assert "cube" in rec.instruction.lower()
    assert mon.wait_for(lambda: len(rec.frames) >= 1, 20.0), "no camera/frame arrived"
    frame = rec.frames[0]
    assert (frame.width, frame.height, frame.encoding) == (IMAGE_SIZE, IMAGE_SIZE, "rgb8")
    assert frame.stamp_ns == first.stamp_ns            # the original stamp is kept
    # the bridge held tick 0 until the reward model was active (wait_for_nodes): it has a
    # held reward, as does every tick after it
    assert mon.wait_for(lambda: (0, 0) in {(h.episode, h.tick) for h in rec.held}, 20.0), rec.held[:3]


def test_a_monitor_on_another_domain_than_the_nodes_is_refused_before_they_start(tmp_path, fresh_domain,
                                                                                  graph_domain):
    # the mistake this catches: a module's graph set ROS_DOMAIN_ID for this process, a test
    # started its own graph on another domain, and its monitor watched the module's graph
    from lrm_ros.ros.env import ros_environment
    from lrm_ros.ros.monitor import GraphMonitor
    specs = resolve(load_graph("sim"), {"policy": "none", "reward": "none"})
    monitor = GraphMonitor([NS])
    assert monitor.domain_id == graph_domain[0] != fresh_domain
    with pytest.raises(ValueError) as refused:
        with running_graph(specs, env=ros_environment(domain_id=fresh_domain), log=tmp_path / "nodes.log",
                           monitor=monitor):
            pytest.fail("the nodes were started")
    assert str(refused.value) == (f"the monitor is on ROS_DOMAIN_ID {graph_domain[0]}, the nodes on "
                                  f"{fresh_domain}: build it with GraphMonitor(..., domain_id={fresh_domain})")
    assert not (tmp_path / "nodes.log").exists()


def test_a_bridge_waiting_for_a_node_that_never_comes_stops_naming_it(tmp_path, fresh_domain):
    from lrm_ros.ros.env import ros_environment
    specs = [s for s in resolve(load_graph("sim"), {"policy": "none", "reward": "none"})
             if s.executable == "maniskill_bridge"]
    specs = [dataclasses.replace(s, parameters={**s.parameters, "camera_width": 64, "camera_height": 64,
                                                "wait_for_nodes": ["/env0/policy", "/reward_model"],
                                                "wait_for_nodes_timeout_s": 3.0})
             for s in specs]
    from lrm_ros.ros.monitor import GraphMonitor
    with running_graph(specs, env=ros_environment(domain_id=fresh_domain), log=tmp_path / "nodes.log",
                       monitor=GraphMonitor([NS], domain_id=fresh_domain)) as g:
        with pytest.raises(GraphNotUp) as failed:
            g.wait_up(lambda mon: len(mon.records[NS].ticks) >= 1, STARTUP_S, "no first tick")
    text = (tmp_path / "nodes.log").read_text()
    assert g.codes == {f"{NS}/maniskill_bridge": 1}, text[-3000:]
    assert "the graph is not ready: /env0/policy: not running; /reward_model: not running" in text, text[-3000:]
    # what the caller is told: what it waited for, who died how, their last words, the log
    said = str(failed.value)
    assert said.startswith(f"no first tick: {NS}/maniskill_bridge died (exit code 1); last output:"), said
    assert said.count("the graph is not ready: /env0/policy") == 2, said


def test_lockstep_one_tick_per_command_with_frames_and_oracle(graph):
    mon, _ = graph
    rec = mon.records[NS]
    # Start from a fresh episode: with no policy the bridge has been ticking on its fallback
    # since start-up, and an episode's end (MAX_TICKS) is followed by the next episode's
    # tick 0 without a command, so three steps from an arbitrary tick could cross one.
    episode = _ticks(mon)[-1].episode
    assert mon.reset(NS).success
    assert mon.wait_for(lambda: any(t.episode > episode and t.start for t in _ticks(mon)), 20.0), \
        "no tick 0 after the reset"
    start = _ticks(mon)[-1]
    assert start.start and start.tick == 0 and 3 < MAX_TICKS, start
    seen = [start]
    for _ in range(3):
        seen.append(_step(mon, (0.1, 0, 0, 0, 0, 0, 1.0)))
    # one tick per command: the next tick of the episode, or tick 0 of the next after an end
    for a, b in zip(seen, seen[1:]):
        expected = (a.episode + 1, 0, True) if a.end else (a.episode, a.tick + 1, False)
        assert (b.episode, b.tick, b.start) == expected, seen
    # Lockstep: with no command the tick waits (until the timeout, checked below).
    n = len(_ticks(mon))
    assert not mon.wait_for(lambda: len(_ticks(mon)) > n, TIMEOUT_S * 0.3), "ticked without a command"
    stamps = {t.stamp_ns for t in seen}
    assert mon.wait_for(lambda: stamps <= {f.stamp_ns for f in rec.frames}, 10.0), \
        "a tick's camera/frame did not arrive"
    assert len(rec.oracle) >= len(seen) and rec.joint_states >= len(seen)


def test_missing_command_times_out_to_fallback_and_is_counted(graph):
    mon, _ = graph
    last = _ticks(mon)[-1]
    assert mon.wait_for(lambda: len(_ticks(mon)) > 0 and _ticks(mon)[-1] != last,
                        TIMEOUT_S * 10), "tick did not advance after the command timeout"
    _diag(mon, "maniskill_bridge", "command_timeouts", 1)


def test_malformed_commands_are_rejected_and_counted_without_killing_the_bridge(graph):
    mon, runner = graph
    mon.send_command(NS, [0.0, 0.0, 0.0])
    _diag(mon, "maniskill_bridge", "commands_rejected_size", 1)
    mon.send_command(NS, [float("nan")] * 7)
    _diag(mon, "maniskill_bridge", "commands_rejected_nonfinite", 1)
    _step(mon)                                          # still stepping
    assert runner.dead() == []


def test_malformed_image_is_dropped_and_counted_without_killing_ingest(graph):
    from sensor_msgs.msg import Image
    mon, runner = graph
    bad = Image(height=10, width=10, encoding="rgb8", step=30)
    data = array.array("B"); data.frombytes(bytes(100))  # needs 300 bytes
    bad.data = data
    unknown = Image(height=2, width=2, encoding="yuv422_weird", step=4)
    d2 = array.array("B"); d2.frombytes(bytes(8)); unknown.data = d2
    mon.wait_for(lambda: mon.subscribers(f"/{NS}/camera/image_raw") >= 1, 10.0)
    # The ingest keeps only the latest image (best effort, depth 1): one kind at a time.
    for msg, key in ((bad, "dropped_size_mismatch"), (unknown, "dropped_unknown_encoding")):
        name = f"/{NS}/camera_ingest"
        for _ in range(20):
            mon.publish_raw_image(NS, msg)
            if mon.wait_for(lambda: int(mon.node_diagnostics(name).get(key, 0)) >= 1, 0.5):
                break
        _diag(mon, "camera_ingest", key, 1)
    frames = len(mon.records[NS].frames)
    _step(mon)
    assert mon.wait_for(lambda: len(mon.records[NS].frames) > frames, 10.0), \
        "ingest stopped converting good frames"
    assert runner.dead() == []


def test_compressed_input_is_decoded_to_model_resolution(graph):
    import numpy as np
    from sensor_msgs.msg import Image
    from lrm_ros.ros.image_msgs import image_msg_to_rgb, rgb_to_compressed_msg
    from lrm_ros.ros.qos import SENSOR
    mon, runner = graph
    received = []
    mon.node.create_subscription(Image, f"/{NS}/camera/frame_from_compressed",
                                 lambda m: received.append(m), SENSOR)
    pub = mon.node.create_publisher(type(rgb_to_compressed_msg(np.zeros((2, 2, 3), np.uint8))),
                                    f"/{NS}/camera/image_raw/compressed", SENSOR)
    rgb = np.zeros((120, 160, 3), np.uint8)
    rgb[..., 0] = 200                                     # red, 4:3 -> centre-cropped square
    msg = rgb_to_compressed_msg(rgb, "png")
    msg.header.frame_id = "usb_cam"
    for _ in range(40):
        pub.publish(msg)
        if mon.wait_for(lambda: bool(received), 0.5):
            break
    assert received, "no frame from the compressed input"
    frame = received[0]
    assert (frame.width, frame.height, frame.encoding, frame.header.frame_id) == \
        (IMAGE_SIZE, IMAGE_SIZE, "rgb8", "usb_cam")
    assert image_msg_to_rgb(frame)[..., 0].min() == 200
    assert runner.dead() == []


def test_reset_service_starts_a_new_episode(graph):
    mon, _ = graph
    # Be mid-episode: not on a terminal tick and not about to hit the time limit.
    while _ticks(mon)[-1].end or _ticks(mon)[-1].tick >= MAX_TICKS - 1:
        n = len(_ticks(mon))
        if _ticks(mon)[-1].end:
            assert mon.wait_for(lambda: len(_ticks(mon)) > n, 20.0)
        else:
            _step(mon)
    episode = _ticks(mon)[-1].episode
    response = mon.reset(NS)
    assert response.success, response.message
    assert mon.wait_for(lambda: _ticks(mon)[-1].episode > episode, 20.0)
    recs = _ticks(mon)
    end = [t for t in recs if t.episode == episode and t.end]
    assert len(end) == 1 and end[0].reason == END_RESET_REQUEST
    new = [t for t in recs if t.episode == episode + 1]
    assert (new[0].tick, new[0].start) == (0, True)


def test_time_limit_ends_the_episode_and_auto_resets(graph):
    mon, _ = graph
    episode = _ticks(mon)[-1].episode
    for _ in range(MAX_TICKS + 2):
        if _ticks(mon)[-1].episode != episode:
            break
        _step(mon, (0.0,) * 7)
    ended = [t for t in _ticks(mon) if t.episode == episode and t.end]
    # zero actions move nothing: PushCube neither succeeds nor fails, the time limit ends it
    assert [(t.tick, t.reason) for t in ended] == [(MAX_TICKS, END_TIME_LIMIT)], ended
    assert mon.wait_for(lambda: _ticks(mon)[-1].episode == episode + 1, 20.0)
    # the reward node released the ended episode's backend state (backend.end_episode)
    assert mon.wait_for(lambda: int(mon.node_diagnostics("/reward_model").get(
        "engine_episodes_ended", 0)) >= 1, 20.0), mon.node_diagnostics("/reward_model")


def test_the_embedded_lite_reward_model_scores_the_queries(graph):
    """The default backend with its shipped checkpoint, all three signals (tri)."""
    mon, runner = graph
    rec = mon.records[NS]
    assert mon.wait_for(lambda: any(r.status == 0 for r in rec.results), 60.0), rec.results
    ok = [r for r in rec.results if r.status == 0]
    assert all(0.0 <= r.value <= 1.0 for r in ok)
    # queries at ticks K, 2K, ... and at each episode's end (time limit, or the reset test's
    # END_RESET_REQUEST: the reward model is active from tick 0 on, so it sees that one too)
    ends = {(t.episode, t.tick) for t in rec.ticks if t.end}
    assert all(r.query_tick % 3 == 0 or (r.episode, r.query_tick) in ends for r in rec.results), \
        (rec.results, ends)
    assert mon.wait_for(lambda: any(h.query_tick > 0 for h in rec.held), 30.0)   # a held result
    assert runner.dead() == []


def test_zz_shutdown_leaves_no_processes_or_shared_memory(graph):
    """Last in this module (name order): Ctrl-C (SIGINT) stops every node cleanly."""
    mon, runner = graph
    assert runner.dead() == []
    mon.close()
    codes = runner.stop()
    assert all(code == 0 for code in codes.values()), codes
    for proc in runner.procs:
        with pytest.raises(ProcessLookupError):
            os.kill(proc.popen.pid, 0)
    # Whatever the nodes left in /dev/shm, the runner's stop removed: nothing unheld remains.
    leftover = stale_shm()
    assert not leftover, f"shared memory left behind: {sorted(p.name for p in leftover)}"
