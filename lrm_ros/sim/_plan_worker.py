"""Subprocess worker for demos.py: motion-plan demonstrations and convert their control mode.

Run as ``python -m lrm_ros.sim._plan_worker --task T --seeds 0 1 2 --out DIR --control-mode M``.
It runs in its own process because the motion planner (mplib) can crash the interpreter, and
writes ``DIR/result.json``:
``{"planned": {seed: bool}, "plan_errors": {seed: message}, "plan_lengths": {seed: actions},
"converted_h5": path or null, "converted_json": path or null, "converted_lengths": {seed: actions},
"success_ticks": {seed: ticks or null}, "convert_errors": {seed: message}}``.

``success_ticks`` is the control tick at which a converted demo, replayed state-only from its
seed and first state as the demos' replay does, first reports success (a time limit needs at
least this many ticks; the converted trajectory itself may run longer, e.g. PlugCharger).

Every planned seed ends up in exactly one of ``converted_lengths`` and ``convert_errors``:
ManiSkill's control-mode conversion (``replay_trajectory``) drops an episode whose converted
replay does not end in success and only says so on stdout ("Episode N is not replayed
successfully. Skipping", with the final ``info`` when verbose); that output is captured here
and turned into a per-seed reason, and a seed dropped without any message is still reported.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import traceback
from pathlib import Path


def _episode_seed(ep: dict) -> int | None:
    seed = ep.get("episode_seed", (ep.get("reset_kwargs") or {}).get("seed"))
    if isinstance(seed, list):
        seed = seed[0] if seed else None
    return None if seed is None else int(seed)


def episode_lengths(json_path: Path) -> dict[int, int]:
    """seed -> number of actions of each episode listed in a ManiSkill trajectory .json."""
    meta = json.loads(Path(json_path).read_text())
    out = {}
    for ep in meta.get("episodes", []):
        seed = _episode_seed(ep)
        if seed is not None:
            out[seed] = int(ep.get("elapsed_steps", 0))
    return out


_SKIP = re.compile(r"Episode (\d+) is not replayed successfully")


def conversion_losses(stdout: str, plan_json: Path, converted: dict[int, int], control_mode: str
                      ) -> dict[int, str]:
    """seed -> why ManiSkill's conversion dropped it, for every planned seed that is missing
    from the converted trajectories (parsed from the conversion's captured stdout)."""
    meta = json.loads(Path(plan_json).read_text())
    seed_of = {int(ep["episode_id"]): _episode_seed(ep) for ep in meta.get("episodes", [])}
    lines = stdout.splitlines()
    said: dict[int, str] = {}
    for i, line in enumerate(lines):
        m = _SKIP.search(line)
        if not m:
            continue
        info = next((lines[j] for j in range(i - 1, max(-1, i - 4), -1) if lines[j].startswith("info ")), "")
        info = re.sub(r"\s+", " ", info[5:]).strip()
        if len(info) > 400:
            info = info[:400] + "..."
        msg = (f"dropped by the control-mode conversion to {control_mode}: its converted replay did not end "
               f"in success (ManiSkill: '{line.strip()}')")
        said[int(m.group(1))] = msg + (f"; final info: {info}" if info else "")
    lost = {}
    for eid, seed in seed_of.items():
        if seed is None or seed in converted:
            continue
        lost[seed] = said.get(eid, f"dropped by the control-mode conversion to {control_mode} "
                                   "(ManiSkill printed no reason)")
    return lost


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


def _convert(h5: Path, control_mode: str) -> tuple[Path | None, Path | None, dict[int, int], dict[int, str]]:
    """Convert the planned trajectories to ``control_mode``. Returns the converted .h5 and
    .json (None when no episode survived), seed -> converted length, seed -> loss reason."""
    from mani_skill.trajectory import replay_trajectory as rt

    args = rt.Args(
        traj_path=str(h5),
        sim_backend="physx_cpu",
        obs_mode="none",
        target_control_mode=control_mode,
        save_traj=True,
        num_envs=1,
        verbose=True,   # prints the final info of a dropped episode: part of its reason
    )
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        rt.main(args)
    text = captured.getvalue()
    # keep the conversion's own output in the worker log, without the per-step clipping chatter
    print("\n".join(line for line in text.splitlines() if " action is clipped" not in line))
    out = h5.with_name(f"{h5.stem}.none.{control_mode}.physx_cpu.h5")
    out_json = out.with_suffix(".json")
    converted = episode_lengths(out_json) if out_json.is_file() else {}
    lost = conversion_losses(text, h5.with_suffix(".json"), converted, control_mode)
    if not out.is_file() or not converted:
        return None, None, converted, lost
    return out, out_json, converted, lost


def success_ticks(task: str, h5: Path, json_path: Path, control_mode: str) -> dict[int, int | None]:
    """seed -> the first tick (number of actions applied) at which the converted demo reports
    success when replayed state-only from its seed and first recorded state; None: never."""
    import gymnasium as gym
    import h5py
    import mani_skill.envs  # noqa: F401
    import numpy as np

    def state_at(group, i):
        if isinstance(group, h5py.Dataset):
            return np.asarray(group[i])
        return {k: state_at(v, i) for k, v in group.items()}

    meta = json.loads(Path(json_path).read_text())
    env = gym.make(task, obs_mode="none", control_mode=control_mode, sim_backend="physx_cpu",
                   max_episode_steps=100_000)
    out: dict[int, int | None] = {}
    try:
        with h5py.File(h5, "r") as f:
            for ep in meta.get("episodes", []):
                seed = _episode_seed(ep)
                traj = f[f"traj_{ep['episode_id']}"]
                env.reset(seed=seed)
                env.unwrapped.set_state_dict(state_at(traj["env_states"], 0))
                out[seed] = None
                for t, a in enumerate(np.asarray(traj["actions"]), start=1):
                    _, _, _, _, info = env.step(a)
                    if bool(np.asarray(info.get("success", False)).any()):
                        out[seed] = t
                        break
    finally:
        env.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--task", required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--control-mode", default="pd_ee_delta_pose")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"planned": {}, "plan_errors": {}, "plan_lengths": {}, "converted_h5": None,
                    "converted_json": None, "converted_lengths": {}, "success_ticks": {}, "convert_errors": {}}
    try:
        planned, errors, h5 = _plan(a.task, a.seeds, a.out)
        result["planned"] = {str(k): v for k, v in planned.items()}
        result["plan_errors"] = {str(k): v for k, v in errors.items()}
        if h5 is not None:
            plan_lengths = episode_lengths(h5.with_suffix(".json"))
            result["plan_lengths"] = {str(k): v for k, v in plan_lengths.items()}
            if a.control_mode == "pd_joint_pos":
                conv, conv_json, lengths, lost = h5, h5.with_suffix(".json"), plan_lengths, {}
            else:
                conv, conv_json, lengths, lost = _convert(h5, a.control_mode)
            result["converted_lengths"] = {str(k): v for k, v in lengths.items()}
            result["convert_errors"] = {str(k): v for k, v in lost.items()}
            if conv is not None:
                result["converted_h5"], result["converted_json"] = str(conv), str(conv_json)
                try:
                    ticks = success_ticks(a.task, conv, conv_json, a.control_mode)
                    result["success_ticks"] = {str(k): v for k, v in ticks.items()}
                except Exception as e:   # only a measurement: the demos' replay still runs
                    result["success_ticks_error"] = f"{type(e).__name__}: {e}"
                    traceback.print_exc()
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    (a.out / "result.json").write_text(json.dumps(result, indent=1))
    sys.stdout.flush()
    # mplib / SAPIEN teardown can be slow or crash at exit; the result is written.
    os._exit(0 if "error" not in result else 3)


if __name__ == "__main__":
    main()
