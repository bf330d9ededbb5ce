"""vla_policy: the learned policy in the loop. Every control tick it pairs the tick with its
camera frame and joint state, acts, and publishes the command on `policy/command` and what
the learner needs on `policy/step`. New checkpoints announced by the learner are validated
when announced and swapped in at the next episode start (`lrm_ros.policy.runtime`)."""
import math

from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String

from lrm_ros.common.stamps import stamp_ns
from lrm_ros.msg import ControlTick, PolicyStep, PolicyUpdate
from lrm_ros.nodes.runtime import run_node
from lrm_ros.policy.adapter import PolicyObservation
from lrm_ros.policy.runtime import (ObservationSync, PolicyNodeConfig, PolicyRuntime, TickInfo,
                                    build_adapter)
from lrm_ros.ros.diagnostics import DiagnosticsPublisher, wall_timer
from lrm_ros.ros.image_msgs import image_msg_to_rgb
from lrm_ros.ros.lifecycle import ManagedNode
from lrm_ros.ros.params import declare_config
from lrm_ros.ros.qos import LATCHED, RELIABLE, SENSOR_QUEUE
from lrm_ros.vision.image import ImageError


class PolicyNode(ManagedNode):
    """A lifecycle node (lrm_ros.ros.lifecycle): the policy loads in configure."""

    def __init__(self, **kwargs):
        super().__init__("policy", **kwargs)
        self.config = declare_config(self, PolicyNodeConfig)
        self.runtime = None
        self.sync = ObservationSync(self.config.frame_wait_s)
        self.instruction = ""
        self.acted = self.errors = self.no_instruction = self.frames_dropped = 0
        self.joint_states_dropped = 0
        self.pub_status = self.create_publisher(String, "policy/status", LATCHED)
        self.diagnostics = DiagnosticsPublisher(self, self._counters)
        self.start()

    def configure_node(self) -> None:
        cfg = self.config
        if cfg.cpu_threads:
            import torch
            torch.set_num_threads(cfg.cpu_threads)
        adapter = build_adapter(cfg)
        self.runtime = PolicyRuntime(
            adapter, lambda path, sha: build_adapter(cfg, path, sha, share_from=self.runtime.adapter),
            version=int(adapter.meta.get("version", 0)), checkpoint=cfg.checkpoint)
        self.pub_cmd = self.track(self.create_publisher(Float64MultiArray, "policy/command", RELIABLE))
        self.pub_step = self.track(self.create_publisher(PolicyStep, "policy/step", RELIABLE))
        self.track(self.create_subscription(ControlTick, "control/tick", self._on_tick, RELIABLE))
        self.track(self.create_subscription(Image, "camera/frame", self._on_frame, SENSOR_QUEUE))
        self.track(self.create_subscription(JointState, "joint_states", self._on_joints, RELIABLE))
        self.track(self.create_subscription(String, "task/instruction", self._on_instruction, LATCHED))
        if cfg.update_topic:
            self.track(self.create_subscription(PolicyUpdate, cfg.update_topic, self._on_update, LATCHED))
        self.track(wall_timer(self, 0.02, self._poll))
        self._status(f"configured: policy version {self.runtime.version} ({adapter.name})")

    def cleanup_node(self) -> None:
        self.runtime = None           # the model and encoders go with it
        self.sync = ObservationSync(self.config.frame_wait_s)

    def _status(self, text: str) -> None:
        self.get_logger().info(text)
        self.pub_status.publish(String(data=text))

    def _on_instruction(self, msg: String) -> None:
        self.instruction = msg.data

    def _on_frame(self, msg: Image) -> None:
        try:
            frame = image_msg_to_rgb(msg)
        except ImageError as exc:
            self.frames_dropped += 1
            self.get_logger().error(f"dropped camera/frame: {exc}", throttle_duration_sec=2.0)
            return
        self._act(self.sync.on_frame(stamp_ns(msg.header), frame))

    def _on_joints(self, msg: JointState) -> None:
        positions = list(msg.position)
        if not positions or not all(math.isfinite(v) for v in positions):
            self.joint_states_dropped += 1
            self.get_logger().error(f"dropped joint_states: {len(positions)} positions, empty or "
                                    "non-finite (NaN/inf)", throttle_duration_sec=2.0)
            return
        self._act(self.sync.on_joints(stamp_ns(msg.header), positions))

    def _on_tick(self, msg: ControlTick) -> None:
        self._act(self.sync.on_tick(TickInfo(msg.episode, msg.tick, stamp_ns(msg.header),
                                             msg.episode_start, msg.episode_end)))

    def _on_update(self, msg: PolicyUpdate) -> None:
        if self.runtime is None:
            return
        ok, text = self.runtime.offer(msg.version, msg.checkpoint_path, msg.sha256)
        if ok:
            self.get_logger().info(text)
        else:
            self.get_logger().error(text)
            self.pub_status.publish(String(data=text))

    def _poll(self) -> None:
        skipped = self.sync.skipped
        self._act(self.sync.poll())
        if self.sync.skipped > skipped:     # the bridge will drive these ticks with its fallback
            self.get_logger().warn(f"{self.sync.skipped} tick(s) so far got no command: no camera/frame "
                                   f"or joint_states at or before the tick after {self.config.frame_wait_s} s; "
                                   "is camera_ingest running?", throttle_duration_sec=2.0)

    def _act(self, ready) -> None:
        if not self.active or self.runtime is None:
            return
        for obs in ready:
            if obs.tick.tick == 0:
                swapped = self.runtime.on_episode_start()
                if swapped is not None:
                    self._status(f"episode {obs.tick.episode}: now running policy version {swapped}")
            if not self.instruction:
                self.no_instruction += 1
                self.get_logger().warn("no task/instruction received yet; not acting",
                                       throttle_duration_sec=2.0)
                continue
            try:
                out = self.runtime.adapter.act(
                    PolicyObservation(obs.frame, self.instruction, obs.joint_positions),
                    self.config.deterministic)
            except (ValueError, RuntimeError) as exc:
                self.errors += 1
                self.get_logger().error(f"tick {obs.tick.tick}: policy failed: {exc}",
                                        throttle_duration_sec=2.0)
                continue
            self.pub_cmd.publish(Float64MultiArray(data=[float(v) for v in out.action]))
            step = PolicyStep(episode=obs.tick.episode, tick=obs.tick.tick,
                              action=[float(v) for v in out.action],
                              raw_action=[float(v) for v in out.raw_action],
                              log_prob=float(out.log_prob),
                              value=float(out.value) if math.isfinite(out.value) else math.nan,
                              policy_version=self.runtime.version,
                              deterministic=out.deterministic,
                              features=out.features.astype("float32").tolist())
            step.header.stamp.sec, step.header.stamp.nanosec = divmod(obs.tick.stamp_ns, 1_000_000_000)
            self.pub_step.publish(step)
            self.acted += 1

    def _counters(self) -> dict:
        rt = self.runtime
        return {"lifecycle_state": self.lifecycle_state,
                "policy_version": rt.version if rt else None, "pending_version": rt.pending_version if rt else None,
                "swaps": rt.swaps if rt else 0, "checkpoints_refused": rt.refused if rt else 0,
                "last_refusal": rt.last_refusal if rt else "", "acted": self.acted,
                "errors": self.errors, "ticks_late_frame": self.sync.late,
                "ticks_skipped_no_frame": self.sync.skipped, "ticks_superseded": self.sync.superseded,
                "no_instruction": self.no_instruction, "frames_dropped": self.frames_dropped,
                "joint_states_dropped": self.joint_states_dropped,
                "deterministic": self.config.deterministic}


def main(args=None) -> int:
    return run_node(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
