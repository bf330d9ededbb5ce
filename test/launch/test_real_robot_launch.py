"""launch_testing of launch/real_robot.launch.py on a real ROS 2 install (Jazzy/Kilted).

The scenario of the pip-only test (test/test_graph_robot.py), brought up the ROS way:
`real_robot.launch.py robot_params:=<test robot file> policy:=none reward:=none` starts
robot_bridge and camera_ingest in /env0. This test is the robot's drivers (camera, joint
states) and the policy (commands through the monitor); it starts an episode with the operator
service, checks that ticks flow with frames at model resolution, that commands reach the
controller topic clipped, and that a pause stops them; after shutdown, that every node exited
by itself (exit code 0, no SIGTERM escalation) without a traceback.

Run by `colcon test` or `launch_test` on this file; skipped where launch_testing/launch_ros
are not installed (pip-only set-up).
"""
import pytest

pytest.importorskip("launch_testing")
pytest.importorskip("launch_ros")
pytest.importorskip("rclpy")

import signal  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402
from pathlib import Path  # noqa: E402

import launch  # noqa: E402
import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import numpy as np  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

from lrm_ros.ros.env import apply_ros_environment  # noqa: E402

NS = "env0"
ROBOT_FILE = """/**:
  ros__parameters:
    control_rate_hz: 5.0
    action_dim: 7
    adapter: forward_command
    command_topic: /launch_test_controller/commands
    action_low: [-0.5]
    action_high: [0.5]
    camera_topic: /launch_test_camera/image_raw
    joint_states_topic: /launch_test/joint_states
"""
ROBOT_PATH = Path(tempfile.mkdtemp()) / "robot.yaml"
ROBOT_PATH.write_text(ROBOT_FILE)
apply_ros_environment()


def _launch_file() -> Path:
    for directory in (Path(__file__).resolve().parents[2] / "launch",):
        if (directory / "real_robot.launch.py").is_file():
            return directory / "real_robot.launch.py"
    from lrm_ros.paths import share_dir
    return share_dir() / "launch" / "real_robot.launch.py"


@pytest.mark.launch_test
def generate_test_description():
    robot = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(_launch_file())),
        launch_arguments={"robot_params": str(ROBOT_PATH), "policy": "none", "reward": "none"}.items())
    return launch.LaunchDescription([robot, launch_testing.actions.ReadyToTest()])


class TestRealRobotGraph(unittest.TestCase):
    def test_operator_episode_commands_and_pause(self, proc_info):
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, Float64MultiArray
        from std_srvs.srv import Trigger
        from lrm_ros.ros.image_msgs import rgb_to_image_msg
        from lrm_ros.ros.monitor import GraphMonitor
        from lrm_ros.ros.qos import LATCHED, RELIABLE, SENSOR
        with GraphMonitor([NS], node_name="real_robot_launch_test") as mon:
            got = []
            mon.node.create_subscription(Float64MultiArray, "/launch_test_controller/commands",
                                         lambda m: got.append(list(m.data)), RELIABLE)
            cam = mon.node.create_publisher(Image, "/launch_test_camera/image_raw", SENSOR)
            js = mon.node.create_publisher(JointState, "/launch_test/joint_states", SENSOR)
            stop = threading.Event()

            def drivers():
                frame = np.full((240, 320, 3), 128, np.uint8)
                while not stop.is_set():
                    img = rgb_to_image_msg(frame)
                    img.header.stamp = mon.node.get_clock().now().to_msg()
                    cam.publish(img)
                    j = JointState(name=[f"j{i}" for i in range(9)], position=[0.0] * 9)
                    j.header.stamp = img.header.stamp
                    js.publish(j)
                    time.sleep(0.05)

            threading.Thread(target=drivers, daemon=True).start()
            try:
                client = mon.node.create_client(Trigger, f"/{NS}/episode/start")
                self.assertTrue(client.wait_for_service(timeout_sec=120))
                future = client.call_async(Trigger.Request())
                self.assertTrue(mon.wait_for(lambda: future.done(), 20))
                self.assertTrue(future.result().success)
                rec = mon.records[NS]
                self.assertTrue(mon.wait_for(lambda: len(rec.ticks) >= 3 and len(rec.frames) >= 3, 30))
                self.assertTrue(all(f.width == 224 and f.height == 224 for f in rec.frames))
                mon.send_command(NS, [2.0] * 7)
                self.assertTrue(mon.wait_for(lambda: bool(got), 10))
                self.assertEqual(got[-1], [0.5] * 7)            # clipped
                pause = mon.node.create_publisher(Bool, f"/{NS}/safety/pause", LATCHED)
                pause.publish(Bool(data=True))
                self.assertTrue(mon.wait_for(lambda: got[-1] == [0.0] * 7, 10))   # the stop command
                n = len(got)
                refused = lambda: int(mon.node_diagnostics(f"/{NS}/robot_bridge").get("refused_paused", 0))  # noqa: E731
                before = refused()
                mon.send_command(NS, [0.1] * 7)
                # the bridge has handled the command once its diagnostics count it as refused
                self.assertTrue(mon.wait_for(lambda: refused() > before, 10), mon.node_diagnostics(f"/{NS}/robot_bridge"))
                self.assertEqual(len(got), n)                    # nothing passes while paused
            finally:
                stop.set()


# --- after shutdown ---------------------------------------------------------------------

@launch_testing.post_shutdown_test()
class TestRealRobotGraphShutdown(unittest.TestCase):

    def test_exit_codes(self, proc_info):
        # ros2 launch sends SIGINT and escalates to SIGTERM after 5 s: every node must have
        # exited by itself (run_node: 0; -SIGINT when the signal came before its handlers).
        launch_testing.asserts.assertExitCodes(
            proc_info, allowable_exit_codes=[launch_testing.asserts.EXIT_OK, -signal.SIGINT])
        names = " ".join(proc_info.process_names())
        for node in ("robot_bridge", "camera_ingest"):
            self.assertIn(node, names)

    def test_no_tracebacks_in_node_output(self, proc_output):
        for event in proc_output:
            text = event.text.decode(errors="replace")
            self.assertNotIn("Traceback (most recent call last)", text,
                             f"{event.process_name}: {text[-2000:]}")
