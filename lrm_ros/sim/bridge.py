"""ROS-free logic of the simulation bridge: configuration, command admission, tick timing.

The bridge advances a simulated environment one control tick at a time. Commands come from
outside (a policy) and are admitted here: a command of the wrong size or with NaN/inf is
rejected and counted; a tick whose command is missing uses the configured fallback.

- lockstep: tick t is stepped when the command for t arrives, or after `command_timeout_s`
  with the fallback (counted as a timeout). Reproducible, for RL in simulation.
- realtime: ticks run at `control_rate_hz`; each uses the newest command received since the
  previous tick, or the fallback when none came (counted as missed). The observation of a
  tick goes out `publish_phase` of a period after the tick started (steady timing whatever
  the render took); the policy has the rest of the period to answer.
"""
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import numpy as np

MODES = ("lockstep", "realtime")
FALLBACKS = ("hold", "zero")


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class BridgeConfig:
    """Parameters of the maniskill_bridge node."""
    env_id: str = field(default="PickCube-v1", metadata=_help(
        "ManiSkill3 task id; any task that needs no asset download (PickCube-v1, PushCube-v1, ...)"))
    control_mode: str = field(default="pd_ee_delta_pose", metadata=_help(
        "ManiSkill controller, e.g. pd_ee_delta_pose, pd_joint_delta_pos, pd_joint_pos"))
    camera_width: int = field(default=256, metadata=_help("rendered camera width in pixels"))
    camera_height: int = field(default=256, metadata=_help("rendered camera height in pixels"))
    camera_name: str = field(default="", metadata=_help("sensor camera to publish; '' = the task's first"))
    seed: int = field(default=0, metadata=_help("seed of the first reset; env_index is added"))
    env_index: int = field(default=0, metadata=_help("index of this env among several (seed offset)"))
    max_episode_ticks: int = field(default=0, metadata=_help(
        "time limit of an episode in ticks; 0 = the task's recommended limit (long enough "
        "for its motion-planned demonstrations: 100 for most, StackCube 150, LiftPegUpright 250)"))
    instruction: str = field(default="", metadata=_help("task instruction; '' = the built-in one for env_id"))
    mode: str = field(default="lockstep", metadata=_help("lockstep (wait for each command) or realtime"))
    control_rate_hz: float = field(default=20.0, metadata=_help(
        "tick rate in realtime mode; in lockstep, the simulated time step of the header stamps"))
    publish_phase: float = field(default=0.6, metadata=_help(
        "realtime: publish each observation this fraction of a period after its tick started, "
        "so observations go out on a steady schedule however long the step took (counted when "
        "late); 0 = as soon as the step is done. The policy has the rest of the period to answer"))
    command_timeout_s: float = field(default=2.0, metadata=_help(
        "lockstep: how long a tick waits for its command before using the fallback"))
    fallback: str = field(default="hold", metadata=_help(
        "action used when a command is missing or rejected: hold (last good one) or zero"))
    auto_reset: bool = field(default=True, metadata=_help("reset on success, failure or time limit"))
    publish_clock: bool = field(default=False, metadata=_help(
        "simulated time: stamp messages with this env's simulated time (ticks x period) and, "
        "for env_index 0, publish it on /clock, which nodes with use_sim_time follow"))
    diagnostics_period_s: float = field(default=1.0, metadata=_help("period of /diagnostics"))
    start_wait_s: float = field(default=15.0, metadata=_help(
        "before the first tick, wait up to this long for a policy (a node that publishes "
        "policy/command and subscribes control/tick; lockstep only) and for the set of "
        "control/tick subscribers to settle, so nobody misses the first episode's tick 0; "
        "0 = start at once"))
    wait_for_nodes: Tuple[str, ...] = field(default=(), metadata=_help(
        "fully qualified names of the nodes that must be ready (running, subscribed to this "
        "env's control/tick and, for lifecycle nodes, active) before the first tick, so that "
        "tick 0 already has a policy and a held reward; the graph fills it with its policy "
        "and reward model ($(ready_before_ticks)); [] = none"))
    wait_for_nodes_timeout_s: float = field(default=300.0, metadata=_help(
        "how long to wait for wait_for_nodes; then the bridge stops with an error naming the "
        "nodes that are not ready (a reward model loading a large model may need minutes)"))

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {self.fallback!r}")
        if not (self.control_rate_hz > 0 and math.isfinite(self.control_rate_hz)):
            raise ValueError(f"control_rate_hz must be > 0, got {self.control_rate_hz}")
        if not 0.0 <= self.publish_phase < 1.0:
            raise ValueError(f"publish_phase must be in [0, 1) (a fraction of the period), "
                             f"got {self.publish_phase}")
        if not self.command_timeout_s > 0:
            raise ValueError(f"command_timeout_s must be > 0 (seconds), got {self.command_timeout_s}")
        if self.max_episode_ticks < 0:
            raise ValueError(f"max_episode_ticks must be >= 1 (or 0 for the task's recommended "
                             f"limit), got {self.max_episode_ticks}")
        if self.camera_width < 8 or self.camera_height < 8:
            raise ValueError(f"camera size must be at least 8x8, got "
                             f"{self.camera_width}x{self.camera_height}")
        if self.env_index < 0:
            raise ValueError(f"env_index must be >= 0, got {self.env_index}")
        if self.diagnostics_period_s <= 0:
            raise ValueError("diagnostics_period_s must be > 0")
        if not (self.wait_for_nodes_timeout_s > 0 and math.isfinite(self.wait_for_nodes_timeout_s)):
            raise ValueError(f"wait_for_nodes_timeout_s must be > 0 seconds, got {self.wait_for_nodes_timeout_s}")
        bad = [n for n in self.wait_for_nodes if n and not n.startswith("/")]
        if bad:
            raise ValueError(f"wait_for_nodes takes fully qualified node names (/env0/policy, "
                             f"/reward_model), got {bad}")
        if not (self.start_wait_s >= 0 and math.isfinite(self.start_wait_s)):
            raise ValueError(f"start_wait_s must be >= 0 seconds (0 = start at once), got {self.start_wait_s}")

    @property
    def period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def episode_ticks(self) -> int:
        """The time limit in ticks, with 0 resolved to the task's recommended limit."""
        from lrm_ros.sim.tasks import recommended_max_ticks
        return self.max_episode_ticks or recommended_max_ticks(self.env_id)

    def sim_config(self):
        from lrm_ros.sim.maniskill_env import SimConfig
        return SimConfig(env_id=self.env_id, control_mode=self.control_mode,
                         camera_width=self.camera_width, camera_height=self.camera_height,
                         camera_name=self.camera_name, max_episode_ticks=self.episode_ticks,
                         instruction=self.instruction)


class CommandError(ValueError):
    """A command was rejected; `reason` is 'size' or 'nonfinite'."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def validate_command(data: Sequence[float], action_dim: int) -> np.ndarray:
    """Return the command as a float64 vector, or raise CommandError saying what is wrong."""
    action = np.asarray(data, dtype=np.float64).reshape(-1)
    if action.shape[0] != action_dim:
        raise CommandError("size", f"command has {action.shape[0]} values but the controller "
                           f"takes {action_dim}; send a Float64MultiArray with {action_dim} values")
    bad = ~np.isfinite(action)
    if bad.any():
        raise CommandError("nonfinite", f"command has non-finite values (NaN/inf) at indices "
                           f"{np.flatnonzero(bad).tolist()}; the tick uses the fallback")
    return action


class CommandGate:
    """Admits commands from any thread and hands one action per tick to the stepping loop."""

    def __init__(self, action_dim: int, fallback: str = "hold"):
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}")
        self.action_dim = action_dim
        self.fallback = fallback
        self._cond = threading.Condition()
        self._pending: Optional[np.ndarray] = None
        self._last_good = np.zeros(action_dim)
        self._interrupted = False
        self.accepted = 0
        self.rejected = {"size": 0, "nonfinite": 0}
        self.timeouts = 0
        self.missed = 0

    def offer(self, data: Sequence[float]) -> np.ndarray:
        """Admit a command (raises CommandError, counted, when it is rejected)."""
        try:
            action = validate_command(data, self.action_dim)
        except CommandError as exc:
            with self._cond:
                self.rejected[exc.reason] += 1
            raise
        with self._cond:
            self._pending = action
            self.accepted += 1
            self._cond.notify_all()
        return action

    def begin_tick(self) -> None:
        """Forget commands that arrived before this tick's observation was published."""
        with self._cond:
            self._pending = None

    def interrupt(self) -> None:
        """Wake a waiting `wait()` (reset request, shutdown)."""
        with self._cond:
            self._interrupted = True
            self._cond.notify_all()

    def _fallback_action(self) -> np.ndarray:
        return self._last_good.copy() if self.fallback == "hold" else np.zeros(self.action_dim)

    def _take_locked(self) -> Tuple[np.ndarray, bool]:
        action, self._pending = self._pending, None
        self._last_good = action
        return action.copy(), False

    def wait(self, timeout_s: float) -> Tuple[Optional[np.ndarray], bool]:
        """Lockstep: block until a command arrives. Returns (action, used_fallback);
        action is None when interrupted."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._pending is not None or self._interrupted,
                                     timeout=timeout_s)
            if self._interrupted:
                self._interrupted = False
                return None, False
            if ok:
                return self._take_locked()
            self.timeouts += 1
            return self._fallback_action(), True

    def take(self) -> Tuple[np.ndarray, bool]:
        """Realtime: the newest command since the last tick, else the fallback (missed)."""
        with self._cond:
            if self._pending is not None:
                return self._take_locked()
            self.missed += 1
            return self._fallback_action(), True

    def reset_episode(self) -> None:
        with self._cond:
            self._pending = None
            self._last_good = np.zeros(self.action_dim)


class StartupWait:
    """When the first tick may go out: a tick published before its subscribers are matched is
    lost (control/tick is volatile), and with it the first episode's tick 0 for the policy,
    the reward model and the recorder. Ready once a policy is present (when `need_policy`)
    and the number of matched control/tick subscribers has not changed for `settle_s` (the
    nodes of a graph come up at about the same time); or when `wait_s` has passed
    (`timed_out`)."""

    def __init__(self, wait_s: float, need_policy: bool, settle_s: float = 1.0, clock=time.monotonic):
        self.wait_s, self.need_policy, self.settle_s, self._clock = wait_s, need_policy, settle_s, clock
        self._t0 = clock()
        self._count = -1
        self._since = self._t0
        self.timed_out = False

    def ready(self, policy_present: bool, subscribers: int) -> bool:
        now = self._clock()
        if now - self._t0 >= self.wait_s:
            self.timed_out = True
            return True
        if subscribers != self._count:
            self._count, self._since = subscribers, now
        if subscribers < 1 or (self.need_policy and not policy_present):
            return False
        return now - self._since >= self.settle_s
