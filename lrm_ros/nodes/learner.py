"""learner: records every episode of every environment to disk and improves the policy.

Per environment it joins `policy/step`, `reward/held`, `reward/result` and `control/tick`
into steps (`lrm_ros.learn.assembler.EpisodeAssembler`) written to the episode store as they
complete. Once enough new episodes are in, an update (PPO or filtered BC) runs in a worker
thread, the checkpoint is written atomically, and `learner/policy_update` announces it
(latched, so a restarted policy catches up). `learner/stats` carries each iteration's
statistics as JSON.
"""
import json
import math
import threading
from functools import partial

from rclpy.node import Node
from std_msgs.msg import Bool, String

from lrm_ros.learn.assembler import EpisodeAssembler, LearningGate
from lrm_ros.learn.learner_config import LearnerConfig
from lrm_ros.learn.ppo import PPOConfig
from lrm_ros.learn.rl import Learner
from lrm_ros.msg import ControlTick, HeldReward, PolicyStep, PolicyUpdate, RewardQueryResult
from lrm_ros.nodes.runtime import run_node
from lrm_ros.ros.diagnostics import DiagnosticsPublisher, wall_timer
from lrm_ros.ros.params import declare_config
from lrm_ros.ros.qos import LATCHED, RELIABLE


class LearnerNode(Node):
    def __init__(self, **kwargs):
        super().__init__("learner", **kwargs)
        self.config = cfg = declare_config(self, LearnerConfig)
        self.ppo = declare_config(self, PPOConfig, prefix="ppo.")
        import torch
        torch.set_num_threads(1)
        self.learner = Learner(cfg, self.ppo)
        rec = self.learner.recovery
        if rec.recovered or rec.corrupt_chunks:
            self.get_logger().warn(
                f"recovered {len(rec.recovered)} episode(s) ({rec.total_steps} steps) left by a "
                f"killed learner; {len(rec.corrupt_chunks)} corrupt chunk(s) set aside")
        self.lock = threading.Lock()
        self.assemblers = {}
        self.gate = LearningGate(cfg.max_stale_fraction, cfg.stale_window)
        self._gate_reason = ""
        self.pub_update = self.create_publisher(PolicyUpdate, "learner/policy_update", LATCHED)
        self.pub_stats = self.create_publisher(String, "learner/stats", LATCHED)
        for env in cfg.envs:
            env = env.strip("/")
            p = f"{env}/" if env else ""        # relative, as the reward model's: remappable
            model = self.learner.init_model
            asm = self.assemblers[env] = EpisodeAssembler(env or "self", self.learner.store,
                                                          cfg.result_wait_s, feature_dim=model.feature_dim,
                                                          action_dim=model.config.action_dim)
            self.create_subscription(ControlTick, p + "control/tick", partial(self._on_tick, asm), RELIABLE)
            self.create_subscription(PolicyStep, p + "policy/step", partial(self._on_step, asm), RELIABLE)
            self.create_subscription(HeldReward, p + "reward/held", partial(self._on_held, asm, env), RELIABLE)
            self.create_subscription(Bool, p + "safety/pause", partial(self._on_pause, asm, env), LATCHED)
            self.create_subscription(RewardQueryResult, p + "reward/result", partial(self._on_result, asm),
                                     RELIABLE)
        self.training = None
        self._checked = -1
        self.usable = 0
        self.last_error = ""
        self.failed_iterations = 0
        wall_timer(self, 0.25, self._on_timer)
        self.diagnostics = DiagnosticsPublisher(self, self._counters)
        if self.learner.version > 0:
            if self.learner.resumed:
                self.get_logger().info(f"resumed at iteration {self.learner.iteration}, policy "
                                       f"version {self.learner.version}")
            else:
                self.get_logger().info(f"policy version {self.learner.version}: the imitation "
                                       f"policy with action std >= {self.ppo.explore_std} "
                                       "(ppo.explore_std) to explore")
            self._announce()
        self.get_logger().info(f"learning with {cfg.algorithm} from envs {list(cfg.envs)}; episodes "
                               f"and checkpoints in {self.learner.root}")

    def _locked(self, fn, *args) -> None:
        with self.lock:
            try:
                fn(*args)
            except (ValueError, OSError) as exc:
                self.get_logger().error(f"recording failed: {exc}", throttle_duration_sec=2.0)
                self.last_error = str(exc)

    # per-env subscriptions; each runs under the lock the training thread's hand-off takes
    def _on_tick(self, asm: EpisodeAssembler, m: ControlTick) -> None:
        self._locked(asm.on_tick, m.episode, m.tick, m.episode_start, m.episode_end, m.end_reason,
                     m.fallback_count)

    def _on_step(self, asm: EpisodeAssembler, m: PolicyStep) -> None:
        self._locked(asm.on_step, m.episode, m.tick, {
            "features": m.features, "action": m.action, "raw_action": m.raw_action,
            "log_prob": m.log_prob, "value": m.value, "version": m.policy_version,
            "deterministic": m.deterministic})

    def _on_result(self, asm: EpisodeAssembler, m: RewardQueryResult) -> None:
        ok = m.status == RewardQueryResult.STATUS_OK and not m.invalid_reason
        self._locked(asm.on_result, m.episode, m.query_tick, ok, m.value, m.completion)

    def _on_held(self, asm: EpisodeAssembler, env: str, m: HeldReward) -> None:
        self._locked(self._held, asm, env, m)

    def _held(self, asm, env, m) -> None:
        self.gate.on_held(env, m.stale)
        asm.on_held(m.episode, m.tick, m.value, m.completion, m.stale)

    def _on_pause(self, asm: EpisodeAssembler, env: str, m: Bool) -> None:
        self._locked(self._pause, asm, env, m.data)

    def _pause(self, asm, env, paused: bool) -> None:
        self.gate.on_pause(env, paused)
        if paused:
            asm.abort_open("robot paused")

    def _on_timer(self) -> None:
        with self.lock:
            for asm in self.assemblers.values():
                asm.poll()
        if self.training is not None and not self.training.is_alive():
            self.training = None
            self._checked = -1            # episodes finished while training may be enough
        reason = self.gate.reason()
        if reason != self._gate_reason:
            self._gate_reason = reason
            if reason:
                self.get_logger().warn(f"updates held back: {reason}")
            else:
                self.get_logger().info("updates may run again")
                self._checked = -1
        finished = sum(a.counters["episodes_complete"] for a in self.assemblers.values())
        if self.training is None and finished != self._checked and not reason:
            # scanning the store costs a directory listing: only when an episode finished
            self._checked = finished
            self.usable = len(self.learner.usable_episodes())
            if self.learner.ready(self.usable):
                self.training = threading.Thread(target=self._train, daemon=True)
                self.training.start()

    def _train(self) -> None:
        try:
            res = self.learner.train_iteration()
        except (ValueError, RuntimeError, OSError) as exc:
            self.failed_iterations += 1
            self.last_error = str(exc)
            self.get_logger().error(f"update failed, policy unchanged: {exc}")
            return
        self._announce()
        stats = {"iteration": res.iteration, "version": res.version, "algorithm": res.algorithm,
                 "checkpoint": res.checkpoint,
                 **{k: (v if math.isfinite(v) else None) for k, v in res.stats.items()}}
        self.pub_stats.publish(String(data=json.dumps(stats)))
        self.get_logger().info(
            f"iteration {res.iteration}/{self.config.max_iterations}: version {res.version}, "
            f"{int(res.stats.get('episodes', 0))} episodes, env success "
            f"{res.stats.get('env_success_rate', math.nan):.2f}, mean return "
            f"{res.stats.get('mean_return', math.nan):.3f}")
        if self.learner.done:
            self.get_logger().info(f"finished {self.config.max_iterations} iterations; final policy "
                                   f"{res.checkpoint}")

    def _announce(self) -> None:
        msg = PolicyUpdate(version=self.learner.version, checkpoint_path=self.learner.checkpoint,
                           sha256=self.learner.sha256, algorithm=self.config.algorithm,
                           iteration=self.learner.iteration)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_update.publish(msg)

    def _counters(self) -> dict:
        out = {"algorithm": self.config.algorithm, "iteration": self.learner.iteration,
               "version": self.learner.version, "training": self.training is not None,
               "usable_episodes": self.usable,
               "failed_iterations": self.failed_iterations, "last_error": self.last_error,
               "held_back": self._gate_reason}
        for env, asm in self.assemblers.items():
            out.update({f"{env or 'self'}_{k}": v for k, v in asm.counters.items()})
        return out

    def close(self) -> None:
        with self.lock:
            for asm in self.assemblers.values():
                asm.close()
        if self.training is not None:
            # an update can take minutes: the node must exit within ros2 launch's 5 s. An
            # update cut short leaves the last announced version in force (checkpoints and
            # learner_state.json are written atomically) and the restarted learner resumes
            self.training.join(timeout=2.0)
            if self.training.is_alive():
                self.get_logger().warn("shutting down during an update: it is abandoned; the "
                                       f"learner resumes at version {self.learner.version}")


def main(args=None) -> int:
    return run_node(LearnerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
