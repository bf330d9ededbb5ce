"""Fault injection on the full simulated graph (bridge, ingest, tiny_vla policy, lite reward
model, PPO learner, recorder, respawn:=true), real processes. Marked `slow` (about 3 minutes;
`make test` runs it, `-m "not slow"` skips it).

1. Garbage on the input topics (wrong sizes, NaN/inf, huge arrays, unknown encodings,
   malformed images, PolicyUpdates naming a missing or a corrupt file): nothing crashes,
   every drop is counted on /diagnostics, ticks go on.
2. kill -9, one at a time, of the reward model, the policy, the learner and the recorder
   mid-episode: each
   is respawned; fresh held rewards come again once the reward model is back, the bridge
   counts the fallback ticks of the policy's gap, the learner sets the episodes hit by the
   gap aside (never among its complete episodes) and, respawned, records again; the bag the
   recorder was killed writing stays readable, and the respawned one records next to it.
docs/FAULT_INJECTION.md lists what was tried and what happened.
"""
import array
import dataclasses
import hashlib
import os
import signal
import time

import pytest

from lrm_ros.bringup.graph import load_graph, resolve
from lrm_ros.bringup.session import running_graph

pytestmark = pytest.mark.slow
NS = "env0"
STARTUP_S = 240.0


@pytest.fixture(scope="module")
def graph(tmp_path_factory, graph_domain):
    from lrm_ros.ros.monitor import GraphMonitor
    tmp = tmp_path_factory.mktemp("faults")
    domain, env = graph_domain
    specs = resolve(load_graph("sim"), {
        "env_id": "PushCube-v1", "reward_interval": "3", "max_episode_ticks": "12",
        "learner": "ppo", "learner_dir": str(tmp / "learner"), "episodes_per_iteration": "2",
        "iterations": "1000", "record": "true", "record_path": str(tmp / "bag"),
        "respawn": "true", "reward_prefix": ""})
    specs = [dataclasses.replace(s, parameters={**s.parameters, "camera_width": 64, "camera_height": 64,
                                                "diagnostics_period_s": 0.5})
             if s.executable == "maniskill_bridge" else s for s in specs]
    with running_graph(specs, env=env, log=tmp / "nodes.log", monitor=GraphMonitor([NS])) as g:
        g.wait_up(lambda mon: len(mon.records[NS].ticks) >= 15, STARTUP_S, "fewer than 15 ticks")
        yield {"mon": g.monitor, "runner": g.runner, "tmp": tmp, "graph": g}
    print("exit codes", g.codes)


def _diag(mon, node):
    return mon.node_diagnostics(node)


def _count(mon, node, key):
    try:
        return int(_diag(mon, node).get(key, 0))
    except ValueError:
        return 0


def _wait_count(mon, node, key, above, timeout=30.0):
    ok = mon.wait_for(lambda: _count(mon, node, key) > above, timeout)
    assert ok, f"{node} {key} stayed at {_count(mon, node, key)}: {_diag(mon, node)}"


def _ticks_go_on(mon, n=3, timeout=60.0):
    have = len(mon.records[NS].ticks)
    assert mon.wait_for(lambda: len(mon.records[NS].ticks) >= have + n, timeout), "ticks stopped"


def test_garbage_on_every_input_topic_is_dropped_and_counted(graph):
    from sensor_msgs.msg import Image, JointState
    from lrm_ros.msg import PolicyStep, PolicyUpdate
    from lrm_ros.ros.qos import LATCHED, RELIABLE, SENSOR
    mon, runner, tmp = graph["mon"], graph["runner"], graph["tmp"]
    bridge, ingest, policy = f"/{NS}/maniskill_bridge", f"/{NS}/camera_ingest", f"/{NS}/policy"
    assert mon.wait_for(lambda: all(_diag(mon, n) for n in (bridge, ingest, policy, "/reward_model",
                                                             "/learner")), 30)
    before = {(n, k): _count(mon, n, k) for n, k in (
        (bridge, "commands_rejected_size"), (bridge, "commands_rejected_nonfinite"),
        (ingest, "dropped"), (policy, "frames_dropped"), (policy, "joint_states_dropped"),
        (policy, "checkpoints_refused"), ("/reward_model", "frames_dropped"),
        ("/learner", f"{NS}_steps_invalid"))}

    # commands: wrong size, huge, NaN, inf
    for values in ([0.0] * 3, [0.0] * 1_000_000, [float("nan")] * 7, [float("inf")] * 7):
        mon.send_command(NS, values)
    # raw camera images: unknown encoding, data shorter than height x step, a huge empty one
    raw_bad = [Image(height=10, width=10, encoding="bogus", step=30, data=array.array("B", bytes(300))),
               Image(height=10, width=10, encoding="rgb8", step=30, data=array.array("B", bytes(100))),
               Image(height=4000, width=4000, encoding="rgb8", step=12000, data=array.array("B", bytes(10)))]
    # frames (what the policy and the reward model read), joint states, policy steps, updates
    frame_pub = mon.node.create_publisher(Image, f"/{NS}/camera/frame", SENSOR)
    joints_pub = mon.node.create_publisher(JointState, f"/{NS}/joint_states", RELIABLE)
    step_pub = mon.node.create_publisher(PolicyStep, f"/{NS}/policy/step", RELIABLE)
    update_pub = mon.node.create_publisher(PolicyUpdate, "/learner/policy_update", LATCHED)
    corrupt = tmp / "corrupt.pt"
    corrupt.write_bytes(os.urandom(4096))
    assert mon.wait_for(lambda: mon.subscribers(f"/{NS}/camera/frame") >= 3, 20)   # monitor, policy, reward
    for _ in range(5):                                   # best effort topics: send a few
        for img in raw_bad:
            mon.publish_raw_image(NS, img)
        frame_pub.publish(Image(height=8, width=8, encoding="rgb8", step=24, data=array.array("B", bytes(5))))
        time.sleep(0.1)
    joints_pub.publish(JointState(name=["a"] * 9, position=[float("nan")] * 9))
    joints_pub.publish(JointState(name=[], position=[]))
    step_pub.publish(PolicyStep(episode=0, tick=0, features=[0.0] * 3, raw_action=[0.0] * 7, action=[0.0] * 7))
    step_pub.publish(PolicyStep(episode=0, tick=0, features=[float("nan")] * 1673, raw_action=[0.0] * 7,
                                action=[0.0] * 7))
    update_pub.publish(PolicyUpdate(version=10_000, checkpoint_path=str(tmp / "missing.pt"), sha256="0" * 64))
    assert mon.wait_for(lambda: _count(mon, policy, "checkpoints_refused") > before[(policy, "checkpoints_refused")], 30)
    update_pub.publish(PolicyUpdate(version=10_001, checkpoint_path=str(corrupt),
                                    sha256=hashlib.sha256(corrupt.read_bytes()).hexdigest()))

    _wait_count(mon, bridge, "commands_rejected_size", before[(bridge, "commands_rejected_size")] + 1)
    _wait_count(mon, bridge, "commands_rejected_nonfinite", before[(bridge, "commands_rejected_nonfinite")] + 1)
    _wait_count(mon, ingest, "dropped", before[(ingest, "dropped")])
    _wait_count(mon, policy, "frames_dropped", before[(policy, "frames_dropped")])
    _wait_count(mon, policy, "joint_states_dropped", before[(policy, "joint_states_dropped")] + 1)
    _wait_count(mon, policy, "checkpoints_refused", before[(policy, "checkpoints_refused")] + 1)
    _wait_count(mon, "/reward_model", "frames_dropped", before[("/reward_model", "frames_dropped")])
    _wait_count(mon, "/learner", f"{NS}_steps_invalid", before[("/learner", f"{NS}_steps_invalid")] + 1)
    _ticks_go_on(mon)
    assert runner.dead() == [] and all(p.restarts == 0 for p in runner.procs)   # nothing crashed
    log = graph["graph"].log_text()
    assert "Traceback" not in log, log[-3000:]


def _kill(runner, label):
    (p,) = [p for p in runner.procs if p.spec.label == label]
    os.kill(p.popen.pid, signal.SIGKILL)
    return p.popen.pid


def _respawned(runner, label, old_pid, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runner.respawn()
        (p,) = [p for p in runner.procs if p.spec.label == label]
        if p.popen.pid != old_pid and p.popen.poll() is None:
            return p
        time.sleep(0.1)
    raise AssertionError(f"{label} was not respawned within {timeout} s")


def test_killed_nodes_are_respawned_and_the_gaps_are_flagged(graph):
    mon, runner = graph["mon"], graph["runner"]
    rec = mon.records[NS]

    # the reward model: held rewards go stale while it is gone, fresh again once it is back
    pid = _kill(runner, "reward_model")
    _respawned(runner, "reward_model", pid)
    t_back = time.monotonic()
    assert mon.wait_for(lambda: any(h.t_recv > t_back and h.query_tick > 0 and not h.stale for h in rec.held), 180), \
        "no fresh held reward after the reward model came back"

    # the policy: the bridge steps its gap with the fallback command and counts it
    fallbacks = _count(mon, f"/{NS}/maniskill_bridge", "command_timeouts")
    def set_aside_now():
        return sum(_count(mon, "/learner", f"{NS}_episodes_{k}") for k in ("fallback", "aborted", "dropped"))
    set_aside = set_aside_now()
    pid = _kill(runner, f"{NS}/policy")
    _wait_count(mon, f"/{NS}/maniskill_bridge", "command_timeouts", fallbacks, timeout=60)
    _respawned(runner, f"{NS}/policy", pid)
    steps = len(rec.policy_steps)
    assert mon.wait_for(lambda: len(rec.policy_steps) >= steps + 5, 180), "the respawned policy does not act"
    hit = {t.episode for t in rec.ticks if t.fallbacks > 0}          # episodes with fallback ticks
    assert hit, "no tick carried the fallback count"
    # the learner sets the hit episodes aside: incomplete (steps missing while the policy was
    # gone: aborted, or dropped when not one step was complete) or driven by fallback
    # commands (all steps there, some too late)
    assert mon.wait_for(lambda: set_aside_now() > set_aside, 120), _diag(mon, "/learner")

    # the learner: respawned, it recovers its store and keeps recording
    pid = _kill(runner, "learner")
    _respawned(runner, "learner", pid)
    assert mon.wait_for(lambda: _count(mon, "/learner", f"{NS}_episodes_complete") >= 1, 180), \
        _diag(mon, "/learner")
    # the recorder: the bag it was killed writing stays readable; the new one goes next to it
    pid = _kill(runner, "bag_recorder")
    _respawned(runner, "bag_recorder", pid)
    assert mon.wait_for(lambda: (graph["tmp"] / "bag_2").is_dir(), 60)
    from lrm_ros.bags.load import load_bag
    killed = load_bag(graph["tmp"] / "bag", namespace=NS)
    assert killed.episodes and killed.storage == "mcap-direct"      # no metadata.yaml: read directly
    from lrm_ros.learn.episode_store import EpisodeStore
    store = EpisodeStore(graph["tmp"] / "learner" / "episodes")
    complete = {i.episode for i in store.complete_episodes()}
    assert not (complete & hit), f"episodes with fallback ticks were kept for training: {complete & hit}"
    assert runner.dead() == []
