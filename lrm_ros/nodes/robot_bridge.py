"""robot_bridge: the tick source and command gate on hardware (`real_robot.launch.py`).

Each control tick (a wall-clock timer at `control_rate_hz`) it republishes the newest camera
image and joint state from the robot's drivers under this namespace with the tick's stamp
(`camera/image_raw` or `camera/image_raw/compressed`, `joint_states`), then `control/tick`,
exactly as maniskill_bridge does in simulation, so the rest of the graph is unchanged.
Commands from `policy/command` pass the safety filter (clipping, rate limits, pause) and go
to the robot's controller as Float64MultiArray, JointTrajectory or TwistStamped.
Operator services: `episode/start`, `episode/stop`, `episode/reset`, `episode/mark_success`,
`episode/mark_failure`; `safety/pause` (std_msgs/Bool, latched) stops commands at once.
"""
import copy
import time

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from lrm_ros.msg import ControlTick, HeldReward
from lrm_ros.nodes.runtime import run_node
from lrm_ros.robot.bridge import CommandAdapter, EpisodeControl, RobotConfig, SafetyFilter
from lrm_ros.ros.diagnostics import DiagnosticsPublisher
from lrm_ros.ros.params import declare_config
from lrm_ros.ros.qos import LATCHED, RELIABLE, SENSOR


class RobotBridgeNode(Node):
    def __init__(self, **kwargs):
        super().__init__("robot_bridge", **kwargs)
        self.config = cfg = declare_config(self, RobotConfig)
        self.safety = SafetyFilter(cfg)
        self.adapter = CommandAdapter(cfg)
        self.control = EpisodeControl(cfg)
        self.compressed = cfg.camera_topic.rstrip("/").endswith("compressed")
        self.image = None            # (msg, receive time)
        self.joints = None
        self.counters = {"ticks": 0, "ticks_skipped_stale_observation": 0, "commands_sent": 0,
                         "commands_refused": 0, "images": 0, "joint_states": 0}
        img_type = CompressedImage if self.compressed else Image
        self.pub_image = self.create_publisher(
            img_type, "camera/image_raw/compressed" if self.compressed else "camera/image_raw", SENSOR)
        self.pub_joints = self.create_publisher(JointState, "joint_states", RELIABLE)
        self.pub_tick = self.create_publisher(ControlTick, "control/tick", RELIABLE)
        self.pub_instruction = self.create_publisher(String, "task/instruction", LATCHED)
        self.pub_status = self.create_publisher(String, "robot/status", LATCHED)
        msg_type = {"forward_command": Float64MultiArray, "joint_trajectory": JointTrajectory,
                    "twist": TwistStamped}[cfg.adapter]
        self.pub_cmd = self.create_publisher(msg_type, cfg.command_topic, RELIABLE)
        self.pub_gripper = (self.create_publisher(Float64MultiArray, cfg.gripper_topic, RELIABLE)
                            if cfg.gripper_index >= 0 else None)
        self.create_subscription(img_type, cfg.camera_topic, self._on_image, SENSOR)
        self.create_subscription(JointState, cfg.joint_states_topic, self._on_joints, SENSOR)
        self.create_subscription(Float64MultiArray, "policy/command", self._on_command, RELIABLE)
        self.create_subscription(Bool, "safety/pause", self._on_pause, LATCHED)
        self.create_subscription(HeldReward, "reward/held", self._on_held, RELIABLE)
        for name, fn in (("start", self.control.start), ("stop", self.control.stop),
                         ("reset", self.control.reset), ("mark_success", self.control.mark_success),
                         ("mark_failure", self.control.mark_failure)):
            self.create_service(Trigger, f"episode/{name}", lambda req, res, fn=fn: self._service(fn, res))
        if cfg.instruction:
            self.pub_instruction.publish(String(data=cfg.instruction))
        self.create_timer(cfg.period_s, self._on_timer)
        self.readiness = None
        names = [n for n in cfg.wait_for_nodes if n]
        if names:
            from lrm_ros.common.readiness import RequiredNodes
            from lrm_ros.ros.readiness import NodeReadinessProbe
            self.readiness = (NodeReadinessProbe(self, names, self.pub_tick.topic_name),
                              RequiredNodes(names, timeout_s=60.0))
            self.control.set_not_ready(self.readiness[1].describe())
            self._was_ready = False
            self.create_timer(0.25, self._check_ready)
        self.diagnostics = DiagnosticsPublisher(self, self._counters)
        self._status(f"ready: {cfg.control_rate_hz} Hz, {cfg.adapter} on {cfg.command_topic}"
                     + (f", gripper (action[{cfg.gripper_index}]) on {cfg.gripper_topic}"
                        if cfg.gripper_index >= 0 else "") + "; "
                     + ("episodes start by themselves" if cfg.auto_start else "call episode/start"))

    # --- inputs ---------------------------------------------------------------------------
    def _status(self, text: str) -> None:
        self.get_logger().info(text)
        self.pub_status.publish(String(data=text))

    def _on_image(self, msg) -> None:
        self.image = (msg, time.monotonic())
        self.counters["images"] += 1

    def _on_joints(self, msg: JointState) -> None:
        self.joints = (msg, time.monotonic())
        self.counters["joint_states"] += 1

    def _joint_view(self):
        """(names, positions, velocities) in the configured order, or Nones; velocities are
        empty when the driver sends none."""
        if self.joints is None:
            return None, None, None
        msg = self.joints[0]
        names = list(self.config.joint_names) or list(msg.name)
        index = {n: i for i, n in enumerate(msg.name)}
        missing = [n for n in names if n not in index]
        if missing:
            self.get_logger().error(f"joint_states lacks {missing}; set joint_names to the robot's joints",
                                    throttle_duration_sec=5.0)
            return None, None, None
        order = [index[n] for n in names]
        vel = [float(msg.velocity[i]) for i in order] if len(msg.velocity) == len(msg.name) else []
        return names, np.array([msg.position[i] for i in order]), vel

    def _on_held(self, msg: HeldReward) -> None:
        self.control.on_held(msg.episode, msg.completion, msg.stale)

    def _on_pause(self, msg: Bool) -> None:
        if self.safety.set_paused(msg.data):
            names, q, _ = self._joint_view()
            stop = self.adapter.stop(names or [], q)
            if stop is not None:
                self._send(stop)
        self._status("PAUSED: commands stopped" if msg.data else "resumed")

    def _service(self, fn, res):
        res.success, res.message = fn()
        self._status(res.message)
        return res

    def _check_ready(self) -> None:
        """Episodes start only while the policy and reward model are ready (wait_for_nodes);
        checked all along, so a node that dies or is deactivated blocks the next start."""
        probe, wait = self.readiness
        wait.update(probe.poll())
        self.control.set_not_ready(wait.describe())
        if wait.ready != self._was_ready:
            self._was_ready = wait.ready
            self._status("graph ready: episodes may start" if wait.ready
                         else f"graph not ready, episodes cannot start: {wait.describe()}")

    # --- commands -------------------------------------------------------------------------
    def _on_command(self, msg: Float64MultiArray) -> None:
        action, why = self.safety.filter(msg.data)
        if action is None:
            self.counters["commands_refused"] += 1
            if why != "paused":
                self.get_logger().warn(f"command refused: {why}", throttle_duration_sec=2.0)
            return
        names, q, _ = self._joint_view()
        try:
            self._send(self.adapter.command(action, names or [], q))
        except ValueError as exc:
            self.counters["commands_refused"] += 1
            self.get_logger().warn(f"command not sent: {exc}", throttle_duration_sec=2.0)

    def _send(self, cmd) -> None:
        if cmd.kind == "forward_command":
            out = Float64MultiArray(data=[float(v) for v in cmd.values])
        elif cmd.kind == "joint_trajectory":
            sec = int(cmd.duration_s)
            point = JointTrajectoryPoint(positions=[float(v) for v in cmd.values],
                                         time_from_start=Duration(sec=sec, nanosec=int((cmd.duration_s - sec) * 1e9)))
            out = JointTrajectory(joint_names=list(cmd.joint_names), points=[point])
            out.header.stamp = self.get_clock().now().to_msg()
        else:
            out = TwistStamped()
            out.header.stamp = self.get_clock().now().to_msg()
            out.header.frame_id = self.config.twist_frame
            out.twist.linear.x, out.twist.linear.y, out.twist.linear.z = map(float, cmd.linear)
            out.twist.angular.x, out.twist.angular.y, out.twist.angular.z = map(float, cmd.angular)
        self.pub_cmd.publish(out)
        self.counters["commands_sent"] += 1
        if cmd.gripper is not None and self.pub_gripper is not None:
            self.pub_gripper.publish(Float64MultiArray(data=[float(cmd.gripper)]))

    # --- ticks ----------------------------------------------------------------------------
    def _on_timer(self) -> None:
        now = time.monotonic()
        age = self.config.max_observation_age_s
        if self.control.will_tick:
            if self.image is None or self.joints is None or now - self.image[1] > age or now - self.joints[1] > age:
                self.counters["ticks_skipped_stale_observation"] += 1
                self.get_logger().warn("no fresh camera image or joint state: tick skipped (check "
                                       f"{self.config.camera_topic} and {self.config.joint_states_topic})",
                                       throttle_duration_sec=5.0)
                return
        tick = self.control.next_tick()
        if tick is None:
            return
        header = Header(stamp=self.get_clock().now().to_msg())
        img = copy.copy(self.image[0])
        img.header = Header(stamp=header.stamp, frame_id=self.image[0].header.frame_id)
        self.pub_image.publish(img)
        names, q, vel = self._joint_view()
        js = JointState(header=Header(stamp=header.stamp, frame_id=self.joints[0].header.frame_id))
        if names is not None:
            js.name, js.position, js.velocity = names, [float(v) for v in q], vel
        self.pub_joints.publish(js)
        self.pub_tick.publish(ControlTick(header=header, episode=tick.episode, tick=tick.tick,
                                          episode_start=tick.episode_start, episode_end=tick.episode_end,
                                          end_reason=tick.end_reason))
        self.counters["ticks"] += 1
        if tick.episode_end:
            self._status(f"episode {tick.episode} ended after {tick.tick} ticks (end reason "
                         f"{tick.end_reason})")

    def _counters(self) -> dict:
        return {**self.counters, **self.safety.counters, **self.control.counters,
                "paused": self.safety.paused, "running": self.control.running,
                "waiting_for": self.control.not_ready,
                "episode": self.control.episode, "tick": self.control.tick}


def main(args=None) -> int:
    return run_node(RobotBridgeNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
