"""Plain-English instructions for the ManiSkill3 tasks that run offline (no asset download)."""

from __future__ import annotations

import math

__all__ = [
    "TASK_INSTRUCTIONS",
    "MOTION_PLANNING_TASKS",
    "SCRIPTED_TASKS",
    "DEMO_TASKS",
    "RESERVED_EVAL_TASKS",
    "LITE_TRAIN_TASKS",
    "instruction_for",
    "known_tasks",
    "RECOMMENDED_MAX_EPISODE_TICKS",
    "recommended_max_ticks",
    "time_limit_for",
]

TASK_INSTRUCTIONS: dict[str, str] = {
    "PickCube-v1": "pick up the red cube and move it to the green target",
    "PushCube-v1": "push the cube to the red and white target region in front of it",
    "PullCube-v1": "pull the cube back onto the red and white target",
    "StackCube-v1": "stack the red cube on top of the green cube",
    "LiftPegUpright-v1": "lift the peg lying on the table and stand it upright",
    "PegInsertionSide-v1": "pick up the peg and insert its orange end into the hole in the box",
    "PokeCube-v1": "use the peg to push the red cube to the goal",
    "PlaceSphere-v1": "place the sphere into the shallow bin",
    "RollBall-v1": "push the ball so it rolls to the goal region at the other end of the table",
    "PushT-v1": "push the T-shaped block so it matches the T-shaped target",
    "PullCubeTool-v1": "use the L-shaped tool to pull the cube closer",
    "PlugCharger-v1": "plug the charger into the wall socket",
    "StackPyramid-v1": "place the red cube next to the green cube and stack the blue cube on top of both",
}

# Tasks with an official ManiSkill motion-planning solution for the Panda arm
# (mani_skill.examples.motionplanning.panda) that run offline.
MOTION_PLANNING_TASKS: tuple[str, ...] = (
    "PickCube-v1",
    "PushCube-v1",
    "PullCube-v1",
    "StackCube-v1",
    "LiftPegUpright-v1",
    "PegInsertionSide-v1",
    "PlaceSphere-v1",
    "PullCubeTool-v1",
    "PlugCharger-v1",
    "StackPyramid-v1",
)

# Tasks reserved for the independent evaluation of reward models: no reward model is trained,
# tuned or selected on them (lrm-ros train-lite refuses them as training or leave-task-out
# tasks). Demos and failures of them may be generated, to evaluate on.
RESERVED_EVAL_TASKS: tuple[str, ...] = (
    "PullCubeTool-v1",
    "PlugCharger-v1",
    "PegInsertionSide-v1",
    "PlaceSphere-v1",
)

# Tasks whose demonstrations lrm_ros.sim.demos generates and tests routinely (the planner
# succeeds on nearly every seed, and the conversion to pd_ee_delta_pose replays reliably).
DEMO_TASKS: tuple[str, ...] = (
    "PickCube-v1",
    "PushCube-v1",
    "PullCube-v1",
    "StackCube-v1",
    "LiftPegUpright-v1",
)

# Offline tasks without a motion-planning solution whose demos come from a scripted controller
# on privileged state (lrm_ros.sim.scripted).
SCRIPTED_TASKS: tuple[str, ...] = (
    "RollBall-v1",
    "PokeCube-v1",
)

# Tasks the lite reward model trains on: every task with motion-planned or scripted demos here
# except the reserved ones (lrm-ros train-lite; leave-task-out folds run over these).
LITE_TRAIN_TASKS: tuple[str, ...] = tuple(t for t in MOTION_PLANNING_TASKS + SCRIPTED_TASKS
                                          if t not in RESERVED_EVAL_TASKS)

# Time limits (control ticks at 20 Hz) for every task with a motion-planning solution: at least
# the longest measured motion-planned demo, converted to pd_ee_delta_pose, needs to reach success
# (ticks to success; bench/measure_demo_lengths.py -n 20, seeds 0-19, results in
# bench/results/demo_lengths.json). The five demo tasks keep their earlier limits, which cover
# the measured maxima (PickCube 84, PushCube 70, PullCube 79, StackCube 122, LiftPegUpright 189);
# the others get time_limit_for(max) (+25%, rounded up to 10): PegInsertionSide 185 -> 240,
# PlaceSphere 135 -> 170, PullCubeTool 282 -> 360, PlugCharger 227 -> 290, StackPyramid
# 228 -> 290. `--max-episode-ticks auto` raises a task's limit further when a demo of the run
# needs more (demos.auto_max_ticks). The bridge's default (max_episode_ticks 0) is this table.
RECOMMENDED_MAX_EPISODE_TICKS: dict[str, int] = {
    "PickCube-v1": 100,
    "PushCube-v1": 100,
    "PullCube-v1": 100,
    "StackCube-v1": 150,
    "LiftPegUpright-v1": 250,
    "PegInsertionSide-v1": 240,
    "PlaceSphere-v1": 170,
    "PullCubeTool-v1": 360,
    "PlugCharger-v1": 290,
    "StackPyramid-v1": 290,
    # scripted (lrm_ros.sim.scripted): time_limit_for the longest successful run of seeds 0-23 (86, 39)
    "RollBall-v1": 110,
    "PokeCube-v1": 50,
}


def recommended_max_ticks(env_id: str) -> int:
    """The time limit for ``env_id`` from RECOMMENDED_MAX_EPISODE_TICKS; 100 for a task that
    has no motion-planned demos to measure (give those an explicit limit, or let the demos /
    failures tools derive one from their demos' lengths)."""
    return RECOMMENDED_MAX_EPISODE_TICKS.get(env_id, 100)


def time_limit_for(length: int) -> int:
    """A time limit (control ticks) for demos of up to ``length`` actions: +25% margin, rounded
    up to a multiple of 10."""
    return int(math.ceil(max(0, int(length)) * 1.25 / 10.0) * 10)


def known_tasks() -> list[str]:
    return sorted(TASK_INSTRUCTIONS)


def instruction_for(env_id: str, override: str = "") -> str:
    """The instruction for ``env_id``; a non-empty ``override`` wins (for tasks not listed).

    Raises ValueError naming the known tasks when there is neither.
    """
    if override and override.strip():
        return override.strip()
    try:
        return TASK_INSTRUCTIONS[env_id]
    except KeyError:
        raise ValueError(
            f"no instruction known for task {env_id!r}; known tasks: {', '.join(known_tasks())}. "
            "Pass an explicit instruction (SimConfig.instruction / the 'instruction' parameter) "
            "for other tasks."
        ) from None
