"""`lrm-ros demo` (what `make demo` runs), shrunk: 1 environment, 6-tick episodes, one
filtered-BC iteration of 2 episodes, 2 evaluation episodes before and after. Real processes throughout."""
import json
import os
import subprocess
import sys
from pathlib import Path

LRM_ROS = str(Path(sys.executable).with_name("lrm-ros"))


def test_demo_runs_the_whole_pipeline_and_reports_it(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ)
    env.pop("ROS_DOMAIN_ID", None)
    proc = subprocess.run([LRM_ROS, "demo", "num_envs:=1", "max_episode_ticks:=6", "reward_interval:=3",
                           "--iterations", "1", "--episodes-per-iteration", "2", "--eval-episodes", "2",
                           "--out", str(out), "--timeout", "300"],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "IL policy" in proc.stdout and "after 1 filtered BC iter." in proc.stdout
    assert report_learning(out) == "filtered BC iterations (successes labelled by the simulator's success)"
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "PushCube-v1"
    for phase in ("before", "after"):
        r = report[phase]
        assert r["episodes"] == 2 and 0 <= r["successes"] <= 2
        assert r["ci95"][0] <= r["success_rate"] <= r["ci95"][1]
        assert len(report["traces"][phase]) == 2
        assert all(t["held"] and t["oracle"] for t in report["traces"][phase])
    (it,) = report["iterations"]
    assert it["iteration"] == 1 and it["version"] == 1 and it["episodes"] == 2
    # the simulator labelled the rollouts: 6-tick episodes cannot push the cube home
    assert it["env_success_rate"] == 0.0 and it["episodes_selected"] == 0
    assert Path(report["final_checkpoint"]).is_file()
    html = (out / "report.html").read_text()
    for png in ("success_before_after.png", "reward_over_iterations.png", "reward_traces_before.png",
                "reward_traces_after.png"):
        assert (out / png).stat().st_size > 1000 and png in html


def report_learning(out):
    return json.loads((out / "report.json").read_text())["learning"]


def test_fallback_driven_episodes_are_found_per_env():
    """The demo refuses to count evaluation episodes the bridge drove with its fallback
    command (ControlTick.fallback_count > 0 on any of their ticks)."""
    from types import SimpleNamespace
    import pytest
    from lrm_ros.demo import PhaseError, _check_no_fallbacks, fallback_episodes
    from lrm_ros.ros.monitor import EnvRecord, TickRecord

    def ticks(episode, n, fallbacks=0):
        return [TickRecord(episode=episode, tick=t, start=t == 0, end=t == n, reason=2 if t == n else 0,
                           fallbacks=fallbacks if t >= 2 else 0, t_recv=0.0, stamp_ns=t)
                for t in range(n + 1)]

    clean, bad = EnvRecord(), EnvRecord()
    clean.ticks = ticks(0, 4) + ticks(1, 4)
    bad.ticks = ticks(0, 4) + ticks(1, 4, fallbacks=3) + ticks(2, 3)[:2]     # episode 2 runs on
    mon = SimpleNamespace(records={"env0": clean, "env1": bad}, node_diagnostics=lambda name: {})
    assert fallback_episodes(mon, ["env0", "env1"]) == {"env1": [(1, 3)]}
    assert fallback_episodes(mon, ["env0", "env1"], per_env=1) == {}        # only episode 0 counted
    _check_no_fallbacks(mon, ["env0", "env1"], 1, "eval")
    with pytest.raises(PhaseError, match="env1 episode 1: 3 tick") as err:
        _check_no_fallbacks(mon, ["env0", "env1"], 2, "eval")
    # and says what the silent policy last reported, so the cause can be found
    assert "env1/policy: no /diagnostics received; last policy/step: none" in str(err.value)


def test_evaluation_episodes_must_all_run_the_policy_under_test():
    """A checkpoint swapped in mid-evaluation (a learner left running) makes the figure describe
    another policy: the demo stops and says which versions ran."""
    from types import SimpleNamespace
    import pytest
    from lrm_ros.demo import PhaseError, _check_policy_version
    from lrm_ros.ros.monitor import EnvRecord, PolicyStepRecord, TickRecord

    def episode(e, version, n=3):
        ticks = [TickRecord(episode=e, tick=t, start=t == 0, end=t == n, reason=2 if t == n else 0,
                            fallbacks=0, t_recv=0.0, stamp_ns=t) for t in range(n + 1)]
        steps = [PolicyStepRecord(episode=e, tick=t, policy_version=version, deterministic=True,
                                  n_features=4) for t in range(n)]
        return ticks, steps

    rec = EnvRecord()
    for e, v in ((0, 2), (1, 2), (2, 3)):           # the learner's version 3 arrived for episode 2
        ticks, steps = episode(e, v)
        rec.ticks += ticks
        rec.policy_steps += steps
    mon = SimpleNamespace(records={"env0": rec})
    _check_policy_version(mon, ["env0"], 2, 2, "eval")            # episodes 0-1 are counted
    with pytest.raises(PhaseError, match=r"ran policy version\(s\) \[2, 3\], not only version 2"):
        _check_policy_version(mon, ["env0"], 3, 2, "eval")
    with pytest.raises(PhaseError, match=r"version\(s\) \[2\], not only version 0"):
        _check_policy_version(mon, ["env0"], 2, 0, "eval")


def test_each_bring_up_gets_its_own_domain():
    """One process bringing graphs up one after another (the demo's three phases, benches)
    takes a fresh DDS domain each time, among the ids whose ports lie below Linux's ephemeral
    range, and never the one it is told to avoid (the test process's own)."""
    from lrm_ros.ros.env import SAFE_DOMAINS, fresh_domain_id
    ids = [fresh_domain_id() for _ in range(3)]
    assert len(set(ids)) == 3 and all(1 <= d <= 101 for d in ids)
    assert all(7400 + 250 * d + 10 + 2 * 31 < 32768 for d in SAFE_DOMAINS)   # participant 31's port
    avoid = fresh_domain_id()
    assert avoid not in [fresh_domain_id(avoid=avoid) for _ in range(2 * len(SAFE_DOMAINS))]
