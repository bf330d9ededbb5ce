"""ROS-free logic of `robot_bridge`, the stand-in for `maniskill_bridge` on hardware.

- `SafetyFilter`: every policy command is clipped to per-joint bounds and rate limited
  (largest change per control tick) before it reaches the robot; while paused (e-stop topic
  or operator) nothing passes, and one stop command is emitted at once.
- `CommandAdapter`: the filtered action as the robot's controller takes it:
  `forward_command` (std_msgs/Float64MultiArray for a ros2_control forward command
  controller), `joint_trajectory` (trajectory_msgs/JointTrajectory: one point, the current
  joint positions plus the action as a delta, reached in one control period) or `twist`
  (geometry_msgs/TwistStamped for servoing: linear = action[0:3], angular = action[3:6]).
  With `gripper_index` set, that action component (ManiSkill's convention: -1 closed, 1 open)
  is taken out of the arm's command and sent on its own as a gripper position between
  `gripper_closed` and `gripper_open` (Float64MultiArray, for a gripper's forward command
  controller). A pause leaves the gripper as it is, so nothing held is dropped.
- `EpisodeControl`: episodes on hardware are run by an operator: start, stop, reset, mark
  success; success can also come from the reward model's completion signal
  (`success_source`), after `completion_ticks` consecutive fresh held values >= the threshold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from lrm_ros.common.episode_end import END_FAILURE, END_NONE, END_RESET_REQUEST, END_SUCCESS, END_TIME_LIMIT

ADAPTERS = ("forward_command", "joint_trajectory", "twist")
ON_PAUSE = ("zero", "hold", "none")
SUCCESS_SOURCES = ("operator", "completion", "both")


def _broadcast(name: str, values: Sequence[float], n: int) -> np.ndarray:
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 1:
        return np.full(n, float(v[0]))
    if v.size != n:
        raise ValueError(f"{name} has {v.size} values; give one (for every component) or {n}")
    return v


@dataclass(frozen=True)
class RobotConfig:
    """Parameters of the robot_bridge node."""
    control_rate_hz: float = field(default=10.0, metadata={"help": "control ticks per second"})
    action_dim: int = field(default=7, metadata={"help": "size of the policy's action"})
    adapter: str = field(default="forward_command", metadata={"help": (
        "command interface: forward_command (Float64MultiArray), joint_trajectory "
        "(JointTrajectory, action = joint position deltas) or twist (TwistStamped)")})
    command_topic: str = field(default="/forward_position_controller/commands", metadata={"help": (
        "where robot commands go (the controller's topic)")})
    joint_names: Tuple[str, ...] = field(default=(), metadata={"help": (
        "joints the policy sees and commands, in order (empty = as the robot's JointState lists them)")})
    action_scale: float = field(default=1.0, metadata={"help": "multiplies the action before it is sent"})
    action_low: Tuple[float, ...] = field(default=(-1.0,), metadata={"help": (
        "lower bound of each action component (one value = all)")})
    action_high: Tuple[float, ...] = field(default=(1.0,), metadata={"help": "upper bound, as action_low"})
    max_delta: Tuple[float, ...] = field(default=(0.0,), metadata={"help": (
        "largest change of each action component per tick (0 = no rate limit)")})
    on_pause: str = field(default="zero", metadata={"help": (
        "what is sent once when paused: zero (a zero command: velocity interfaces stop), hold "
        "(the current joint positions: position interfaces stay) or none")})
    twist_frame: str = field(default="base_link", metadata={"help": "frame_id of twist commands"})
    gripper_index: int = field(default=-1, metadata={"help": (
        "action component that drives the gripper (-1 closed .. 1 open, as ManiSkill's "
        "pd_ee_delta_pose: component 6), sent on gripper_topic instead of to the arm; -1 = none")})
    gripper_topic: str = field(default="/gripper_controller/commands", metadata={"help": (
        "where gripper positions go (Float64MultiArray with one value, e.g. a forward command controller)")})
    gripper_closed: float = field(default=0.0, metadata={"help": "gripper position sent for action -1"})
    gripper_open: float = field(default=1.0, metadata={"help": "gripper position sent for action 1"})
    camera_topic: str = field(default="/camera/color/image_raw", metadata={"help": (
        "the camera driver's topic; a name ending in /compressed is a CompressedImage")})
    joint_states_topic: str = field(default="/joint_states", metadata={"help": "the robot's JointState topic"})
    max_observation_age_s: float = field(default=0.5, metadata={"help": (
        "a tick whose newest camera image or joint state is older than this is skipped (counted)")})
    instruction: str = field(default="", metadata={"help": "the task, as the policy and reward model read it"})
    max_episode_ticks: int = field(default=200, metadata={"help": "time limit of an episode"})
    auto_start: bool = field(default=False, metadata={"help": (
        "start an episode without the operator (and the next after each end)")})
    success_source: str = field(default="both", metadata={"help": (
        "who ends an episode as a success: operator (episode/mark_success), completion (the "
        "reward model's completion signal) or both")})
    completion_threshold: float = field(default=0.8, metadata={"help": "completion >= this counts"})
    completion_ticks: int = field(default=2, metadata={"help": "consecutive fresh held values needed"})
    env_index: int = field(default=0, metadata={"help": "index of this robot"})
    wait_for_nodes: Tuple[str, ...] = field(default=(), metadata={"help": (
        "fully qualified names of the nodes that must be ready (running, subscribed to this "
        "robot's control/tick and, for lifecycle nodes, active) before an episode may start: "
        "episode/start is refused, naming them, until then; the graph fills it with its policy "
        "and reward model ($(ready_before_ticks)); [] = none")})

    def __post_init__(self):
        bad = [n for n in self.wait_for_nodes if n and not n.startswith("/")]
        if bad:
            raise ValueError(f"wait_for_nodes takes fully qualified node names (/env0/policy, "
                             f"/reward_model), got {bad}")
        if not self.control_rate_hz > 0:
            raise ValueError(f"control_rate_hz must be > 0, got {self.control_rate_hz}")
        if self.adapter not in ADAPTERS:
            raise ValueError(f"adapter must be one of {ADAPTERS}, got {self.adapter!r}")
        if self.on_pause not in ON_PAUSE:
            raise ValueError(f"on_pause must be one of {ON_PAUSE}, got {self.on_pause!r}")
        if self.success_source not in SUCCESS_SOURCES:
            raise ValueError(f"success_source must be one of {SUCCESS_SOURCES}, got {self.success_source!r}")
        if self.action_dim < 1 or self.max_episode_ticks < 1 or self.completion_ticks < 1:
            raise ValueError("action_dim, max_episode_ticks and completion_ticks must be >= 1")
        if not -1 <= self.gripper_index < self.action_dim:
            raise ValueError(f"gripper_index must be an action component (0..{self.action_dim - 1}) "
                             f"or -1 for no gripper, got {self.gripper_index}")
        if not (math.isfinite(self.gripper_open) and math.isfinite(self.gripper_closed)):
            raise ValueError("gripper_open and gripper_closed must be finite positions")
        if self.adapter == "twist" and self.arm_dim < 6:
            raise ValueError(f"the twist adapter needs an action of at least 6 components besides the "
                             f"gripper, got {self.arm_dim} (action_dim {self.action_dim}, gripper_index "
                             f"{self.gripper_index})")
        lo = _broadcast("action_low", self.action_low, self.action_dim)
        hi = _broadcast("action_high", self.action_high, self.action_dim)
        if not np.all(lo < hi):
            raise ValueError(f"action_low must be below action_high in every component: {lo} vs {hi}")
        if np.any(_broadcast("max_delta", self.max_delta, self.action_dim) < 0):
            raise ValueError("max_delta must be >= 0 (0 = no limit)")

    @property
    def period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def arm_dim(self) -> int:
        """Action components that go to the arm's controller."""
        return self.action_dim - (1 if self.gripper_index >= 0 else 0)


class SafetyFilter:
    def __init__(self, cfg: RobotConfig):
        n = cfg.action_dim
        self.cfg = cfg
        self.low = _broadcast("action_low", cfg.action_low, n)
        self.high = _broadcast("action_high", cfg.action_high, n)
        self.max_delta = _broadcast("max_delta", cfg.max_delta, n)
        self.last: Optional[np.ndarray] = None
        self.paused = False
        self.counters = {"commands": 0, "clipped": 0, "rate_limited": 0, "refused_paused": 0,
                         "refused_bad": 0, "stops": 0}

    def set_paused(self, paused: bool) -> bool:
        """Returns True when a stop command must be sent now (entering the pause)."""
        entering = paused and not self.paused
        self.paused = bool(paused)
        if entering:
            self.counters["stops"] += 1
            self.last = None          # after a pause, restart from the first command
        return entering and self.cfg.on_pause != "none"

    def filter(self, action) -> Tuple[Optional[np.ndarray], str]:
        """(safe action or None, why refused)."""
        a = np.asarray(action, np.float64).reshape(-1)
        if self.paused:
            self.counters["refused_paused"] += 1
            return None, "paused"
        if a.size != self.low.size or not np.all(np.isfinite(a)):
            self.counters["refused_bad"] += 1
            return None, (f"command has {a.size} value(s), expected {self.low.size}" if a.size != self.low.size
                          else "command has non-finite values")
        out = np.clip(a, self.low, self.high)
        if not np.array_equal(out, a):
            self.counters["clipped"] += 1
        if self.last is not None:
            limited = np.where(self.max_delta > 0,
                               np.clip(out, self.last - self.max_delta, self.last + self.max_delta), out)
            if not np.array_equal(limited, out):
                self.counters["rate_limited"] += 1
            out = limited
        self.last = out
        self.counters["commands"] += 1
        return out, ""


@dataclass
class RobotCommand:
    """What the node turns into the controller's message."""
    kind: str
    values: List[float]                      # forward_command data, trajectory positions
    joint_names: List[str] = field(default_factory=list)
    linear: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    angular: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    duration_s: float = 0.0
    gripper: Optional[float] = None          # gripper position to send with it (gripper_index)


class CommandAdapter:
    def __init__(self, cfg: RobotConfig):
        self.cfg = cfg

    def command(self, action: np.ndarray, joint_names: Sequence[str],
                joint_positions: Optional[np.ndarray]) -> RobotCommand:
        a = np.asarray(action, np.float64)
        gripper = None
        g = self.cfg.gripper_index
        if g >= 0:
            opening = (float(np.clip(a[g], -1.0, 1.0)) + 1.0) / 2.0
            gripper = self.cfg.gripper_closed + opening * (self.cfg.gripper_open - self.cfg.gripper_closed)
            a = np.delete(a, g)
        cmd = self._arm(a * self.cfg.action_scale, joint_names, joint_positions)
        cmd.gripper = gripper
        return cmd

    def _arm(self, a: np.ndarray, joint_names: Sequence[str],
             joint_positions: Optional[np.ndarray]) -> RobotCommand:
        kind = self.cfg.adapter
        if kind == "forward_command":
            return RobotCommand(kind, a.tolist())
        if kind == "twist":
            return RobotCommand(kind, [], linear=tuple(a[0:3]), angular=tuple(a[3:6]))
        if joint_positions is None:
            raise ValueError("joint_trajectory needs the current joint positions: no JointState yet")
        q = np.asarray(joint_positions, np.float64)
        n = min(len(q), len(a))
        return RobotCommand(kind, (q[:n] + a[:n]).tolist(), list(joint_names)[:n], duration_s=self.cfg.period_s)

    def stop(self, joint_names: Sequence[str], joint_positions: Optional[np.ndarray]) -> Optional[RobotCommand]:
        """The command sent once when pausing."""
        if self.cfg.on_pause == "none":
            return None
        kind = self.cfg.adapter
        if self.cfg.on_pause == "hold" or kind == "joint_trajectory":
            if joint_positions is None:
                return None
            q = np.asarray(joint_positions, np.float64)
            if kind == "joint_trajectory":
                return RobotCommand(kind, q.tolist(), list(joint_names), duration_s=self.cfg.period_s)
            return RobotCommand(kind, q.tolist()) if kind == "forward_command" else RobotCommand(kind, [])
        if kind == "twist":
            return RobotCommand(kind, [])
        return RobotCommand(kind, [0.0] * self.cfg.arm_dim)


@dataclass
class TickOut:
    episode: int
    tick: int
    episode_start: bool
    episode_end: bool
    end_reason: int


class EpisodeControl:
    """idle -> (start) -> running -> (success, stop, time limit) -> idle."""

    def __init__(self, cfg: RobotConfig):
        self.cfg = cfg
        self.running = False
        self.episode = -1
        self.tick = 0
        self._end: Optional[int] = None
        self._streak = 0
        self._restart = False
        self.counters = {"episodes": 0, "successes_operator": 0, "successes_completion": 0,
                         "stopped": 0, "time_limits": 0, "starts_refused_not_ready": 0}
        self.not_ready = ""          # why an episode may not start now ("" = it may)

    def set_not_ready(self, reason: str) -> None:
        """While `reason` is non-empty (e.g. the reward model is still loading) no episode
        starts: episode/start is refused with the reason, auto_start and reset wait."""
        self.not_ready = reason

    def start(self) -> Tuple[bool, str]:
        if self.running:
            return False, f"episode {self.episode} is running; stop or reset it first"
        if self.not_ready:
            self.counters["starts_refused_not_ready"] += 1
            return False, (f"episode not started: the graph is not ready ({self.not_ready}); "
                           "try again once it is (robot/status says when)")
        self.running, self.episode, self.tick, self._end, self._streak = True, self.episode + 1, 0, None, 0
        self.counters["episodes"] += 1
        return True, f"episode {self.episode} started"

    def _request_end(self, reason: int) -> Tuple[bool, str]:
        if not self.running:
            return False, "no episode is running"
        if self._end is None:
            self._end = reason
        return True, f"episode {self.episode} ends at the next tick"

    def stop(self) -> Tuple[bool, str]:
        ok, msg = self._request_end(END_RESET_REQUEST)
        self.counters["stopped"] += int(ok)
        return ok, msg

    @property
    def will_tick(self) -> bool:
        """Whether the next call to next_tick() publishes a tick."""
        return self.running or ((self.cfg.auto_start or self._restart) and not self.not_ready)

    def reset(self) -> Tuple[bool, str]:
        """End the running episode (reset request) and start the next right after it."""
        self._restart = True
        if self.running:
            self._request_end(END_RESET_REQUEST)
            return True, f"episode {self.episode} ends at the next tick; episode {self.episode + 1} follows"
        if self.not_ready:
            return True, (f"episode {self.episode + 1} starts once the graph is ready "
                          f"({self.not_ready})")
        return True, f"episode {self.episode + 1} starts at the next tick"

    def mark_success(self) -> Tuple[bool, str]:
        if self.cfg.success_source == "completion":
            return False, "success_source is 'completion': the operator cannot mark success"
        ok, msg = self._request_end(END_SUCCESS)
        self.counters["successes_operator"] += int(ok)
        return ok, msg

    def mark_failure(self) -> Tuple[bool, str]:
        return self._request_end(END_FAILURE)

    def on_held(self, episode: int, completion: float, stale: bool) -> None:
        if not self.running or episode != self.episode or self.cfg.success_source == "operator":
            return
        if not stale and math.isfinite(completion) and completion >= self.cfg.completion_threshold:
            self._streak += 1
            if self._streak >= self.cfg.completion_ticks and self._end is None:
                self._end = END_SUCCESS
                self.counters["successes_completion"] += 1
        else:
            self._streak = 0

    def next_tick(self) -> Optional[TickOut]:
        """The tick to publish now, or None while idle (auto_start starts one)."""
        if not self.running:
            if not (self.cfg.auto_start or self._restart) or self.not_ready:
                return None
            self._restart = False
            self.start()
        t = self.tick
        end = self._end
        if end is None and t >= self.cfg.max_episode_ticks:
            end = END_TIME_LIMIT
            self.counters["time_limits"] += 1
        out = TickOut(self.episode, t, t == 0, end is not None, end if end is not None else END_NONE)
        if end is not None:
            self.running = False
        else:
            self.tick += 1
        return out
