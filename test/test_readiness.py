"""Start-up order (ROS-free parts): a tick source waits for the graph's policy and reward model
(lrm_ros.common.readiness), the robot refuses episode/start until then, and the graph
description fills in which nodes to wait for ($(ready_before_ticks)) and respawn."""
import pytest
import yaml

from lrm_ros.bringup.graph import GraphError, load_graph, resolve
from lrm_ros.common.readiness import NOT_RUNNING, RequiredNodes, node_problem
from lrm_ros.robot.bridge import EpisodeControl, RobotConfig


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def test_node_problem_says_what_is_missing():
    topic = "/env0/control/tick"
    assert node_problem(False, False, None, topic) == NOT_RUNNING
    assert node_problem(True, True, "inactive", topic) == "not active (lifecycle state: inactive)"
    assert "does not subscribe /env0/control/tick" in node_problem(True, False, "active", topic)
    assert "does not subscribe" in node_problem(True, False, None, topic)
    assert node_problem(True, True, "active", topic) == ""
    assert node_problem(True, True, None, topic) == ""        # not a lifecycle node


def test_required_nodes_ready_only_when_all_are_and_time_out_naming_the_missing():
    clock = Clock()
    wait = RequiredNodes(["/env0/policy", "/reward_model", ""], timeout_s=60, clock=clock)
    assert wait.names == ["/env0/policy", "/reward_model"]
    assert not wait.ready and wait.describe() == "/env0/policy: not running; /reward_model: not running"
    wait.update({"/env0/policy": "", "/reward_model": "not active (lifecycle state: unconfigured)"})
    assert not wait.ready and wait.describe() == "/reward_model: not active (lifecycle state: unconfigured)"
    clock.t = 59.0
    assert not wait.timed_out
    clock.t = 61.0
    assert wait.timed_out
    wait.update({"/env0/policy": "", "/reward_model": ""})
    assert wait.ready and not wait.timed_out and wait.describe() == ""
    assert wait.ready_since == pytest.approx(61.0)
    wait.update({"/reward_model": ""})                       # the policy vanished
    assert not wait.ready and wait.missing() == {"/env0/policy": NOT_RUNNING}


def test_no_required_nodes_is_ready_at_once():
    assert RequiredNodes([], timeout_s=1).ready


def test_the_robot_refuses_to_start_an_episode_until_the_graph_is_ready():
    control = EpisodeControl(RobotConfig(auto_start=False))
    control.set_not_ready("/reward_model: not running")
    ok, msg = control.start()
    assert not ok and "/reward_model: not running" in msg and "not started" in msg
    assert control.counters["starts_refused_not_ready"] == 1 and not control.running
    ok, msg = control.reset()                                   # a reset waits for it too
    assert ok and "once the graph is ready" in msg
    assert control.next_tick() is None and not control.will_tick
    control.set_not_ready("")
    tick = control.next_tick()                                  # the reset's episode starts
    assert tick is not None and tick.episode == 0 and tick.episode_start


def test_auto_start_waits_for_the_graph_too():
    control = EpisodeControl(RobotConfig(auto_start=True))
    control.set_not_ready("/env0/policy: not running")
    assert control.next_tick() is None and control.episode == -1
    control.set_not_ready("")
    assert control.next_tick().episode == 0


def test_wait_for_nodes_must_be_fully_qualified():
    with pytest.raises(ValueError, match="fully qualified"):
        RobotConfig(wait_for_nodes=("policy",))
    from lrm_ros.sim.bridge import BridgeConfig
    with pytest.raises(ValueError, match="fully qualified"):
        BridgeConfig(wait_for_nodes=("reward_model",))
    with pytest.raises(ValueError, match="wait_for_nodes_timeout_s"):
        BridgeConfig(wait_for_nodes_timeout_s=0)


def _param(specs, label, key, default="UNSET"):
    (spec,) = [s for s in specs if s.label == label]
    return spec.parameters.get(key, default)


def test_the_graphs_make_tick_sources_wait_for_their_policy_and_reward_model():
    sim = load_graph("sim")
    specs = resolve(sim, {"num_envs": "2"})
    assert _param(specs, "env0/maniskill_bridge", "wait_for_nodes") == ["/env0/policy", "/reward_model"]
    assert _param(specs, "env1/maniskill_bridge", "wait_for_nodes") == ["/env1/policy", "/reward_model"]
    specs = resolve(sim, {"reward": "none", "policy": "random"})
    assert _param(specs, "env0/maniskill_bridge", "wait_for_nodes") == ["/env0/policy"]
    # a graph without a reward model or policy: nothing to wait for (the parameter is unset)
    specs = resolve(sim, {"reward": "none", "policy": "none"})
    assert _param(specs, "env0/maniskill_bridge", "wait_for_nodes") == "UNSET"
    robot = resolve(load_graph("real_robot"), {})
    assert _param(robot, "env0/robot_bridge", "wait_for_nodes") == ["/env0/policy", "/reward_model"]
    bridge = [s for s in resolve(sim, {"num_envs": "2"}) if s.label == "env0/maniskill_bridge"][0]
    assert "wait_for_nodes:=[/env0/policy, /reward_model]" in bridge.ros_args()


def test_respawn_is_read_from_the_graph(tmp_path):
    graph = {"arguments": {"again": {"default": "true"}},
             "nodes": [{"executable": "scripted_policy", "name": "policy", "respawn": "$(arg again)",
                        "respawn_delay": 0.5},
                       {"executable": "camera_ingest", "name": "camera_ingest"}]}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(graph))
    policy, ingest = resolve(load_graph(str(path)))
    assert policy.respawn and policy.respawn_delay_s == 0.5
    assert not ingest.respawn
    (policy, _) = resolve(load_graph(str(path)), {"again": "false"})
    assert not policy.respawn
    graph["nodes"][0]["respawn"] = "sometimes"
    path.write_text(yaml.safe_dump(graph))
    with pytest.raises(GraphError, match="respawn must be true or false"):
        resolve(load_graph(str(path)))
