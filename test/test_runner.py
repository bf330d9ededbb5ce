"""The pip-only runner (`lrm-ros up`) with real node processes: Ctrl-C forwarding, clean
exit codes, a dying node reported and the others shut down."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lrm_ros.bringup.graph import load_graph, resolve
from lrm_ros.bringup.runner import GraphRunner

LRM_ROS = str(Path(sys.executable).parent / "lrm-ros")


def _graph(tmp_path, kind_env1="random"):
    graph = {
        "arguments": {"num_envs": {"default": 2}},
        "nodes": [{"executable": "scripted_policy", "name": "policy", "per_env": True,
                   "parameters": [{"kind": "random", "env_index": "$(env_index)"}]},
                  {"executable": "scripted_policy", "name": "broken", "if": {"arg": "num_envs", "equals": 3},
                   "parameters": [{"kind": kind_env1}]}],
    }
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(graph))
    return path


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_stops_every_node_cleanly(tmp_path, fresh_domain, monkeypatch):
    from lrm_ros.ros.monitor import GraphMonitor
    path = _graph(tmp_path)
    proc = subprocess.Popen([LRM_ROS, "up", str(path), "--domain-id", str(fresh_domain)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tmp_path)
    pids, lines = [], []
    deadline = time.monotonic() + 60
    while len(pids) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "started" in line and "pid" in line:
            pids.append(int(line.rsplit("pid", 1)[1].strip(" )\n")))
    assert len(pids) == 2, "".join(lines)
    # let the nodes finish starting: each has subscribed to its control/tick, the last step
    # of its construction, right before it spins
    monkeypatch.setenv("ROS_DOMAIN_ID", str(fresh_domain))
    with GraphMonitor([], node_name="runner_test_monitor") as mon:
        assert mon.wait_for(lambda: all(mon.subscribers(f"/env{i}/control/tick") == 1 for i in (0, 1)), 60), \
            "".join(lines)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + out
    assert "died" not in out
    assert not any(_alive(pid) for pid in pids)


def test_a_dying_node_is_reported_and_the_rest_shut_down(tmp_path, fresh_domain):
    path = _graph(tmp_path, kind_env1="bogus")
    proc = subprocess.run([LRM_ROS, "up", str(path), "num_envs:=3", "--domain-id",
                           str(fresh_domain), "--duration", "60"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "broken died (exit code 2)" in proc.stdout
    assert "kind must be one of" in proc.stdout            # the node's own reason
    assert "shutting the other nodes down" in proc.stdout


def test_unknown_launch_argument_is_a_clear_error(tmp_path):
    proc = subprocess.run([LRM_ROS, "up", "sim", "num_env:=2"], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown launch argument" in proc.stderr and "num_envs" in proc.stderr


def test_show_prints_the_node_command_lines(tmp_path):
    proc = subprocess.run([LRM_ROS, "show", "sim", "num_envs:=2", "policy:=none", "reward:=none"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4
    assert sum("__ns:=/env1" in l for l in lines) == 2
    assert all("--params-file" in l for l in lines)


def test_a_killed_node_is_reported_and_its_shared_memory_removed(tmp_path, fresh_domain):
    from lrm_ros.bringup.graph import load_graph as _load
    from lrm_ros.bringup.runner import stale_shm
    from lrm_ros.ros.env import ros_environment
    specs = resolve(_load(str(_graph(tmp_path))), {})
    log = tmp_path / "nodes.log"
    with open(log, "w") as out:
        runner = GraphRunner(specs, env=ros_environment(domain_id=fresh_domain), output=out)
        runner.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(
                    p.popen.pid and Path(f"/proc/{p.popen.pid}/maps").read_text().count("/dev/shm/fast")
                    for p in runner.procs if p.popen.poll() is None):
                time.sleep(0.2)
            victim = runner.procs[0]
            os.kill(victim.popen.pid, signal.SIGKILL)
            code = runner.run_until_exit(duration_s=30)
        finally:
            runner.stop()
    assert code == 1
    text = log.read_text()
    assert f"{victim.spec.label} died (signal 9)" in text
    assert runner.procs[1].popen.returncode == 0          # the other one shut down cleanly
    assert stale_shm() == []


def test_a_reward_node_without_its_model_stops_at_start_up_naming_the_parameter(tmp_path, fresh_domain):
    graph = {"nodes": [{"executable": "reward_model", "name": "reward_model",
                        "parameters": [{"backend": "vlm", "model_path": str(tmp_path / "nowhere")}]}]}
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(graph))
    proc = subprocess.run([LRM_ROS, "up", str(path), "--domain-id", str(fresh_domain),
                           "--duration", "120"], capture_output=True, text=True, timeout=180,
                          cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "reward_model died (exit code 2)" in proc.stdout
    assert "model_path" in proc.stdout and "nowhere" in proc.stdout


def test_lrm_ros_demos_passes_its_options_through(tmp_path):
    proc = subprocess.run([LRM_ROS, "demos", "-n", "1", "--tasks", "NoSuchTask-v1", "--out",
                           str(tmp_path / "d")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "NoSuchTask-v1" in proc.stderr, proc.stdout + proc.stderr


def test_a_node_that_does_not_stop_on_sigint_is_an_unclean_exit(tmp_path, fresh_domain):
    """A node still running after the SIGINT timeout is escalated (SIGTERM) and the run
    fails: `lrm-ros up` exits 1, like a node that died."""
    from lrm_ros.bringup.graph import NodeSpec
    from lrm_ros.ros.env import ros_environment
    # the prefix replaces the node by a shell that ignores SIGINT (a hung node)
    spec = NodeSpec(package="lrm_ros", executable="scripted_policy", name="stubborn", namespace="",
                    prefix="bash -c 'trap \"\" INT; echo STARTED; while true; do sleep 0.1; done' --")
    out = (tmp_path / "out.log").open("w")
    runner = GraphRunner([spec], env=ros_environment(domain_id=fresh_domain), output=out,
                         shutdown_timeout_s=1.0).start()
    deadline = time.monotonic() + 30
    while "STARTED" not in (tmp_path / "out.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    code = runner.run_until_exit(duration_s=0.1)
    out.close()
    text = (tmp_path / "out.log").read_text()
    assert code == 1, text
    assert "still running after SIGINT" in text and "exited uncleanly after the stop" in text
    assert "{'stubborn': -15}" in text, text          # ended by the SIGTERM escalation


def test_a_node_with_respawn_is_restarted_after_kill_9(tmp_path, fresh_domain):
    graph = {"arguments": {"respawn": {"default": "true"}},
             "nodes": [{"executable": "scripted_policy", "name": "policy", "respawn": "$(arg respawn)",
                        "respawn_delay": 0.5, "parameters": [{"kind": "random"}]}]}
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(graph))
    from lrm_ros.ros.env import ros_environment
    out = (tmp_path / "out.log").open("w")
    runner = GraphRunner(resolve(load_graph(str(path))), env=ros_environment(domain_id=fresh_domain),
                         output=out).start()
    try:
        first = runner.procs[0].popen.pid
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while runner.procs[0].popen.pid == first and time.monotonic() < deadline:
            runner.respawn()
            time.sleep(0.05)
        assert runner.procs[0].popen.pid != first and runner.procs[0].restarts == 1
        assert runner.dead() == []                       # a respawning node is not reported dead
        code = runner.run_until_exit(duration_s=3.0)     # the restarted node runs, then stops cleanly
    finally:
        runner.stop()
        out.close()
    text = (tmp_path / "out.log").read_text()
    assert code == 0, text
    assert "policy died (signal 9)" in text and "respawning policy in 0.5 s (restart 1)" in text


def test_launch_passes_respawn_through():
    from lrm_ros.bringup.launch_support import resolve_for_launch
    kw = {k["name"]: k for k in resolve_for_launch("sim", {"respawn": "true", "num_envs": "1"})}
    assert kw["reward_model"]["respawn"] is True and kw["reward_model"]["respawn_delay"] == 2.0
    assert "respawn" not in kw["maniskill_bridge"]
    kw = {k["name"]: k for k in resolve_for_launch("sim", {"num_envs": "1"})}
    assert "respawn" not in kw["reward_model"]


def test_a_respawning_node_that_cannot_start_is_reported_not_restarted_forever(tmp_path, fresh_domain):
    graph = {"nodes": [{"executable": "scripted_policy", "name": "broken", "respawn": True,
                        "respawn_delay": 0.2, "parameters": [{"kind": "bogus"}]}]}
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(graph))
    proc = subprocess.run([LRM_ROS, "up", str(path), "--domain-id", str(fresh_domain), "--duration", "60"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "broken died (exit code 2)" in proc.stdout and "respawning broken" not in proc.stdout
