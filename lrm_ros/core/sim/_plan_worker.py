"""Subprocess worker for demos.py: motion-plan demonstrations and convert their control mode.

Run as ``python -m lrm_ros.core.sim._plan_worker --task T --seeds 0 1 2 --out DIR --control-mode M``.
It runs in its own process because the motion planner (mplib) can crash the interpreter, and
writes ``DIR/result.json``:
``{"planned": {seed: bool}, "converted_h5": path or null, "converted_json": path or null,
"plan_errors": {seed: message}}``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import traceback
from pathlib import Path


def _plan(task: str, seeds: list[int], out: Path) -> tuple[dict[int, bool], dict[int, str], Path | None]:
    import gymnasium as gym
    import mani_skill.envs  # noqa: F401
    from mani_skill.examples.motionplanning.panda.run import MP_SOLUTIONS
    from mani_skill.utils.wrappers.record import RecordEpisode

    if task not in MP_SOLUTIONS:
        raise ValueError(f"no motion-planning solution for {task}; available: {sorted(MP_SOLUTIONS)}")
    solve = MP_SOLUTIONS[task]
    env = gym.make(task, obs_mode="none", control_mode="pd_joint_pos", sim_backend="physx_cpu")
    env = RecordEpisode(
        env,
        output_dir=str(out),
        trajectory_name="plan",
        save_video=False,
        source_type="motionplanning",
        source_desc="official motion planning solution from ManiSkill contributors",
        record_reward=False,
        save_on_reset=False,
    )
    h5 = Path(env._h5_file.filename)
    planned: dict[int, bool] = {}
    errors: dict[int, str] = {}
    for seed in seeds:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                res = solve(env, seed=seed, debug=False, vis=False)
        except Exception as e:  # the planner's own failures are data, not fatal
            res = -1
            errors[seed] = f"{type(e).__name__}: {e}"
        ok = res != -1 and bool(res[-1]["success"].item())
        if res == -1 and seed not in errors:
            errors[seed] = "no motion plan found"
        elif res != -1 and not ok:
            errors[seed] = "plan executed but the task was not solved"
        planned[seed] = ok
        env.flush_trajectory(save=ok)
    env.close()
    return planned, errors, (h5 if any(planned.values()) else None)


def _convert(h5: Path, control_mode: str) -> tuple[Path, Path]:
    from mani_skill.trajectory import replay_trajectory as rt

    args = rt.Args(
        traj_path=str(h5),
        sim_backend="physx_cpu",
        obs_mode="none",
        target_control_mode=control_mode,
        save_traj=True,
        num_envs=1,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        rt.main(args)
    out = h5.with_name(f"{h5.stem}.none.{control_mode}.physx_cpu.h5")
    if not out.is_file():
        raise RuntimeError(f"control-mode conversion wrote no {out}")
    return out, out.with_suffix(".json")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--task", required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--control-mode", default="pd_ee_delta_pose")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"planned": {}, "plan_errors": {}, "converted_h5": None, "converted_json": None}
    try:
        planned, errors, h5 = _plan(a.task, a.seeds, a.out)
        result["planned"] = {str(k): v for k, v in planned.items()}
        result["plan_errors"] = {str(k): v for k, v in errors.items()}
        if h5 is not None:
            if a.control_mode == "pd_joint_pos":
                conv, conv_json = h5, h5.with_suffix(".json")
            else:
                conv, conv_json = _convert(h5, a.control_mode)
            result["converted_h5"], result["converted_json"] = str(conv), str(conv_json)
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    (a.out / "result.json").write_text(json.dumps(result, indent=1))
    sys.stdout.flush()
    # mplib / SAPIEN teardown can be slow or crash at exit; the result is written.
    os._exit(0 if "error" not in result else 3)


if __name__ == "__main__":
    main()
