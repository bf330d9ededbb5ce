"""Scripted demonstrations from privileged simulator state, for allowed tasks that have no
ManiSkill motion-planning solution (RollBall-v1, PokeCube-v1).

Each script is a closed-loop controller in the bridge's control mode (``pd_ee_delta_pose``): it
reads the object, goal and gripper poses from the simulator (state a policy never sees) and
returns the next normalised action. ``lrm_ros.sim.demos`` runs it in :class:`ManiSkillSim`
from the demo's seed and records the episode like a motion-planned one; a seed whose scripted
run does not succeed is counted as lost, with the reason.

Measured with ``python -m lrm_ros.sim.demos --tasks RollBall-v1 PokeCube-v1 -n 24 --width 32
--height 32 --max-episode-ticks auto`` (seeds 0-23): RollBall 20 of 24 successful in 58-86 ticks
(seed 8: the ball lies too close to the robot's base to get behind it; three rolled past the
goal's side); PokeCube 20 of 24 in 34-39 ticks (the others pushed the cube past the goal's
side). 2 minutes for the 48 seeds.

ROS-free; ManiSkill is only reached through the ``ManiSkillSim`` handed in.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

__all__ = ["SCRIPTS", "make_script", "RollBallScript", "PokeCubeScript"]


def _vec(x: Any) -> np.ndarray:
    """The first environment's row of a (batched) torch tensor, as float64 numpy."""
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    return np.asarray(a, np.float64).reshape(-1, a.shape[-1])[0]


def _rotation(q_wxyz: np.ndarray) -> np.ndarray:
    w, x, y, z = q_wxyz
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _wrap(angle: float, period: float = 2 * math.pi) -> float:
    return (angle + period / 2) % period - period / 2


class _Script:
    """Shared by the scripts: poses in the world frame, actions in the robot root's frame
    (``pd_ee_delta_pose`` with ``root_translation:root_aligned_body_rotation``: a translation
    of +1 moves the gripper 0.1 m along the root's axis; a rotation of +1 turns it by -0.1 rad
    about the vertical, measured here)."""

    gain = 10.0          # action per metre of position error (clipped to [-1, 1])
    yaw_gain = 10.0      # action per radian of yaw error

    def __init__(self, env: Any):
        self.env = env
        self.root = _rotation(_vec(env.agent.robot.pose.q))
        self.phase = 0
        self.ticks = 0

    def tcp(self) -> np.ndarray:
        return _vec(self.env.agent.tcp.pose.p)

    def tcp_rotation(self) -> np.ndarray:
        return _rotation(_vec(self.env.agent.tcp.pose.q))

    def move(self, world_delta: np.ndarray, limit: float = 1.0) -> np.ndarray:
        return np.clip(self.root.T @ np.asarray(world_delta, np.float64), -limit, limit)

    def action(self, translation: np.ndarray, yaw_error: float, gripper: float) -> np.ndarray:
        a = np.zeros(7)
        a[:3] = translation
        a[5] = float(np.clip(-self.yaw_gain * yaw_error, -1.0, 1.0))
        a[6] = gripper
        return a

    def __call__(self) -> np.ndarray:
        self.ticks += 1
        return self.step()

    def step(self) -> np.ndarray:   # pragma: no cover - each script defines it
        raise NotImplementedError


class RollBallScript(_Script):
    """Roll the ball into the goal region: turn the closed gripper so the flat face of its
    fingers faces the goal (the ball leaves along that face's normal, whatever the contact
    point), go down behind the ball, push it towards the goal while steering sideways, and back
    off once it rolls at ``speed`` x sqrt(distance) (it barely slows down on the table)."""

    height = 0.035       # gripper height while pushing (the ball's centre)
    speed = 0.5          # push action per sqrt(metre) of ball-to-goal distance

    def __init__(self, env: Any):
        super().__init__(env)
        ball, goal = _vec(env.ball.pose.p), _vec(env.goal_region.pose.p)
        self.push = self.speed * math.sqrt(float(np.linalg.norm(goal[:2] - ball[:2])))

    def step(self) -> np.ndarray:
        env = self.env
        ball, goal, tcp = _vec(env.ball.pose.p), _vec(env.goal_region.pose.p), self.tcp()
        to_goal = goal[:2] - ball[:2]
        to_goal /= max(1e-9, float(np.linalg.norm(to_goal)))
        r = self.tcp_rotation()
        yaw_error = _wrap(math.atan2(to_goal[1], to_goal[0]) - math.atan2(r[1, 0], r[0, 0]))
        behind = np.r_[ball[:2] - to_goal * (float(env.ball_radius) + 0.03), self.height]
        above = behind + [0.0, 0.0, 0.07]
        if self.phase == 0:                      # above the point behind the ball, turned
            move = self.move(self.gain * (above - tcp))
            if np.linalg.norm(tcp - above) < 0.015:
                self.phase = 1
        elif self.phase == 1:                    # down behind it
            move = self.move(self.gain * (behind - tcp))
            if np.linalg.norm(tcp - behind) < 0.01 and abs(yaw_error) < 0.02:
                self.phase = 2
        elif self.phase == 2:                    # push towards the goal, steering sideways
            want = np.r_[ball[:2] - to_goal * (float(env.ball_radius) + 0.01), self.height]
            err = want - tcp
            err[:2] -= to_goal * float(np.dot(err[:2], to_goal))
            move = self.move(np.r_[to_goal * self.push, 0.0] + self.gain * err)
            if np.linalg.norm(_vec(env.ball.linear_velocity)[:2]) > self.push:
                self.phase = 3
        else:                                    # let it roll: back off and up
            move = self.move(np.r_[-to_goal * 0.3, 0.5])
        return self.action(move, yaw_error if self.phase < 3 else 0.0, -1.0)


class PokeCubeScript(_Script):
    """Poke the cube onto the goal with the peg: grasp the peg across its middle, line its head
    up behind the cube, push along the peg until the cube sits on the goal, then hold still
    (success needs a static robot)."""

    carry_height = 0.035  # gripper height with the peg (its centre lies at 0.025)

    def __init__(self, env: Any):
        super().__init__(env)
        self.closed_at = 0

    def step(self) -> np.ndarray:
        env = self.env
        peg, cube, goal = _vec(env.peg.pose.p), _vec(env.cube.pose.p), _vec(env.goal_region.pose.p)
        head, tcp = _vec(env.peg_head_pos), self.tcp()
        r = self.tcp_rotation()
        # the fingers close along the gripper's y axis: across the peg, i.e. along world y
        yaw_error = _wrap(math.pi / 2 - math.atan2(r[1, 1], r[0, 1]), math.pi)
        grip, limit = -1.0, 1.0
        grip_offset = (tcp - head) * [1.0, 1.0, 0.0]     # gripper relative to the peg's head
        half = float(env.cube_half_size)
        if self.phase == 0:                       # above the peg's middle, turned across it
            target, grip = peg + [0.0, 0.0, 0.08], 1.0
            if np.linalg.norm(tcp - target) < 0.01 and abs(yaw_error) < 0.03:
                self.phase = 1
        elif self.phase == 1:                     # down around it
            target, grip = peg, 1.0
            if np.linalg.norm(tcp - target) < 0.008:
                self.phase, self.closed_at = 2, self.ticks
        elif self.phase == 2:                     # close
            target = peg
            if self.ticks - self.closed_at > 8:
                self.phase = 3
        elif self.phase == 3:                     # the head behind the cube, in line with it
            target = np.r_[cube[0] - half - 0.03, cube[1], self.carry_height] + grip_offset
            if np.linalg.norm((tcp - target)[:2]) < 0.006:
                self.phase = 4
        elif self.phase == 4:                     # push until the cube sits on the goal
            target = np.r_[goal[0] - half, goal[1], 0.0] + grip_offset
            target[2] = tcp[2]
            limit = 0.3
            if np.linalg.norm(cube[:2] - goal[:2]) < 0.015:
                self.phase = 5
        else:                                     # hold still
            return self.action(np.zeros(3), 0.0, grip)
        return self.action(self.move(self.gain * (target - tcp), limit), yaw_error, grip)


SCRIPTS: dict[str, Callable[[Any], _Script]] = {
    "RollBall-v1": RollBallScript,
    "PokeCube-v1": PokeCubeScript,
}


def make_script(task: str, env: Any) -> _Script:
    """The scripted controller of ``task`` for the (unwrapped, just reset) ManiSkill ``env``."""
    try:
        return SCRIPTS[task](env)
    except KeyError:
        raise ValueError(f"no scripted demonstration for {task!r}; scripted: {', '.join(SCRIPTS)}") from None
