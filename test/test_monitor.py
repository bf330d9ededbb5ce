"""GraphMonitor (a real rclpy node in its own context): a dead executor is loud, not silent."""
import pytest


def test_a_monitor_whose_executor_died_raises_in_every_wait(monkeypatch, fresh_domain):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(fresh_domain))
    from lrm_ros.ros.monitor import GraphMonitor

    with GraphMonitor(["env0"]) as mon:
        assert mon.spin_error is None

        def broken_callback():
            raise ValueError("a callback bug")
        mon.node.create_timer(0.01, broken_callback)        # the executor spins it and dies
        with pytest.raises(RuntimeError, match="executor died .*ValueError: a callback bug"):
            mon.wait_for(lambda: False, timeout_s=30.0)
        assert isinstance(mon.spin_error, ValueError)


def test_closing_a_monitor_is_not_an_error(monkeypatch, fresh_domain):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(fresh_domain))
    from lrm_ros.ros.monitor import GraphMonitor

    mon = GraphMonitor(["env0"])
    mon.close()
    assert mon.spin_error is None and not mon._thread.is_alive()


def test_a_bridge_blind_to_nodes_the_monitor_sees_active_is_named(monkeypatch, fresh_domain):
    """The demo's discovery-fault check, on real /diagnostics messages: a bridge that has not
    ticked and waits for nodes that report themselves active to the monitor is blind to them;
    one that waits for a node that is really not ready (or waits for nothing) is not."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(fresh_domain))
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from lrm_ros.common.readiness import NOT_RUNNING, RequiredNodes, waiting_nodes
    from lrm_ros.ros.monitor import GraphMonitor

    def status(name, **values):
        return DiagnosticStatus(name=name, values=[KeyValue(key=k, value=v) for k, v in values.items()])

    wait1 = RequiredNodes(["/env1/policy", "/reward_model"], 300.0)
    wait1.update({"/env1/policy": "does not subscribe /env1/control/tick yet (still loading its model?)",
                  "/reward_model": NOT_RUNNING})
    assert waiting_nodes(wait1.describe()) == wait1.missing()
    wait2 = RequiredNodes(["/env2/policy"], 300.0)
    wait2.update({"/env2/policy": "not active (lifecycle state: inactive)"})
    diagnostics = DiagnosticArray(status=[
        status("/env0/maniskill_bridge", waiting_for=""),
        status("/env1/maniskill_bridge", waiting_for=wait1.describe()),
        status("/env2/maniskill_bridge", waiting_for=wait2.describe()),
        status("/env1/policy", lifecycle_state="active"),
        status("/env2/policy", lifecycle_state="inactive"),
        status("/reward_model", lifecycle_state="active")])
    names = ["env0", "env1", "env2"]
    with GraphMonitor(names) as mon:
        pub = mon.node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        mon.node.create_timer(0.2, lambda: pub.publish(diagnostics))
        assert mon.wait_for(lambda: "/reward_model" in mon.diagnostics, 20), mon.diagnostics
        assert mon.blind_bridges() == {"env1": ["/env1/policy", "/reward_model"]}
