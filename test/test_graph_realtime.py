"""The bridge in realtime mode (real process, real ManiSkill): ticks run at the configured
rate on their own; ticks without a fresh command use the fallback and are counted."""
import dataclasses

from lrm_ros.bringup.graph import load_graph, resolve
from lrm_ros.bringup.session import running_graph
from lrm_ros.ros.env import ros_environment

NS = "env0"


def test_realtime_ticks_advance_without_commands_and_count_misses(tmp_path, fresh_domain, monkeypatch):
    from lrm_ros.ros.monitor import GraphMonitor
    env = ros_environment(domain_id=fresh_domain)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(fresh_domain))   # the monitor's; undone after the test
    specs = resolve(load_graph("sim"), {"policy": "none", "reward": "none", "mode": "realtime"})
    specs = [dataclasses.replace(s, parameters={**s.parameters, "control_rate_hz": 5.0,
                                                "camera_width": 64, "camera_height": 64,
                                                "diagnostics_period_s": 0.2})
             for s in specs if s.executable == "maniskill_bridge"]
    with running_graph(specs, env=env, log=tmp_path / "nodes.log", monitor=GraphMonitor([NS])) as g:
        mon = g.monitor
        g.wait_up(lambda mon: len(mon.records[NS].ticks) >= 1, 120.0, "no first tick")
        mon.send_command(NS, [0.0] * 7)              # one command, then silence
        assert mon.wait_for(lambda: len(mon.records[NS].ticks) >= 6, 30.0)
        name = f"/{NS}/maniskill_bridge"
        assert mon.wait_for(
            lambda: int(mon.node_diagnostics(name).get("commands_missed", 0)) >= 3, 10.0)
        ticks = [t.tick for t in mon.records[NS].ticks if t.episode == 0]
        assert ticks[:6] == list(range(6))
        fallbacks = [t.fallbacks for t in mon.records[NS].ticks]
        assert fallbacks == sorted(fallbacks) and fallbacks[-1] >= 3
        assert g.runner.dead() == []
    assert all(c == 0 for c in g.codes.values()), g.codes
