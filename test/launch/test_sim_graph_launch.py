"""launch_testing of launch/sim.launch.py on a real ROS 2 install (Jazzy/Kilted).

The scenario of the pip-only graph test (test/test_graph_sim.py), brought up the ROS way:
`sim.launch.py policy:=none num_envs:=1 max_episode_ticks:=20` starts maniskill_bridge and
camera_ingest in /env0 and this test acts as the policy through GraphMonitor. It checks
frames (224x224 rgb8), lockstep ticking, driving through an episode's time limit, the reset
service, that a malformed command and a malformed image are dropped and counted on
/diagnostics while every process stays alive, and finally the exit codes.

Run by `colcon test` (pytest with the launch_testing plugin) or `launch_test` on this file.
Where launch_testing/launch_ros are not installed (pip-only set-up) the module is skipped.
"""
import pytest

pytest.importorskip("launch_testing")
pytest.importorskip("launch_ros")
pytest.importorskip("rclpy")

import array  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402
from pathlib import Path  # noqa: E402

import launch  # noqa: E402
from launch.actions import IncludeLaunchDescription, SetLaunchConfiguration  # noqa: E402
from launch.events.process import ProcessExited  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402

from lrm_ros.common.episode_end import END_SUCCESS, END_TIME_LIMIT  # noqa: E402
from lrm_ros.ros.env import apply_ros_environment  # noqa: E402

NS = "env0"
MAX_TICKS = 20
IMAGE_SIZE = 224          # the graph's default image_size
ACTION_DIM = 7            # PickCube-v1 with pd_ee_delta_pose (the graph's defaults)
STARTUP_S = 240.0         # ManiSkill/SAPIEN start-up, first render
STEP_S = 20.0             # one simulated tick, generously
QUIET_S = 0.5             # < the bridge's command_timeout_s (2.0): no tick without a command
DIAG_S = 15.0             # diagnostics come every second
LAUNCH_ARGUMENTS = {"policy": "none", "num_envs": "1", "max_episode_ticks": str(MAX_TICKS)}
NODES = ("maniskill_bridge", "camera_ingest")

# Same ROS variables as the nodes give themselves (lrm_ros.nodes.runtime): discovery kept on
# this machine, the FastDDS profile. Set before the launch service starts the processes,
# which inherit them; nothing the user has set is overridden.
apply_ros_environment()


def _sim_launch_file() -> Path:
    """The installed launch file (colcon: <prefix>/share/lrm_ros/launch), else the source."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory("lrm_ros")) / "launch")
    except (ImportError, LookupError):
        pass
    try:
        from lrm_ros.paths import share_dir
        candidates.append(share_dir() / "launch")
    except FileNotFoundError:
        pass
    candidates.append(Path(__file__).resolve().parents[2] / "launch")
    for directory in candidates:
        if (directory / "sim.launch.py").is_file():
            return directory / "sim.launch.py"
    raise FileNotFoundError(f"sim.launch.py not found in {[str(c) for c in candidates]}")


@pytest.mark.launch_test
def generate_test_description():
    sim = IncludeLaunchDescription(PythonLaunchDescriptionSource(str(_sim_launch_file())),
                                   launch_arguments=LAUNCH_ARGUMENTS.items())
    return launch.LaunchDescription([
        # The bridge closes its simulator on SIGINT; give it time before SIGTERM.
        SetLaunchConfiguration("sigterm_timeout", "20"),
        sim,
        launch_testing.actions.ReadyToTest(),
    ])


# --- helpers -----------------------------------------------------------------------------

class _Driver:
    """Acts as the policy from the monitor's own thread: one command per tick while on."""

    def __init__(self):
        self.monitor = None
        self.enabled = False
        self.sent = 0

    def on_tick(self, ns, msg) -> None:
        if self.enabled and self.monitor is not None and not msg.episode_end:
            self.monitor.send_command(ns, [0.0] * ACTION_DIM)
            self.sent += 1


def _exited(proc_info):
    return [(event.process_name, event.returncode) for event in list(proc_info)
            if isinstance(event, ProcessExited)]


# --- while the graph runs ---------------------------------------------------------------

class TestSimGraph(unittest.TestCase):
    """Active tests, in name order (unittest sorts them), against one running graph."""

    @classmethod
    def setUpClass(cls):
        from lrm_ros.ros.monitor import GraphMonitor
        cls.driver = _Driver()
        cls.mon = GraphMonitor([NS], on_tick=cls.driver.on_tick,
                               node_name="sim_launch_test_monitor")
        cls.driver.monitor = cls.mon

    @classmethod
    def tearDownClass(cls):
        cls.driver.enabled = False
        cls.mon.close()

    # helpers using the monitor
    def _ticks(self):
        return self.mon.records[NS].ticks

    def _wait(self, predicate, timeout, what):
        self.assertTrue(self.mon.wait_for(predicate, timeout), what)

    def _assert_alive(self, proc_info):
        self.assertEqual(_exited(proc_info), [], "a node of the graph exited")

    def _settle(self):
        """Wait for a fresh tick that expects a command (a tick just published: the bridge's
        command timeout is far away), waiting out an episode end's automatic reset."""
        n = len(self._ticks())
        self._wait(lambda: len(self._ticks()) > n, STEP_S, "the bridge stopped ticking")
        if self._ticks()[-1].end:  # episode_end: the next episode's tick 0 comes by itself
            episode = self._ticks()[-1].episode
            self._wait(lambda: self._ticks()[-1].episode > episode, STEP_S,
                       "no new episode after an episode end")

    def _step(self):
        """One command -> exactly one tick, the successor of the last one."""
        last = self._ticks()[-1]
        n = len(self._ticks())
        self.mon.send_command(NS, [0.0] * ACTION_DIM)
        self._wait(lambda: len(self._ticks()) > n, STEP_S, "no tick after a command")
        new = self._ticks()[n]
        self.assertEqual((new.episode, new.tick), (last.episode, last.tick + 1),
                         f"tick {(new.episode, new.tick)} does not follow {(last.episode, last.tick)}")
        self.assertEqual(new.fallbacks, last.fallbacks, "a fallback was used although a command was sent")
        if not new.end:
            self.assertFalse(self.mon.wait_for(lambda: len(self._ticks()) > n + 1, QUIET_S),
                             "lockstep: a tick without a command")
        return new

    def _diag(self, node, key):
        values = self.mon.node_diagnostics(f"/{NS}/{node}")
        return int(values[key]) if key in values else None

    def _wait_diag(self, node, key, above):
        self._wait(lambda: (self._diag(node, key) or 0) > above, DIAG_S,
                   f"/{NS}/{node} diagnostics {key} never went above {above}: "
                   f"{self.mon.node_diagnostics(f'/{NS}/{node}')}")

    # tests
    def test_1_graph_comes_up_with_the_nodes_of_the_graph(self, proc_info):
        rec = self.mon.records[NS]
        self._wait(lambda: len(rec.ticks) >= 1 and rec.instruction is not None, STARTUP_S,
                   f"no /{NS}/control/tick and task/instruction within {STARTUP_S} s")
        self._wait(lambda: len(rec.frames) >= 1, STEP_S, f"no /{NS}/camera/frame")
        names = " ".join(proc_info.process_names())
        for node in NODES:
            self.assertIn(node, names)
        self.assertNotIn("scripted_policy", names, "policy:=none must start no policy")
        first = rec.ticks[0]
        self.assertEqual(first.episode, 0, "the first tick seen is not of episode 0")
        self._assert_alive(proc_info)

    def test_2_frames_are_model_size_rgb8_with_the_tick_stamps(self, proc_info):
        rec = self.mon.records[NS]
        self._settle()
        stamp = self._ticks()[-1].stamp_ns
        self._wait(lambda: any(f.stamp_ns == stamp for f in rec.frames), STEP_S,
                   "the frame of the last tick did not arrive")
        for _, width, height, encoding, _ in rec.frames:
            self.assertEqual((width, height, encoding), (IMAGE_SIZE, IMAGE_SIZE, "rgb8"))
        self.assertGreater(rec.camera_infos, 0)
        self.assertGreater(rec.joint_states, 0)

    def test_3_lockstep_one_tick_per_command(self, proc_info):
        self._settle()
        for _ in range(5):
            if self._ticks()[-1].end:
                self._settle()
            self._step()
        self._assert_alive(proc_info)

    def test_4_driving_every_tick_reaches_the_time_limit_and_auto_resets(self, proc_info):
        self._settle()
        start = len(self._ticks())
        episode = self._ticks()[-1].episode
        self.driver.enabled = True
        try:
            self.mon.send_command(NS, [0.0] * ACTION_DIM)  # for the tick already waiting
            self._wait(lambda: any(t.episode > episode + 1 or (t.episode == episode + 1 and t.tick >= 2)
                                   for t in self._ticks()[start:]),
                       STEP_S * (MAX_TICKS + 4), "driving never reached the next episode")
        finally:
            self.driver.enabled = False
            # Up to now: later ticks come from the command timeout (counted as fallbacks).
            driven = list(self._ticks()[start - 1:])
        ended = [t for t in driven if t.episode == episode and t.end]
        self.assertTrue(ended, "the driven episode never ended")
        self.assertIn(ended[0].reason, (END_SUCCESS, END_TIME_LIMIT), "end reason: success or time limit")
        if ended[0].reason == END_TIME_LIMIT:  # max_episode_ticks:=20 reached the bridge
            self.assertEqual(ended[0].tick, MAX_TICKS)
        for prev, new in zip(driven, driven[1:]):
            if new.episode == prev.episode:
                self.assertEqual(new.tick, prev.tick + 1,
                                 f"{(prev.episode, prev.tick)} -> {(new.episode, new.tick)}")
                self.assertEqual(new.fallbacks, prev.fallbacks, "fallback used while a command came per tick")
            else:
                self.assertTrue(prev.end, "new episode without an episode end")
                self.assertEqual((new.tick, new.start), (0, True))
        self._assert_alive(proc_info)

    def test_5_reset_service_starts_a_new_episode_at_tick_0(self, proc_info):
        self._settle()
        self._step()
        episode = self._ticks()[-1].episode
        response = self.mon.reset(NS, timeout_s=60.0)
        self.assertTrue(response.success, response.message)
        self._wait(lambda: any(t.episode > episode for t in self._ticks()), STEP_S,
                   "no tick of a new episode after the reset")
        new = [t for t in self._ticks() if t.episode == episode + 1]
        self.assertEqual((new[0].tick, new[0].start, new[0].end), (0, True, False))
        ended = [t for t in self._ticks() if t.episode == episode and t.end]
        self.assertTrue(ended and ended[-1].reason in (2, 3), "old episode has no end tick")
        self._step()                                   # and it steps on from tick 0
        self._assert_alive(proc_info)

    def test_6_wrong_size_command_is_rejected_and_counted(self, proc_info):
        key = "commands_rejected_size"
        self._wait(lambda: self._diag("maniskill_bridge", key) is not None, DIAG_S,
                   "no /diagnostics from the bridge")
        before = self._diag("maniskill_bridge", key)
        self._settle()
        last = self._ticks()[-1]
        self.mon.send_command(NS, [0.0, 0.0, 0.0])
        self._wait_diag("maniskill_bridge", key, before)
        # The rejected command did not step the simulation (a timeout may have, with the
        # fallback, if the diagnostics took long: then it counts as a fallback).
        later = [t for t in self._ticks() if t.episode == last.episode and t.tick > last.tick]
        for t in later:
            self.assertGreater(t.fallbacks, last.fallbacks, "a tick without a fallback after a bad command")
        self._settle()
        self._step()                                   # still stepping
        self._assert_alive(proc_info)

    def test_7_malformed_image_is_dropped_and_counted(self, proc_info):
        from sensor_msgs.msg import Image
        key = "dropped_size_mismatch"
        self._wait(lambda: self._diag("camera_ingest", key) is not None
                   or self.mon.node_diagnostics(f"/{NS}/camera_ingest"), DIAG_S,
                   "no /diagnostics from camera_ingest")
        before = self._diag("camera_ingest", key) or 0
        # The monitor's own subscription counts too: wait for camera_ingest's as well.
        self._wait(lambda: self.mon.subscribers(f"/{NS}/camera/image_raw") >= 2, STEP_S,
                   "camera_ingest does not subscribe camera/image_raw")
        bad = Image(height=10, width=10, encoding="rgb8", step=30)  # needs 300 bytes
        data = array.array("B")
        data.frombytes(bytes(100))
        bad.data = data
        bad.header.frame_id = "malformed_by_test"
        for _ in range(5):                             # best effort QoS: send a few
            self.mon.publish_raw_image(NS, bad)
            time.sleep(0.1)
        self._wait_diag("camera_ingest", key, before)
        # Good images still go through.
        frames = len(self.mon.records[NS].frames)
        self._settle()
        self._step()
        self._wait(lambda: len(self.mon.records[NS].frames) > frames, STEP_S,
                   "camera_ingest stopped converting frames after a malformed image")
        self.assertFalse([f for f in self.mon.records[NS].frames[frames:]
                          if (f.width, f.height) != (IMAGE_SIZE, IMAGE_SIZE)])
        self._assert_alive(proc_info)

    def test_8_all_processes_still_alive(self, proc_info):
        time.sleep(1.0)
        self._assert_alive(proc_info)
        names = " ".join(proc_info.process_names())
        for node in NODES:
            self.assertIn(node, names)


# --- after shutdown ---------------------------------------------------------------------

@launch_testing.post_shutdown_test()
class TestSimGraphShutdown(unittest.TestCase):

    def test_exit_codes(self, proc_info):
        # run_node() returns 0 after SIGINT (rclpy's handler); -SIGINT for a process the
        # signal reached before rclpy was initialised. Anything else (SIGTERM/SIGKILL
        # escalation, 1: the stepping thread failed, 2: could not start) is a failure.
        launch_testing.asserts.assertExitCodes(
            proc_info, allowable_exit_codes=[launch_testing.asserts.EXIT_OK, -signal.SIGINT])
        names = " ".join(proc_info.process_names())
        for node in NODES:
            self.assertIn(node, names)

    def test_no_tracebacks_in_node_output(self, proc_output):
        for event in proc_output:
            text = event.text.decode(errors="replace")
            self.assertNotIn("Traceback (most recent call last)", text,
                             f"{event.process_name}: {text[-2000:]}")
