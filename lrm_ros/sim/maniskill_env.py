"""A single ManiSkill3 environment as the bridge sees it: one camera, joint states, oracle rewards.

ROS-free: imports no rclpy and no message packages. ManiSkill (and SAPIEN, torch) are imported
lazily when the first :class:`ManiSkillSim` is created, after the Vulkan driver was located.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .tasks import TASK_INSTRUCTIONS, instruction_for
from .vulkan import ensure_vulkan_icd

__all__ = ["SimConfig", "SimObservation", "SimStep", "ManiSkillSim"]

_SIM_BACKENDS = ("physx_cpu", "cpu", "physx_cuda", "gpu", "physx_gpu")
_RENDER_BACKENDS = ("auto", "cpu", "gpu", "sapien_cpu", "sapien_cuda", "none")
_MAX_CAMERA_SIDE = 4096


@dataclass(frozen=True)
class SimConfig:
    env_id: str = "PickCube-v1"
    control_mode: str = "pd_ee_delta_pose"
    camera_width: int = 256
    camera_height: int = 256
    camera_name: str = ""  # "" = the task's first sensor camera
    max_episode_ticks: int = 100  # time limit, in control ticks
    sim_backend: str = "physx_cpu"
    instruction: str = ""  # "" = TASK_INSTRUCTIONS[env_id]
    render_backend: str = "auto"  # "auto": "gpu" when torch sees CUDA, else "cpu"

    def __post_init__(self) -> None:
        if not isinstance(self.env_id, str) or not self.env_id.strip():
            raise ValueError("SimConfig.env_id must be a ManiSkill task id such as 'PickCube-v1'")
        if not self.instruction.strip() and self.env_id not in TASK_INSTRUCTIONS:
            raise ValueError(
                f"SimConfig: no instruction known for env_id {self.env_id!r}; set "
                f"SimConfig.instruction explicitly or use one of: {', '.join(sorted(TASK_INSTRUCTIONS))}"
            )
        if not isinstance(self.control_mode, str) or not self.control_mode.strip():
            raise ValueError("SimConfig.control_mode must be a ManiSkill control mode, e.g. 'pd_ee_delta_pose'")
        for name in ("camera_width", "camera_height"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not (8 <= v <= _MAX_CAMERA_SIDE):
                raise ValueError(
                    f"SimConfig.{name} must be an integer number of pixels in [8, {_MAX_CAMERA_SIDE}], got {v!r}"
                )
        v = self.max_episode_ticks
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"SimConfig.max_episode_ticks must be a positive integer (control ticks), got {v!r}")
        if self.sim_backend not in _SIM_BACKENDS:
            raise ValueError(
                f"SimConfig.sim_backend must be one of {_SIM_BACKENDS} ('physx_cpu' without a GPU), "
                f"got {self.sim_backend!r}"
            )
        if self.render_backend not in _RENDER_BACKENDS:
            raise ValueError(
                f"SimConfig.render_backend must be one of {_RENDER_BACKENDS}, got {self.render_backend!r}"
            )

    @property
    def resolved_instruction(self) -> str:
        return instruction_for(self.env_id, self.instruction)


@dataclass
class SimObservation:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    intrinsics: np.ndarray  # (3, 3) float64 pinhole K
    joint_names: list[str]
    joint_positions: np.ndarray  # float64
    joint_velocities: np.ndarray  # float64


@dataclass
class SimStep:
    observation: SimObservation
    dense_reward: float  # NaN where the task has no dense reward
    normalized_dense_reward: float  # NaN where none
    success: bool
    failure: bool
    terminated: bool  # success or failure ended the episode
    truncated: bool  # max_episode_ticks reached
    info: dict[str, Any] = field(default_factory=dict, repr=False)  # scalar extras from the task


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _scalar_bool(x: Any) -> bool:
    return bool(_np(x).reshape(-1)[0]) if x is not None else False


def _scalar_float(x: Any) -> float:
    return float(_np(x).reshape(-1)[0])


class ManiSkillSim:
    """One ManiSkill3 environment (num_envs=1) with a single RGB camera at the configured size."""

    def __init__(self, config: SimConfig):
        if not isinstance(config, SimConfig):
            raise TypeError(f"ManiSkillSim needs a SimConfig, got {type(config).__name__}")
        self.config = config
        self.instruction = config.resolved_instruction
        ensure_vulkan_icd()

        import gymnasium as gym
        import mani_skill.envs  # noqa: F401  (registers the tasks)
        import torch

        self._torch = torch
        if config.env_id not in gym.registry:
            raise ValueError(
                f"unknown ManiSkill task {config.env_id!r}; offline tasks with instructions: "
                f"{', '.join(sorted(TASK_INSTRUCTIONS))}"
            )
        render_backend = config.render_backend
        if render_backend == "auto":
            render_backend = "gpu" if torch.cuda.is_available() else "cpu"

        reward_modes = self._supported_reward_modes(config.env_id)
        self.has_dense_reward = "normalized_dense" in reward_modes and "dense" in reward_modes
        reward_mode = "normalized_dense" if self.has_dense_reward else "sparse"
        kwargs = dict(
            obs_mode="rgb",
            control_mode=config.control_mode,
            num_envs=1,
            sim_backend=config.sim_backend,
            render_backend=render_backend,
            reward_mode=reward_mode,
            sensor_configs=dict(width=config.camera_width, height=config.camera_height),
            max_episode_steps=config.max_episode_ticks,
        )
        try:
            self._env = gym.make(config.env_id, **kwargs)
        except (AssertionError, ValueError, NotImplementedError, KeyError) as e:
            raise ValueError(
                f"cannot create {config.env_id} with control_mode={config.control_mode!r}: {e}"
            ) from e
        self._u = self._env.unwrapped

        space = self._u.single_action_space
        if not hasattr(space, "low") or len(space.shape) != 1:
            self._env.close()
            raise ValueError(
                f"{config.env_id} with control_mode={config.control_mode!r} has a non-flat action space "
                f"{space}; only single-robot tasks with a Box action space are supported"
            )
        self.action_dim = int(space.shape[0])
        self.action_low = np.asarray(space.low, dtype=np.float64).copy()
        self.action_high = np.asarray(space.high, dtype=np.float64).copy()
        self.control_freq = float(getattr(self._u, "control_freq", 20) or 20)
        self.control_period = 1.0 / self.control_freq

        cameras = list(self._u._sensor_configs.keys())
        if not cameras:
            self._env.close()
            raise ValueError(f"{config.env_id} has no sensor camera")
        if config.camera_name and config.camera_name not in cameras:
            self._env.close()
            raise ValueError(
                f"SimConfig.camera_name {config.camera_name!r} is not a camera of {config.env_id}; "
                f"choose one of {cameras} (or '' for the first)"
            )
        self.camera_name = config.camera_name or cameras[0]
        self.camera_frame_id = f"{self.camera_name}_optical_frame"
        self.joint_names = [j.name for j in self._u.agent.robot.get_active_joints()]
        self.tick = 0
        self.episode_seed: int | None = None
        self._done = True
        self._closed = False

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _supported_reward_modes(env_id: str) -> tuple[str, ...]:
        from mani_skill.utils.registration import REGISTERED_ENVS

        spec = REGISTERED_ENVS.get(env_id)
        cls = getattr(spec, "cls", None)
        return tuple(getattr(cls, "SUPPORTED_REWARD_MODES", ()))

    def _observation(self, obs: dict) -> SimObservation:
        cam = obs["sensor_data"][self.camera_name]
        image = _np(cam["rgb"])[0]
        if image.dtype != np.uint8:
            image = np.clip(image, 0, 255).astype(np.uint8)
        image = np.ascontiguousarray(image[..., :3])
        k = _np(obs["sensor_param"][self.camera_name]["intrinsic_cv"])[0].astype(np.float64)
        qpos = _np(obs["agent"]["qpos"])[0].astype(np.float64)
        qvel = _np(obs["agent"]["qvel"])[0].astype(np.float64)
        return SimObservation(
            image=image,
            intrinsics=k,
            joint_names=list(self.joint_names),
            joint_positions=qpos,
            joint_velocities=qvel,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("ManiSkillSim is closed")

    @property
    def privileged_env(self) -> Any:
        """The unwrapped ManiSkill env (object and goal poses): for scripted demonstrations
        (``lrm_ros.sim.scripted``), never for a policy or a reward model."""
        self._check_open()
        return self._u

    # ------------------------------------------------------------------ API
    def reset(self, seed: int | None = None, state: dict | None = None) -> SimObservation:
        """Start an episode. ``seed`` fixes the task's randomisation; ``state`` (a ManiSkill state
        dict, e.g. the first ``env_states`` entry of a recorded trajectory) overrides the initial
        state after the seeded reset (one extra render)."""
        self._check_open()
        if seed is not None:
            seed = int(seed)
        obs, _ = self._env.reset(seed=seed)
        if state is not None:
            self._u.set_state_dict(state)
            obs = self._u.get_obs()
        self.episode_seed = seed
        self.tick = 0
        self._done = False
        return self._observation(obs)

    def validate_action(self, action: Any) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"action must be a sequence of {self.action_dim} numbers: {e}") from None
        if a.ndim == 2 and a.shape[0] == 1:
            a = a[0]
        if a.shape != (self.action_dim,):
            raise ValueError(
                f"action has {a.size} value(s) (shape {a.shape}) but {self.config.env_id} with control mode "
                f"{self.config.control_mode!r} takes {self.action_dim} (bounds {self.action_low.tolist()} .. "
                f"{self.action_high.tolist()})"
            )
        if not np.all(np.isfinite(a)):
            bad = [i for i in range(a.size) if not math.isfinite(a[i])]
            raise ValueError(f"action has non-finite value(s) at index {bad}: {a.tolist()}")
        return a

    def step(self, action: np.ndarray) -> SimStep:
        """Apply one action (clipped to the action bounds) and advance one control tick."""
        self._check_open()
        a = self.validate_action(action)
        if self._done:
            raise RuntimeError("the episode has ended (or never started): call reset() before step()")
        a = np.clip(a, self.action_low, self.action_high)
        torch = self._torch
        at = torch.as_tensor(a[None], dtype=torch.float32)
        obs, reward, terminated, truncated, info = self._env.step(at)
        self.tick += 1
        if self.has_dense_reward:
            norm = _scalar_float(reward)
            with torch.no_grad():
                dense = _scalar_float(self._u.compute_dense_reward(obs=obs, action=at, info=info))
        else:
            norm = dense = float("nan")
        success = _scalar_bool(info.get("success"))
        failure = _scalar_bool(info.get("fail"))
        terminated = _scalar_bool(terminated)
        truncated = _scalar_bool(truncated)
        self._done = terminated or truncated
        extras = {}
        for k, v in info.items():
            if k in ("success", "fail", "elapsed_steps"):
                continue
            arr = _np(v)
            if arr.size == 1 and arr.dtype.kind in "bif":
                extras[k] = arr.reshape(-1)[0].item()
        return SimStep(
            observation=self._observation(obs),
            dense_reward=dense,
            normalized_dense_reward=norm,
            success=success,
            failure=failure,
            terminated=terminated,
            truncated=truncated,
            info=extras,
        )

    @property
    def episode_done(self) -> bool:
        return self._done

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._env.close()

    def __enter__(self) -> "ManiSkillSim":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # best effort
        try:
            self.close()
        except Exception:
            pass

