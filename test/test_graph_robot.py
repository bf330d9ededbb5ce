"""The hardware graph (config/graphs/real_robot.yaml, what real_robot.launch.py starts) with
real node processes. The robot itself cannot run here: this test is its drivers (a camera
and a JointState publisher) and its controller (a subscriber on the command topic), the only
fakes. Checks: operator-started episodes, safety (clipping, rate limit, pause stops commands
at once), marking success, and the policy as a lifecycle node."""
import threading
import time

import numpy as np
import pytest

from lrm_ros.bringup.graph import load_graph, resolve
from lrm_ros.bringup.session import running_graph
from lrm_ros.common.episode_end import END_SUCCESS

NS = "env0"
PANDA = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1", "panda_finger_joint2"]
ROBOT_FILE = """/**:
  ros__parameters:
    control_rate_hz: 5.0
    action_dim: 7
    adapter: forward_command
    command_topic: /fake_controller/commands
    gripper_index: 6
    gripper_topic: /fake_gripper/commands
    gripper_closed: 0.0
    gripper_open: 0.08
    action_low: [-0.5]
    action_high: [0.5]
    max_delta: [0.2]
    on_pause: zero
    camera_topic: /fake_camera/color/image_raw
    joint_states_topic: /fake/joint_states
    max_episode_ticks: 1000
    success_source: both
    completion_threshold: 0.999
"""


@pytest.fixture(scope="module")
def robot(tmp_path_factory, graph_domain):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray
    from lrm_ros.ros.image_msgs import rgb_to_image_msg
    from lrm_ros.ros.monitor import GraphMonitor
    from lrm_ros.ros.qos import RELIABLE, SENSOR
    tmp = tmp_path_factory.mktemp("robot")
    (tmp / "robot.yaml").write_text(ROBOT_FILE)
    domain, env = graph_domain
    specs = resolve(load_graph("real_robot"), {"robot_params": str(tmp / "robot.yaml"),
                                               "instruction": "push the red cube to the target",
                                               "reward": "lite", "reward_interval": "3"})
    assert sorted(s.executable for s in specs) == ["camera_ingest", "reward_model", "robot_bridge", "vla_policy"]
    mon = GraphMonitor([NS])
    commands, gripper = [], []
    mon.node.create_subscription(Float64MultiArray, "/fake_controller/commands",
                                 lambda m: commands.append((time.monotonic(), list(m.data))), RELIABLE)
    mon.node.create_subscription(Float64MultiArray, "/fake_gripper/commands",
                                 lambda m: gripper.append((time.monotonic(), list(m.data))), RELIABLE)
    cam = mon.node.create_publisher(type(rgb_to_image_msg(np.zeros((2, 2, 3), np.uint8))),
                                    "/fake_camera/color/image_raw", SENSOR)
    joints = mon.node.create_publisher(JointState, "/fake/joint_states", SENSOR)
    stop = threading.Event()

    def drivers():
        rng = np.random.default_rng(0)
        frame = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        while not stop.is_set():
            stamp = mon.node.get_clock().now().to_msg()
            msg = rgb_to_image_msg(frame)
            msg.header.stamp, msg.header.frame_id = stamp, "camera_color_optical_frame"
            cam.publish(msg)
            js = JointState(name=PANDA, position=[0.0, 0.2, 0.0, -2.0, 0.0, 2.2, 0.8, 0.04, 0.04])
            js.header.stamp = stamp
            joints.publish(js)
            time.sleep(0.05)

    thread = threading.Thread(target=drivers, daemon=True)
    with running_graph(specs, env=env, log=tmp / "nodes.log", monitor=mon) as g:
        thread.start()
        try:
            g.wait_up(lambda mon: any("configured" in s for s in mon.records[NS].policy_status)
                      and mon.subscribers(f"/{NS}/policy/command") >= 1, 120,
                      "the policy is not configured or not commanding the robot bridge")
            yield {"mon": mon, "commands": commands, "gripper": gripper, "runner": g.runner, "graph": g}
        finally:
            stop.set()            # the drivers publish through the monitor's node: stop them first
            thread.join(timeout=5.0)


def _call(mon, name, srv_type, request=None, timeout=20.0):
    client = mon.node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
    future = client.call_async(request or srv_type.Request())
    answered = threading.Event()
    future.add_done_callback(lambda _: answered.set())
    assert answered.wait(timeout), f"{name} did not answer"
    return future.result()


def test_operator_episodes_safety_and_lifecycle(robot):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from std_msgs.msg import Bool
    from std_srvs.srv import Trigger
    from lrm_ros.ros.qos import LATCHED
    mon, commands = robot["mon"], robot["commands"]
    rec = mon.records[NS]
    bridge = lambda: mon.node_diagnostics(f"/{NS}/robot_bridge")  # noqa: E731  (1 Hz)

    # no episode while the policy is not active: episode/start is refused, naming it
    res = _call(mon, f"/{NS}/policy/change_state", ChangeState,
                ChangeState.Request(transition=Transition(id=Transition.TRANSITION_DEACTIVATE)))
    assert res.success
    refusal = "/env0/policy: not active (lifecycle state: inactive)"
    assert mon.wait_for(lambda: refusal in mon.node_diagnostics(f"/{NS}/robot_bridge").get("waiting_for", ""),
                        20), mon.node_diagnostics(f"/{NS}/robot_bridge")
    res = _call(mon, f"/{NS}/episode/start", Trigger)
    assert not res.success and "/env0/policy: not active (lifecycle state: inactive)" in res.message, res.message
    res = _call(mon, f"/{NS}/policy/change_state", ChangeState,
                ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVATE)))
    assert res.success
    # idle until the operator starts an episode, which succeeds once the policy and the
    # reward model (maybe still loading) are ready; every refusal says which one is missing
    assert rec.ticks == [] and commands == []
    deadline = time.monotonic() + 120
    while True:
        res = _call(mon, f"/{NS}/episode/start", Trigger)
        if res.success or time.monotonic() > deadline:
            break
        assert "/reward_model" in res.message or "/env0/policy" in res.message, res.message
    assert res.success and "episode 0 started" in res.message, res.message
    assert mon.wait_for(lambda: len(commands) >= 8, 60), (len(rec.ticks), robot["graph"].log_path)
    assert (rec.ticks[0].episode, rec.ticks[0].tick, rec.ticks[0].start) == (0, 0, True)
    # every tick from tick 0 on has its held reward (the reward model was ready first)
    assert mon.wait_for(lambda: {(h.episode, h.tick) for h in rec.held}
                        >= {(t.episode, t.tick) for t in rec.ticks[:5]}, 10), (rec.ticks[:5], rec.held[:5])
    assert rec.instruction == "push the red cube to the target"
    vals = np.array([c[1] for c in commands])
    assert vals.shape[1] == 6 and np.all(np.abs(vals) <= 0.5 + 1e-9)          # clipped
    assert np.all(np.abs(np.diff(vals, axis=0)) <= 0.2 + 1e-9)                 # rate limited
    # action[6] drives the gripper: clipped to [-0.5, 0.5] -> positions in [0.02, 0.06]
    grip = robot["gripper"]
    assert mon.wait_for(lambda: len(grip) >= len(vals), 5), (len(grip), len(vals))
    g = np.array([x[1] for x in grip])
    assert g.shape[1] == 1 and np.all((g >= 0.02 - 1e-9) & (g <= 0.06 + 1e-9)), g.ravel()

    # pause: one stop command at once, then nothing while ticks go on
    pause = mon.node.create_publisher(Bool, f"/{NS}/safety/pause", LATCHED)
    n_ticks = len(rec.ticks)
    refused = int(bridge().get("refused_paused", 0))
    t_pause = time.monotonic()
    pause.publish(Bool(data=True))
    assert mon.wait_for(lambda: any(c[0] > t_pause and c[1] == [0.0] * 6 for c in commands), 5)
    # ticks go on and the bridge refuses the policy's commands for them
    assert mon.wait_for(lambda: len(rec.ticks) >= n_ticks + 3
                        and int(bridge().get("refused_paused", 0)) >= refused + 3, 20), bridge()
    # the pause takes a moment to reach the bridge: a command it sent for a tick before the
    # pause arrived may still land after t_pause; the stop comes next and nothing after it
    after = [c[1] for c in commands if c[0] > t_pause]
    stop = after.index([0.0] * 6)
    assert stop <= 1 and len(after) == stop + 1, after
    # the gripper keeps its hold: one gripper position per command sent, none with the stop
    assert len(robot["gripper"]) == len(commands) - 1, (len(robot["gripper"]), len(commands))
    pause.publish(Bool(data=False))
    t_resume = time.monotonic()
    assert mon.wait_for(lambda: sum(c[0] > t_resume for c in commands) >= 3, 20)

    # the policy is a lifecycle node: deactivated, it stops acting; activated, it acts again
    get = _call(mon, f"/{NS}/policy/get_state", GetState)
    assert get.current_state.label == "active"
    res = _call(mon, f"/{NS}/policy/change_state", ChangeState,
                ChangeState.Request(transition=Transition(id=Transition.TRANSITION_DEACTIVATE)))
    assert res.success
    # a command published before the deactivation may still be on its way: two ticks later
    # none is; then, over five more ticks, the policy neither steps nor commands
    t0 = len(rec.ticks)
    assert mon.wait_for(lambda: len(rec.ticks) >= t0 + 2, 10)
    n_commands, n_steps = len(commands), len(rec.policy_steps)
    assert mon.wait_for(lambda: len(rec.ticks) >= t0 + 7, 10)
    assert (len(commands), len(rec.policy_steps)) == (n_commands, n_steps), commands[n_commands:]
    assert _call(mon, f"/{NS}/policy/get_state", GetState).current_state.label == "inactive"
    # cleanup frees the model; configure loads it again
    for tid, label in ((Transition.TRANSITION_CLEANUP, "unconfigured"),
                       (Transition.TRANSITION_CONFIGURE, "inactive"),
                       (Transition.TRANSITION_ACTIVATE, "active")):
        res = _call(mon, f"/{NS}/policy/change_state", ChangeState,
                    ChangeState.Request(transition=Transition(id=tid)))
        assert res.success, label
        assert _call(mon, f"/{NS}/policy/get_state", GetState).current_state.label == label
    t_on = time.monotonic()
    assert mon.wait_for(lambda: sum(c[0] > t_on for c in commands) >= 2, 20)

    # the operator marks success: the next tick ends the episode as a success
    res = _call(mon, f"/{NS}/episode/mark_success", Trigger)
    assert res.success
    assert mon.wait_for(lambda: any(t.end for t in rec.ticks), 10)
    end = [t for t in rec.ticks if t.end][0]
    assert (end.episode, end.reason) == (0, END_SUCCESS)
    # idle again: the bridge stopped running, and the end was the last of all its ticks
    assert mon.wait_for(lambda: bridge().get("running") == "False"
                        and int(bridge().get("ticks", -1)) == len(rec.ticks), 10), (bridge(), len(rec.ticks))
    assert rec.ticks[-1] == end
    assert not _call(mon, f"/{NS}/episode/stop", Trigger).success               # nothing to stop
