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
