"""maniskill_bridge: a ManiSkill3 task standing in for the robot.

Publishes (relative names, so namespaces and remaps work):
  camera/image_raw (sensor_msgs/Image rgb8, best effort), camera/camera_info,
  joint_states, control/tick (lrm_ros/ControlTick), sim/oracle (lrm_ros/SimOracle, for
  evaluation only), task/instruction (std_msgs/String, latched), /diagnostics.
Subscribes policy/command (std_msgs/Float64MultiArray). Service episode/reset (Trigger).
Stepping runs in its own thread; the executor only admits commands and serves resets.
"""
import threading
import time
from typing import Optional

from builtin_interfaces.msg import Time
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, Header, String
from std_srvs.srv import Trigger

from lrm_ros.msg import ControlTick, SimOracle
from lrm_ros.nodes.runtime import run_node
from lrm_ros.ros.diagnostics import DiagnosticsPublisher
from lrm_ros.ros.image_msgs import rgb_to_image_msg
from lrm_ros.ros.params import declare_config
from lrm_ros.ros.qos import LATCHED, RELIABLE, SENSOR
from lrm_ros.sim.bridge import BridgeConfig, CommandError, CommandGate, StartupWait


class ManiSkillBridge(Node):
    def __init__(self, **kwargs):
        super().__init__("maniskill_bridge", **kwargs)
        self.config = declare_config(self, BridgeConfig)
        from lrm_ros.sim.maniskill_env import ManiSkillSim  # heavy: SAPIEN, torch
        self.get_logger().info(f"starting {self.config.env_id} ({self.config.control_mode}, "
                               f"{self.config.mode}, camera {self.config.camera_width}x"
                               f"{self.config.camera_height})")
        self.sim = ManiSkillSim(self.config.sim_config())
        self.gate = CommandGate(self.sim.action_dim, self.config.fallback)

        self.pub_image = self.create_publisher(Image, "camera/image_raw", SENSOR)
        self.pub_info = self.create_publisher(CameraInfo, "camera/camera_info", SENSOR)
        self.pub_joints = self.create_publisher(JointState, "joint_states", RELIABLE)
        self.pub_tick = self.create_publisher(ControlTick, "control/tick", RELIABLE)
        self.pub_oracle = self.create_publisher(SimOracle, "sim/oracle", RELIABLE)
        self.pub_instruction = self.create_publisher(String, "task/instruction", LATCHED)
        self.create_subscription(Float64MultiArray, "policy/command", self._on_command, RELIABLE)
        self.create_service(Trigger, "episode/reset", self._on_reset)
        self.pub_clock = (self.create_publisher(Clock, "/clock", 10)
                          if self.config.publish_clock and self.config.env_index == 0 else None)
        self._last_sim_ns = 0
        self.pub_instruction.publish(String(data=self.sim.instruction))

        self.episode = -1
        self.tick = 0
        self.ticks_total = 0
        self.fallback_count = 0
        self.overruns = 0
        self.late_publishes = 0
        self.step_time_total = 0.0
        self.sim_errors = 0
        self.failed = False
        self._last_stamp = None
        self._waiting_for = ""
        self._stop = threading.Event()
        self._reset_requested = threading.Event()
        self._episode_started = threading.Condition()
        self.diagnostics = DiagnosticsPublisher(self, self._counters, self.config.diagnostics_period_s)
        self._thread = threading.Thread(target=self._loop, name="bridge_loop", daemon=True)
        self._thread.start()

    # --- executor side -------------------------------------------------------------------
    def _on_command(self, msg: Float64MultiArray) -> None:
        try:
            self.gate.offer(msg.data)
        except CommandError as exc:
            self.get_logger().error(f"rejected command ({exc.reason}): {exc}",
                                    throttle_duration_sec=2.0)

    def _on_reset(self, request, response):
        with self._episode_started:
            before = self.episode
            self._reset_requested.set()
            self.gate.interrupt()
            done = self._episode_started.wait_for(
                lambda: self.episode > before or self._stop.is_set(), timeout=60.0)
        response.success = bool(done and self.episode > before)
        response.message = (f"episode {self.episode} started" if response.success
                            else "reset did not complete within 60 s")
        return response

    def _counters(self) -> dict:
        g = self.gate
        return {
            "env_id": self.config.env_id, "mode": self.config.mode, "episode": self.episode,
            "tick": self.tick, "ticks_total": self.ticks_total,
            "commands_accepted": g.accepted, "commands_rejected_size": g.rejected["size"],
            "commands_rejected_nonfinite": g.rejected["nonfinite"],
            "command_timeouts": g.timeouts, "commands_missed": g.missed,
            "realtime_overruns": self.overruns, "realtime_late_publishes": self.late_publishes,
            "sim_errors": self.sim_errors, "waiting_for": self._waiting_for,
            "step_ms_mean": round(1000 * self.step_time_total / max(1, self.ticks_total), 2),
        }

    # --- stepping thread -------------------------------------------------------------------
    def _stamp(self):
        if not self.config.publish_clock:
            return self.get_clock().now().to_msg()
        # simulated time of this env: 1 s + ticks x period; an observation without a step
        # (the one after a reset) gets 1 ns more, so stamps stay unique keys within the env
        ns = 1_000_000_000 + int(round(self.ticks_total * self.config.period_s * 1e9))
        ns = max(ns, self._last_sim_ns + 1)
        self._last_sim_ns = ns
        t = Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=t))
        return t

    def _publish(self, obs, step=None, end_reason: int = ControlTick.END_NONE,
                 republish_end: bool = False) -> None:
        header = Header(stamp=self._last_stamp if republish_end else self._stamp(),
                        frame_id=self.sim.camera_frame_id)
        self._last_stamp = header.stamp
        if not republish_end:
            image = rgb_to_image_msg(obs.image, header=header)
            self.pub_image.publish(image)
            h, w = obs.image.shape[:2]
            k = obs.intrinsics
            info = CameraInfo(header=header, height=h, width=w, distortion_model="plumb_bob")
            info.d = [0.0] * 5
            info.k = [float(v) for v in k.reshape(-1)]
            info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
            info.p = [float(k[0, 0]), 0.0, float(k[0, 2]), 0.0,
                      0.0, float(k[1, 1]), float(k[1, 2]), 0.0, 0.0, 0.0, 1.0, 0.0]
            self.pub_info.publish(info)
            joints = JointState(header=Header(stamp=header.stamp, frame_id=""))
            joints.name = list(obs.joint_names)
            joints.position = [float(v) for v in obs.joint_positions]
            joints.velocity = [float(v) for v in obs.joint_velocities]
            self.pub_joints.publish(joints)
            oracle = SimOracle(header=header, episode=self.episode, tick=self.tick,
                               env_id=self.config.env_id)
            if step is not None:
                oracle.dense_reward = float(step.dense_reward)
                oracle.normalized_dense_reward = float(step.normalized_dense_reward)
                oracle.success = bool(step.success)
                oracle.failure = bool(step.failure)
            self.pub_oracle.publish(oracle)
        tick = ControlTick(header=header, episode=self.episode, tick=self.tick,
                           episode_start=(self.tick == 0 and not republish_end),
                           episode_end=end_reason != ControlTick.END_NONE,
                           end_reason=end_reason, fallback_count=self.fallback_count)
        self.pub_tick.publish(tick)

    def _start_episode(self, first: bool, publish_at: Optional[float] = None) -> None:
        seed = self.config.seed + self.config.env_index if first else None
        obs = self.sim.reset(seed=seed)
        self._wait_until(publish_at)
        self.gate.reset_episode()
        with self._episode_started:
            self.episode += 1
            self.tick = 0
            self.fallback_count = 0
            self._reset_requested.clear()
            self._episode_started.notify_all()
        self.gate.begin_tick()
        self._publish(obs)

    def _wait_until(self, publish_at: Optional[float]) -> None:
        """Realtime: observations go out on a steady schedule, however long the step took."""
        if publish_at is None:
            return
        wait = publish_at - time.monotonic()
        if wait > 0:
            self._stop.wait(wait)
        else:
            self.late_publishes += 1

    def _slot(self, deadline: float):
        """Realtime: (publish time of the tick starting at `deadline`, next deadline)."""
        now = time.monotonic()
        if now - deadline > self.config.period_s:
            self.overruns += 1
            deadline = now
        publish_at = deadline + self.config.publish_phase * self.config.period_s \
            if self.config.publish_phase > 0 else None
        return publish_at, deadline + self.config.period_s

    def _next_action(self, deadline: Optional[float]):
        if self.config.mode == "lockstep":
            return self.gate.wait(self.config.command_timeout_s)
        delay = deadline - time.monotonic()
        if delay > 0:
            self._reset_requested.wait(delay)
        if self._reset_requested.is_set():
            return None, False
        return self.gate.take()

    def _loop(self) -> None:
        try:
            self._run()
        except Exception as exc:
            if self._stop.is_set() or not self.context.ok():
                return  # shutting down: the context went away under a publish
            self.get_logger().fatal(f"stepping thread failed, stopping the node: {exc!r}")
            self.failed = True
            self.context.try_shutdown()

    def _wait_for_consumers(self) -> None:
        """Hold the first tick until a policy and the other subscribers of control/tick are
        matched (BridgeConfig.start_wait_s)."""
        lockstep = self.config.mode == "lockstep"
        wait = StartupWait(self.config.start_wait_s, need_policy=lockstep)
        tick_topic, cmd_topic = self.pub_tick.topic_name, self.resolve_topic_name("policy/command")
        self.get_logger().info(f"waiting up to {self.config.start_wait_s:g} s for "
                               + ("a policy and " if lockstep else "") + f"the subscribers of {tick_topic}")
        policy = False
        while not self._stop.is_set():
            tick_nodes = {(i.node_namespace, i.node_name) for i in self.get_subscriptions_info_by_topic(tick_topic)}
            policy = any((i.node_namespace, i.node_name) in tick_nodes
                         for i in self.get_publishers_info_by_topic(cmd_topic))
            if wait.ready(policy, self.pub_tick.get_subscription_count()):
                break
            self._stop.wait(0.05)
        n = self.pub_tick.get_subscription_count()
        if wait.timed_out:
            self.get_logger().warn(f"starting after {self.config.start_wait_s:g} s with {n} subscriber(s) of "
                                   f"{tick_topic}" + ("" if not lockstep or policy else
                                                      f" and no policy on {cmd_topic} (commands fall back "
                                                      f"to '{self.config.fallback}')"))
        else:
            self.get_logger().info(f"starting: {n} subscriber(s) of {tick_topic}")

    def _wait_for_required_nodes(self) -> bool:
        """Hold the first tick until the graph's policy and reward model are ready
        (BridgeConfig.wait_for_nodes); False (the node fails) after the timeout."""
        names = [n for n in self.config.wait_for_nodes if n]
        if not names:
            return True
        from lrm_ros.common.readiness import RequiredNodes
        from lrm_ros.ros.readiness import NodeReadinessProbe
        tick_topic = self.pub_tick.topic_name
        probe = NodeReadinessProbe(self, names, tick_topic)
        wait = RequiredNodes(names, self.config.wait_for_nodes_timeout_s)
        self.get_logger().info(f"first tick waits for {', '.join(names)} (up to "
                               f"{self.config.wait_for_nodes_timeout_s:g} s)")
        self._waiting_for = wait.describe()
        last_report = 0.0
        while not self._stop.is_set():
            wait.update(probe.poll())
            self._waiting_for = wait.describe()
            if wait.ready:
                self.get_logger().info(f"{', '.join(names)} ready after {wait.waited_s:.1f} s")
                return True
            if wait.timed_out:
                self.get_logger().fatal(
                    f"no tick: after {self.config.wait_for_nodes_timeout_s:g} s the graph is not ready: "
                    f"{wait.describe()}. Check that node's output (it may have died or still be loading); "
                    "raise wait_for_nodes_timeout_s for a slow model")
                return False
            if wait.waited_s - last_report >= 10.0:
                last_report = wait.waited_s
                self.get_logger().info(f"waiting for {wait.describe()}")
            self._stop.wait(0.1)
        return False

    def _run(self) -> None:
        if not self._wait_for_required_nodes():
            if not self._stop.is_set():
                self.failed = True
                self.context.try_shutdown()
            return
        self._waiting_for = ""
        if self.config.start_wait_s > 0:
            self._wait_for_consumers()
        first = True
        realtime = self.config.mode == "realtime"
        deadline = time.monotonic()
        while not self._stop.is_set():
            publish_at = None
            if realtime and not first:       # a reset keeps the tick schedule too
                publish_at, deadline = self._slot(deadline)
            try:
                self._start_episode(first, publish_at)
            except Exception as exc:  # the simulator failed to reset: report and retry
                self.sim_errors += 1
                self.get_logger().error(f"reset failed: {exc!r}", throttle_duration_sec=5.0)
                self._stop.wait(1.0)
                continue
            if first:
                deadline = time.monotonic() + self.config.period_s
            first = False
            while not self._stop.is_set():
                if self._reset_requested.is_set():
                    self._publish(None, end_reason=ControlTick.END_RESET_REQUEST,
                                  republish_end=True)
                    break
                action, used_fallback = self._next_action(deadline)
                if action is None:
                    continue
                publish_at = None
                if realtime:
                    publish_at, deadline = self._slot(deadline)
                if used_fallback:
                    self.fallback_count += 1
                    if self.config.mode == "lockstep":
                        self.get_logger().warn(
                            f"no command for tick {self.tick} within "
                            f"{self.config.command_timeout_s} s: using fallback "
                            f"'{self.config.fallback}'", throttle_duration_sec=5.0)
                start = time.perf_counter()
                try:
                    step = self.sim.step(action)
                except Exception as exc:
                    self.sim_errors += 1
                    self.get_logger().error(f"simulation step failed, resetting: {exc!r}")
                    break
                self.step_time_total += time.perf_counter() - start
                self.tick += 1
                self.ticks_total += 1
                end = ControlTick.END_NONE
                if step.terminated or step.truncated:
                    end = (ControlTick.END_SUCCESS if step.success else
                           ControlTick.END_FAILURE if step.failure else ControlTick.END_TIME_LIMIT)
                self._wait_until(publish_at)
                self.gate.begin_tick()
                self._publish(step.observation, step, end)
                if end != ControlTick.END_NONE:
                    if not self.config.auto_reset:
                        while not (self._stop.is_set() or self._reset_requested.is_set()):
                            self._reset_requested.wait(0.1)
                    break

    def close(self) -> None:
        self._stop.set()
        self.gate.interrupt()
        self._reset_requested.set()
        self._thread.join(timeout=10.0)
        self.sim.close()


def main(args=None) -> int:
    return run_node(ManiSkillBridge, args)


if __name__ == "__main__":
    raise SystemExit(main())
