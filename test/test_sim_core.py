"""ManiSkillSim on real ManiSkill3 (CPU physics, lavapipe rendering). ROS-free."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from lrm_ros.sim.maniskill_env import ManiSkillSim, SimConfig, SimObservation  # noqa: E402
from lrm_ros.sim.tasks import TASK_INSTRUCTIONS, instruction_for  # noqa: E402
from lrm_ros.sim.vulkan import ensure_vulkan_icd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim64():
    sim = ManiSkillSim(SimConfig(env_id="PickCube-v1", camera_width=64, camera_height=64, max_episode_ticks=6))
    yield sim
    sim.close()


def _check_obs(obs: SimObservation, h: int, w: int) -> None:
    assert obs.image.shape == (h, w, 3) and obs.image.dtype == np.uint8
    assert obs.image.flags["C_CONTIGUOUS"]
    assert obs.image.max() > 0
    assert obs.intrinsics.shape == (3, 3) and obs.intrinsics.dtype == np.float64
    assert obs.intrinsics[2, 2] == 1.0 and obs.intrinsics[0, 0] > 0
    # principal point near the image centre
    assert abs(obs.intrinsics[0, 2] - w / 2) < 1 and abs(obs.intrinsics[1, 2] - h / 2) < 1
    n = len(obs.joint_names)
    assert n == 9 and obs.joint_names[0] == "panda_joint1"
    assert obs.joint_positions.shape == (n,) and obs.joint_positions.dtype == np.float64
    assert obs.joint_velocities.shape == (n,) and obs.joint_velocities.dtype == np.float64


def test_step_shapes_rewards_and_instruction(sim64):
    assert sim64.instruction == TASK_INSTRUCTIONS["PickCube-v1"]
    assert sim64.action_dim == 7
    assert sim64.action_low.shape == sim64.action_high.shape == (7,)
    assert sim64.camera_frame_id == "base_camera_optical_frame"
    obs = sim64.reset(seed=1)
    _check_obs(obs, 64, 64)
    step = sim64.step(np.zeros(7))
    _check_obs(step.observation, 64, 64)
    assert np.isfinite(step.dense_reward) and np.isfinite(step.normalized_dense_reward)
    assert 0.0 <= step.normalized_dense_reward <= 1.0
    assert step.dense_reward >= step.normalized_dense_reward  # normalized = dense / max
    assert isinstance(step.success, bool) and not step.success
    assert not step.terminated and not step.truncated


def test_bad_actions_raise(sim64):
    sim64.reset(seed=0)
    with pytest.raises(ValueError, match=r"takes 7"):
        sim64.step(np.zeros(6))
    with pytest.raises(ValueError, match=r"non-finite value\(s\) at index \[2\]"):
        sim64.step(np.array([0, 0, np.nan, 0, 0, 0, 0.0]))
    with pytest.raises(ValueError):
        sim64.step("not an action")
    sim64.step(np.ones(7) * 5.0)  # out of bounds: clipped, not rejected


def test_truncation_at_max_episode_ticks(sim64):
    sim64.reset(seed=0)
    steps = [sim64.step(np.zeros(7)) for _ in range(6)]
    assert [s.truncated for s in steps] == [False] * 5 + [True]
    assert sim64.episode_done and sim64.tick == 6
    with pytest.raises(RuntimeError, match="reset"):
        sim64.step(np.zeros(7))


def test_reset_is_deterministic(sim64):
    a = sim64.reset(seed=7)
    sim64.step(np.full(7, 0.5))
    b = sim64.reset(seed=7)
    c = sim64.reset(seed=8)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.joint_positions, b.joint_positions)
    assert not np.array_equal(a.image, c.image)


def test_224_camera():
    sim = ManiSkillSim(SimConfig(camera_width=224, camera_height=224, instruction="grab it"))
    try:
        assert sim.instruction == "grab it"
        _check_obs(sim.reset(seed=0), 224, 224)
        _check_obs(sim.step(np.zeros(7)).observation, 224, 224)
    finally:
        sim.close()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(camera_width=0), "camera_width"),
        (dict(camera_height=64.0), "camera_height"),
        (dict(max_episode_ticks=0), "max_episode_ticks"),
        (dict(env_id="NoSuchTask-v9"), "PickCube-v1"),
        (dict(sim_backend="bullet"), "physx_cpu"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimConfig(**kwargs)


def test_instruction_for():
    assert instruction_for("StackCube-v1") == TASK_INSTRUCTIONS["StackCube-v1"]
    assert instruction_for("Foo-v1", "do the thing") == "do the thing"
    with pytest.raises(ValueError, match="PushCube-v1"):
        instruction_for("Foo-v1")
    for task in ("PickCube-v1", "PushCube-v1", "PullCube-v1", "StackCube-v1", "LiftPegUpright-v1",
                 "PegInsertionSide-v1", "PokeCube-v1", "PlaceSphere-v1", "RollBall-v1", "PushT-v1",
                 "PullCubeTool-v1", "PlugCharger-v1", "StackPyramid-v1"):
        assert TASK_INSTRUCTIONS[task]


def test_vulkan_icd_env_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("VK_ICD_FILENAMES", str(tmp_path / "missing.json"))
    with pytest.raises(RuntimeError, match="make setup"):
        ensure_vulkan_icd()


def test_import_is_ros_free():
    code = (
        "import sys, lrm_ros.sim.maniskill_env, lrm_ros.sim.demos, lrm_ros.bags.reader;"
        "bad = [m for m in sys.modules if m == 'rclpy' or m.split('.')[0].endswith('_msgs')];"
        "assert not bad, bad"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
