"""reward_model: the reward node. Per environment it subscribes `camera/frame`,
`control/tick`, `task/instruction` (and `sim/oracle` for the oracle backend), and publishes
`reward/held` (lrm_ros/HeldReward) on every tick and `reward/result`
(lrm_ros/RewardQueryResult) once per query. Queries go to the engine's worker thread; the
executor never waits on the model."""
import json
import math

from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from lrm_ros.common.stamps import stamp_ns
from lrm_ros.msg import ControlTick, HeldReward, RewardQueryResult, SimOracle
from lrm_ros.nodes.runtime import run_node
from lrm_ros.rewards import make_backend
from lrm_ros.rewards.config import RewardNodeConfig
from lrm_ros.rewards.engine import ERROR, OK, TIMEOUT, RewardEngine
from lrm_ros.rewards.hold import IntervalHold
from lrm_ros.ros.diagnostics import DiagnosticsPublisher
from lrm_ros.ros.image_msgs import image_msg_to_rgb
from lrm_ros.ros.lifecycle import ManagedNode
from lrm_ros.ros.params import declare_config
from lrm_ros.ros.qos import LATCHED, RELIABLE, SENSOR_QUEUE
from lrm_ros.vision.image import ImageError

_STATUS = {OK: RewardQueryResult.STATUS_OK, TIMEOUT: RewardQueryResult.STATUS_TIMEOUT,
           ERROR: RewardQueryResult.STATUS_ERROR}


def _json_safe(raw: dict) -> str:
    try:
        return json.dumps(raw, default=lambda o: repr(o))[:4000]
    except (TypeError, ValueError):
        return "{}"


class RewardModelNode(ManagedNode):
    """A lifecycle node (lrm_ros.ros.lifecycle): the model loads in configure."""

    def __init__(self, **kwargs):
        super().__init__("reward_model", **kwargs)
        self.config = declare_config(self, RewardNodeConfig)
        self.backend = self.engine = None
        self.model_id, self.signal = "", self.config.effective_signal
        self.holds = {}
        self._episode = {}            # env -> the episode of its latest tick
        self._pub_held = {}
        self._pub_result = {}
        self.frames_dropped = 0
        self.diagnostics = DiagnosticsPublisher(self, self._counters, self.config.diagnostics_period_s)
        self.start()

    def configure_node(self) -> None:
        cfg = self.config
        where = (f"server {cfg.server_url}, model {cfg.model_name}" if cfg.backend == "vllm"
                 else cfg.model_path or "built-in")
        self.get_logger().info(f"loading reward backend '{cfg.backend}' ({where}), "
                               f"signal {cfg.effective_signal}")
        if cfg.cpu_threads and cfg.backend not in ("oracle", "vllm"):
            import torch
            torch.set_num_threads(cfg.cpu_threads)
        self.backend = make_backend(cfg.backend, **cfg.backend_kwargs())
        self.model_id = self.backend.model_id
        self.engine = RewardEngine(self.backend, cfg.engine_config(), self._on_result)
        for env in cfg.envs:
            p = f"{env}/" if env else ""
            hold = IntervalHold(cfg.hold_config(), self.backend.needs, env=env)
            self.holds[env] = hold
            self._pub_held[env] = self.track(self.create_publisher(HeldReward, p + "reward/held", RELIABLE))
            self._pub_result[env] = self.track(self.create_publisher(RewardQueryResult, p + "reward/result",
                                                                     RELIABLE))
            self.track(self.create_subscription(Image, p + "camera/frame",
                                                lambda m, env=env: self._on_frame(env, m), SENSOR_QUEUE))
            self.track(self.create_subscription(ControlTick, p + "control/tick",
                                                lambda m, env=env: self._on_tick(env, m), RELIABLE))
            self.track(self.create_subscription(String, p + "task/instruction",
                                                lambda m, env=env: self.holds[env].set_instruction(m.data),
                                                LATCHED))
            if "oracle" in self.backend.needs:
                self.track(self.create_subscription(
                    SimOracle, p + "sim/oracle",
                    lambda m, env=env: self.active and self._submit(self.holds[env].on_oracle(
                        m.episode, m.tick, m.normalized_dense_reward)), RELIABLE))
        self.get_logger().info(f"reward model ready: {self.model_id}, K={cfg.interval}, "
                               f"envs {[e or '.' for e in cfg.envs]}")

    def cleanup_node(self) -> None:
        if self.engine is not None:
            self.engine.close()
        if self.backend is not None:
            self.backend.close()
        self.backend = self.engine = None
        self.holds, self._pub_held, self._pub_result, self._episode = {}, {}, {}, {}

    def _submit(self, queries) -> None:
        for q in queries:
            self.engine.submit(q)

    def _on_frame(self, env: str, msg: Image) -> None:
        if not self.active:
            return
        try:
            frame = image_msg_to_rgb(msg)
        except ImageError as exc:
            self.frames_dropped += 1
            self.get_logger().error(f"{env or '.'}: dropped camera/frame: {exc}",
                                    throttle_duration_sec=2.0)
            return
        self._submit(self.holds[env].on_frame(stamp_ns(msg.header), frame))

    def _on_tick(self, env: str, msg: ControlTick) -> None:
        if not self.active:
            return
        last = self._episode.get(env)
        if last is not None and msg.episode != last:
            # the previous episode is over (its terminal query, if any, is already queued):
            # its per-episode backend state (TOPReward's KV cache) goes once it is answered
            self.engine.end_episode(env, last)
        self._episode[env] = msg.episode
        queries, held = self.holds[env].on_tick(msg.episode, msg.tick, stamp_ns(msg.header),
                                                msg.episode_start, msg.episode_end)
        self._submit(queries)
        out = HeldReward(header=Header(stamp=msg.header.stamp, frame_id=msg.header.frame_id),
                         episode=held.episode, tick=held.tick, value=float(held.value),
                         progress=float(held.progress), completion=float(held.completion),
                         contrastive=float(held.contrastive), query_tick=held.query_tick,
                         age_ticks=max(0, held.age), stale=held.stale, model_id=self.model_id,
                         signal=self.signal)
        self._pub_held[env].publish(out)

    def _on_result(self, query, result, status, info) -> None:
        """Engine worker thread: update the hold, publish the raw outcome."""
        hold = self.holds.get(query.env)
        if hold is None:           # cleaned up meanwhile
            return
        hold.on_result(query, result, status == OK)
        msg = RewardQueryResult(episode=query.episode, query_tick=query.tick,
                                model_id=self.model_id, signal=self.signal,
                                latency_s=float(info.get("latency_s", math.nan)),
                                batch_size=int(info.get("batch_size", 0)))
        msg.status = _STATUS.get(status, RewardQueryResult.STATUS_DROPPED)
        msg.value = msg.progress = msg.completion = msg.contrastive = math.nan
        if result is not None:
            if not result.valid:
                if status == OK:
                    msg.status = RewardQueryResult.STATUS_INVALID
                msg.invalid_reason = "; ".join(result.invalid)   # or why it failed
            msg.value, msg.progress = float(result.value), float(result.progress)
            msg.completion, msg.contrastive = float(result.completion), float(result.contrastive)
            msg.raw_json = _json_safe(result.raw)
        if status != OK:
            self.get_logger().warn(f"{query.env or '.'} query at tick {query.tick}: {status}"
                                   + (f" ({'; '.join(result.invalid)})" if result is not None
                                      else f" ({self.engine.last_error})" if status == ERROR else ""),
                                   throttle_duration_sec=2.0)
        msg.header.frame_id = query.env
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(query.stamp_ns, 1_000_000_000)
        try:
            self._pub_result[query.env].publish(msg)
        except Exception as exc:   # this runs in the engine's thread, not the executor's
            why = (f"{query.env or '.'}: reward/result of the query at tick {query.tick} "
                   f"not published: {exc!r}")
            if self.context.ok():
                self.get_logger().error(why, throttle_duration_sec=2.0)
            else:                  # shutting down: the context is gone, as expected
                self.get_logger().debug(why)

    def _counters(self) -> dict:
        out = {"backend": self.config.backend, "model_id": self.model_id, "signal": self.signal,
               "frames_dropped": self.frames_dropped, "lifecycle_state": self.lifecycle_state}
        if self.engine is not None:
            out.update({f"engine_{k}": v for k, v in self.engine.stats().items()})
        for env, hold in self.holds.items():
            tag = env or "self"
            out.update({f"{tag}_queries": hold.queries, f"{tag}_results_ok": hold.results_ok,
                        f"{tag}_results_failed": hold.results_failed,
                        f"{tag}_frames_late": hold.frames_late,
                        f"{tag}_frames_missing": hold.frames_missing})
        return out

    def close(self) -> None:
        if self.configured:
            self.cleanup_node()


def main(args=None) -> int:
    return run_node(RewardModelNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
