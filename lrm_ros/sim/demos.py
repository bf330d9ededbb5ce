"""Demonstrations from ManiSkill's own motion planners (or, for RollBall and PokeCube, scripted
controllers on privileged state: ``lrm_ros.sim.scripted``), recorded as lrm_ros episode bags.

Pipeline per task (ROS-free):
  1. plan: ManiSkill's official Panda motion-planning solutions (pd_joint_pos), one seed per demo,
     in a subprocess (``_plan_worker``; the planner can crash the interpreter);
  2. convert: ``mani_skill.trajectory.replay_trajectory`` turns the joint-position actions into the
     bridge's control mode (default pd_ee_delta_pose), state-only (fast);
  3. replay: the converted actions are replayed in :class:`ManiSkillSim` (the camera size,
     instruction and time limit the bridge uses), from the demo's seed and first recorded state,
     recording frames, joint states, actions and the oracle rewards per tick;
  4. store: one rosbag2 mcap bag per task with the graph's own topics (docs/DATA.md), and
     ``summary.json``, merged with the folder's earlier runs (tasks run in batches keep theirs).

A scripted task skips steps 1-3: its controller runs in :class:`ManiSkillSim` from the seed,
and the run is recorded as it happens.

Every requested seed is accounted for: it is written, or listed under ``lost`` with the stage
(plan / convert / replay / planner / script) and the reason, so requested == written + lost.

CLI: ``python -m lrm_ros.sim.demos --tasks PickCube-v1 -n 10 --out data/demos``

Why one file of about 560 lines: planning (in a worker process), conversion, replay, the
scripted runs and the summary are one pipeline handing each other the same per-seed entries;
in one file the bookkeeping requested == written + lost stays in one place.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lrm_ros.common.atomic import atomic_write_json
from lrm_ros.common.episode_end import END_FAILURE, END_NONE, END_RESET_REQUEST, END_SUCCESS, END_TIME_LIMIT

from .maniskill_env import ManiSkillSim, SimConfig
from .tasks import DEMO_TASKS, MOTION_PLANNING_TASKS, SCRIPTED_TASKS, recommended_max_ticks, time_limit_for
from .vulkan import ensure_vulkan_icd

__all__ = ["generate_demos", "main", "DEMO_TASKS", "write_summary", "auto_max_ticks"]

EPISODE_GAP_S = 1.0  # simulated time between the last tick of an episode and the next tick 0
START_S = 1.0  # stamp of the first tick of the first episode


def _h5_state(group: Any, index: int) -> Any:
    """Nested dict of the ``index``-th entry of every dataset in an h5 group (ManiSkill env_states)."""
    import h5py

    if isinstance(group, h5py.Dataset):
        return np.asarray(group[index])
    return {k: _h5_state(v, index) for k, v in group.items()}


def _run_worker(task: str, seeds: list[int], work: Path, control_mode: str, timeout_s: float) -> dict:
    import lrm_ros

    pkg_root = str(Path(lrm_ros.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "lrm_ros.sim._plan_worker", "--task", task, "--out", str(work),
           "--control-mode", control_mode, "--seeds", *map(str, seeds)]
    log = work / "worker.log"
    work.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as f:
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                  env=env, timeout=timeout_s)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    result_file = work / "result.json"
    if result_file.is_file():
        result = json.loads(result_file.read_text())
    else:
        result = {"planned": {}, "plan_errors": {}, "converted_h5": None}
    if rc != 0 and "error" not in result:
        result["error"] = "planner timed out" if rc is None else f"planner process exited with {rc}"
    if "error" in result:
        tail = log.read_text(errors="replace")[-2000:]
        result["error"] += f"\n--- {log} (tail) ---\n{tail}"
    return result


def _bag_stamp_ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def auto_max_ticks(task: str, lengths: list[int] | tuple[int, ...] = ()) -> tuple[int, str]:
    """``--max-episode-ticks auto`` for one task: the measured recommendation
    (``tasks.recommended_max_ticks``) or, when a demo of this run needs more ticks than that
    (``lengths``: ticks to success, else converted actions; it would be cut off before its
    success), ``tasks.time_limit_for`` that length (+25%, rounded up to 10). Returns
    (limit, how it was chosen)."""
    table = recommended_max_ticks(task)
    if lengths and max(lengths) > table:
        return (time_limit_for(max(lengths)),
                f"auto: the longest demo of this run ({max(lengths)} ticks) + 25% "
                f"(more than the measured recommendation {table})")
    return table, f"auto: the measured recommendation for {task} (tasks.RECOMMENDED_MAX_EPISODE_TICKS)"


_TASK_DEFAULTS = ("control_mode", "camera", "max_episode_ticks", "seed")


def write_summary(out_dir: Path | str, summary: dict, total_keys: tuple[str, ...]) -> dict:
    """Write ``out_dir/summary.json`` for this run, merged with the one already there.

    Tasks of this run replace their earlier entries; tasks of earlier runs are kept (so
    generating tasks in batches into one folder loses nothing). Each task entry carries its own
    run's settings (``control_mode``, ``camera``, ``max_episode_ticks``, ``seed``: filled from
    an older summary's top level where missing); the top-level fields are this run's (older
    readers still find them); ``totals`` cover all tasks; ``runs`` lists every run's tasks.
    An unreadable summary.json is kept aside as summary.json.unreadable (noted in ``warnings``).
    Returns the merged summary."""
    out_dir = Path(out_dir)
    path = out_dir / "summary.json"
    merged = dict(summary)
    tasks: dict = {}
    runs: list = []
    warnings: list = list(summary.get("warnings", []))
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            if not isinstance(old, dict) or not isinstance(old.get("tasks", {}), dict):
                raise ValueError("not a summary object")
        except ValueError as e:
            aside = path.with_name("summary.json.unreadable")
            path.replace(aside)
            warnings.append(f"{path} was unreadable ({e}); kept as {aside}, its tasks are not merged")
            old = None
        if old is not None:
            if old.get("format") != summary.get("format"):
                raise ValueError(f"{path} is a {old.get('format')!r} summary, not {summary.get('format')!r}: "
                                 "write into another folder")
            for task, e in (old.get("tasks") or {}).items():
                if task not in summary["tasks"]:
                    e = dict(e)
                    for k in _TASK_DEFAULTS:
                        if k not in e and k in old:
                            e[k] = old[k]
                    tasks[task] = e
            runs = list(old.get("runs") or [{"tasks": sorted(old.get("tasks") or {}),
                                             "seconds": old.get("seconds"), "note": "run before runs were listed"}])
    tasks.update(summary["tasks"])
    merged["tasks"] = tasks
    merged["runs"] = runs + [{"tasks": list(summary["tasks"]), "seconds": summary.get("seconds"),
                              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]
    merged["totals"] = {k: sum(int(e.get(k, 0) or 0) for e in tasks.values()) for k in total_keys}
    if warnings:
        merged["warnings"] = warnings
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, merged, indent=2)
    return merged


def generate_demos(
    tasks: list[str],
    num_per_task: int,
    out_dir: Path | str,
    sim: SimConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    *,
    keep_failed: bool = False,
    overwrite: bool = False,
    planner_timeout_s: float = 1800.0,
    max_episode_ticks: dict[str, int] | str | None = None,
) -> dict:
    """Generate ``num_per_task`` motion-planned demos per task and store one bag per task.

    ``sim`` is the bridge's SimConfig (camera size, control mode, time limit, instruction); its
    env_id is replaced by each task. Demo i of a task uses seed ``seed + i``. Planner failures,
    demos the control-mode conversion drops and demos that do not succeed when replayed in
    ManiSkillSim are counted with their reason under ``lost`` (seed -> "stage: reason"), not
    fatal; only successful replays are stored unless ``keep_failed``. ``max_episode_ticks``
    overrides the time limit per task: a dict task -> ticks, or "auto" (``auto_max_ticks``:
    the measured recommendation, raised to cover this run's longest converted demo); the
    bridge must then use the same (the summary records each task's). Returns this run's
    summary; ``out_dir/summary.json`` gets it merged with earlier runs' tasks
    (``write_summary``). Each task's bag is ``out_dir/<task>``.
    """
    from tqdm.auto import tqdm

    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = list(dict.fromkeys(tasks))
    if not tasks:
        raise ValueError("generate_demos: no tasks given")
    unknown = [t for t in tasks if t not in MOTION_PLANNING_TASKS and t not in SCRIPTED_TASKS]
    if unknown:
        raise ValueError(
            f"no motion-planning solution or script for {unknown}; supported: "
            f"{', '.join(MOTION_PLANNING_TASKS)} (motion planning), {', '.join(SCRIPTED_TASKS)} "
            f"(scripted; routinely tested: {', '.join(DEMO_TASKS)})"
        )
    if isinstance(num_per_task, bool) or not isinstance(num_per_task, int) or num_per_task < 1:
        raise ValueError(f"num_per_task must be a positive integer, got {num_per_task!r}")
    template = sim or SimConfig()
    if template.instruction and len(tasks) > 1:
        raise ValueError("an explicit SimConfig.instruction applies to one task; pass one task at a time")
    if isinstance(max_episode_ticks, str) and max_episode_ticks != "auto":
        raise ValueError(f"max_episode_ticks must be a dict task -> ticks or 'auto', got {max_episode_ticks!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        bag = out_dir / task
        if bag.exists():
            if not overwrite:
                raise FileExistsError(f"{bag} exists; pass overwrite=True (--overwrite) or another out_dir")
            shutil.rmtree(bag)
    ensure_vulkan_icd()  # exported to the worker processes too

    summary: dict[str, Any] = {
        "format": "lrm_ros.demos/1",
        "control_mode": template.control_mode,
        "camera": [template.camera_width, template.camera_height],
        "max_episode_ticks": template.max_episode_ticks,
        # "auto" / "per task": each task entry's max_episode_ticks is the one used
        "max_episode_ticks_mode": ("auto" if max_episode_ticks == "auto" else
                                   "per task" if max_episode_ticks else "given"),
        "seed": seed,
        "tasks": {},
    }
    if (out_dir / "summary.json").is_file():   # a folder of another tool: fail before the work
        try:
            fmt = json.loads((out_dir / "summary.json").read_text()).get("format")
        except (ValueError, AttributeError):
            fmt = summary["format"]    # unreadable: write_summary keeps it aside
        if fmt != summary["format"]:
            raise ValueError(f"{out_dir / 'summary.json'} is a {fmt!r} summary, not {summary['format']!r}: "
                             "write the demos into another folder")
    t_all = time.perf_counter()
    bar = tqdm(total=len(tasks) * num_per_task, desc="demos", unit="demo", disable=not progress)
    try:
        for task in tasks:
            t0 = time.perf_counter()
            seeds = [seed + i for i in range(num_per_task)]
            entry: dict[str, Any] = {"requested": num_per_task, "planned": 0, "converted": 0, "replayed": 0,
                                     "episodes_written": 0, "ticks": 0, "lost": 0, "bag": None, "errors": {},
                                     "lost_seeds": {}, "lost_by_stage": {},
                                     "control_mode": template.control_mode,
                                     "camera": [template.camera_width, template.camera_height], "seed": seed}
            summary["tasks"][task] = entry
            if task in SCRIPTED_TASKS:
                cfg = dataclasses.replace(template, env_id=task)
                if isinstance(max_episode_ticks, dict) and task in max_episode_ticks:
                    cfg = dataclasses.replace(cfg, max_episode_ticks=int(max_episode_ticks[task]))
                elif max_episode_ticks == "auto":
                    cfg = dataclasses.replace(cfg, max_episode_ticks=recommended_max_ticks(task))
                entry["max_episode_ticks"] = cfg.max_episode_ticks
                entry["max_episode_ticks_from"] = "recommended" if max_episode_ticks == "auto" else "given"
                bar.set_description(f"{task}: scripted")
                _script_task(cfg, seeds, out_dir / task, entry, keep_failed, bar)
                entry["lost"] = len(entry["lost_seeds"])
                entry["seconds"] = round(time.perf_counter() - t0, 2)
                entry["seconds_per_demo"] = round(entry["seconds"] / num_per_task, 2)
                continue
            bar.set_description(f"{task}: planning")
            with tempfile.TemporaryDirectory(prefix="lrm_demos_") as tmp:
                res = _run_worker(task, seeds, Path(tmp), template.control_mode, planner_timeout_s)
                planned = {int(k): bool(v) for k, v in res.get("planned", {}).items()}
                entry["planned"] = sum(planned.values())
                lengths = {int(k): int(v) for k, v in res.get("converted_lengths", {}).items()}
                to_success = {int(k): v for k, v in res.get("success_ticks", {}).items() if v is not None}
                entry["converted"] = len(lengths)
                if lengths:
                    entry["converted_lengths"] = {"min": min(lengths.values()), "max": max(lengths.values())}
                if to_success:
                    entry["success_ticks"] = {"min": min(to_success.values()), "max": max(to_success.values())}
                for k, v in res.get("plan_errors", {}).items():
                    entry["errors"][f"plan seed {k}"] = v
                    _lose(entry, int(k), "plan", v)
                for k, v in res.get("convert_errors", {}).items():
                    entry["errors"][f"convert seed {k}"] = v
                    _lose(entry, int(k), "convert", v)
                if "error" in res:
                    entry["errors"]["planner"] = res["error"]
                for sd in seeds:   # the worker died or never got to them
                    if sd not in lengths and str(sd) not in entry["lost_seeds"]:
                        why = res.get("error", "the plan worker gave no result for it").split("\n", 1)[0]
                        stage = "planner" if "error" in res or sd not in planned else "convert"
                        _lose(entry, sd, stage, why)
                cfg = dataclasses.replace(template, env_id=task)
                if max_episode_ticks == "auto":
                    need = [to_success.get(sd, n) for sd, n in lengths.items()]
                    limit, how = auto_max_ticks(task, need)
                    cfg = dataclasses.replace(cfg, max_episode_ticks=limit)
                elif max_episode_ticks and task in max_episode_ticks:
                    cfg = dataclasses.replace(cfg, max_episode_ticks=int(max_episode_ticks[task]))
                    how = "given per task"
                else:
                    how = "given"
                entry["max_episode_ticks"] = cfg.max_episode_ticks
                entry["max_episode_ticks_from"] = how
                if not res.get("converted_h5"):
                    bar.update(num_per_task)
                    entry["seconds"] = round(time.perf_counter() - t0, 2)
                    continue
                bar.set_description(f"{task}: replaying")
                _replay_task(cfg, Path(res["converted_h5"]), Path(res["converted_json"]), out_dir / task,
                             entry, keep_failed, bar, num_per_task)
            entry["lost"] = len(entry["lost_seeds"])
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            entry["seconds_per_demo"] = round(entry["seconds"] / num_per_task, 2)
    finally:
        bar.close()
    summary["seconds"] = round(time.perf_counter() - t_all, 2)
    keys = ("requested", "planned", "converted", "replayed", "episodes_written", "ticks", "lost")
    summary["totals"] = {k: sum(e[k] for e in summary["tasks"].values()) for k in keys}
    merged = write_summary(out_dir, summary, keys)
    if "warnings" in merged:
        summary["warnings"] = merged["warnings"]
    return summary


def _lose(entry: dict, seed: int, stage: str, reason: str) -> None:
    """Count a requested seed that will not be written, once, with its stage and reason."""
    key = str(seed)
    if key in entry["lost_seeds"]:
        return
    entry["lost_seeds"][key] = f"{stage}: {reason}"
    entry["lost_by_stage"][stage] = entry["lost_by_stage"].get(stage, 0) + 1


def _replay_task(cfg: SimConfig, h5_path: Path, json_path: Path, bag_path: Path, entry: dict,
                 keep_failed: bool, bar: Any, num_per_task: int) -> None:
    import h5py

    meta = json.loads(json_path.read_text())
    episodes_meta = meta["episodes"]
    sim = ManiSkillSim(cfg)
    writer = None
    stamp_s = START_S
    episode_index = 0
    done_demos = 0
    try:
        with h5py.File(h5_path, "r") as h5:
            for ep in episodes_meta:
                traj = h5[f"traj_{ep['episode_id']}"]
                ep_seed = ep.get("episode_seed", ep.get("reset_kwargs", {}).get("seed"))
                if isinstance(ep_seed, list):
                    ep_seed = ep_seed[0]
                actions = np.asarray(traj["actions"], dtype=np.float64)
                state0 = _h5_state(traj["env_states"], 0)
                ticks = _replay_episode(sim, ep_seed, state0, actions)
                done_demos += 1
                bar.update(1)
                ok = ticks[-1]["step_success"]
                entry["replayed"] += int(ok)
                if not ok:
                    msg = f"not successful in ManiSkillSim ({ticks[-1]['end_name']} after {len(ticks) - 1} ticks)"
                    if ticks[-1]["end"] == END_TIME_LIMIT:
                        need = max(time_limit_for(len(actions)), recommended_max_ticks(cfg.env_id))
                        msg += (f"; the demo has {len(actions)} actions: raise max_episode_ticks to at least "
                                f"{len(actions)} (e.g. {need}, or use 'auto')")
                    entry["errors"][f"replay seed {ep_seed}"] = msg
                    if not keep_failed:
                        _lose(entry, int(ep_seed), "replay", msg)
                        continue
                if writer is None:
                    writer = _open_bag(bag_path, sim, "maniskill motionplanning", stamp_s)
                _write_episode(writer, sim, episode_index, stamp_s, ticks)
                entry["episodes_written"] += 1
                entry["ticks"] += len(ticks)
                entry.setdefault("episode_seeds", []).append(ep_seed)
                episode_index += 1
                stamp_s = math.ceil(stamp_s + (len(ticks) - 1) * sim.control_period + EPISODE_GAP_S)
    finally:
        if writer is not None:
            writer.set_metadata("episode_seeds", entry.get("episode_seeds", []))
            writer.close()
            entry["bag"] = str(bag_path)
        sim.close()
        bar.update(max(0, num_per_task - done_demos))


def _open_bag(bag_path: Path, sim: ManiSkillSim, source: str, stamp_s: float) -> Any:
    from lrm_ros.bags.writer import EpisodeBagWriter

    cfg = sim.config
    writer = EpisodeBagWriter(bag_path, metadata={
        "format": "lrm_ros.demos/1", "env_id": cfg.env_id, "control_mode": cfg.control_mode,
        "control_period": sim.control_period, "source": source, "max_episode_ticks": cfg.max_episode_ticks,
    })
    writer.write_instruction(sim.instruction, _bag_stamp_ns(stamp_s))
    return writer


def _script_task(cfg: SimConfig, seeds: list[int], bag_path: Path, entry: dict, keep_failed: bool,
                 bar: Any) -> None:
    """Run the task's scripted controller once per seed and record the successful runs."""
    from .scripted import make_script

    sim = ManiSkillSim(cfg)
    writer = None
    stamp_s = START_S
    lengths: list[int] = []
    try:
        for sd in seeds:
            first = sim.reset(seed=sd)
            script = make_script(cfg.env_id, sim.privileged_env)
            ticks = _replay_episode(sim, None, None, (script() for _ in itertools.count()), first=first)
            bar.update(1)
            entry["planned"] += 1
            entry["converted"] += 1
            ok = ticks[-1]["step_success"]
            entry["replayed"] += int(ok)
            if ok:
                lengths.append(len(ticks) - 1)
            else:
                msg = (f"the scripted controller did not succeed ({ticks[-1]['end_name']} after "
                       f"{len(ticks) - 1} ticks, phase {script.phase})")
                entry["errors"][f"script seed {sd}"] = msg
                if not keep_failed:
                    _lose(entry, sd, "script", msg)
                    continue
            if writer is None:
                writer = _open_bag(bag_path, sim, "scripted from privileged state (lrm_ros.sim.scripted)",
                                   stamp_s)
            _write_episode(writer, sim, len(entry.get("episode_seeds", [])), stamp_s, ticks)
            entry["episodes_written"] += 1
            entry["ticks"] += len(ticks)
            entry.setdefault("episode_seeds", []).append(sd)
            stamp_s = math.ceil(stamp_s + (len(ticks) - 1) * sim.control_period + EPISODE_GAP_S)
    finally:
        if lengths:
            entry["success_ticks"] = {"min": min(lengths), "max": max(lengths)}
        if writer is not None:
            writer.set_metadata("episode_seeds", entry.get("episode_seeds", []))
            writer.close()
            entry["bag"] = str(bag_path)
        sim.close()


def _replay_episode(sim: ManiSkillSim, seed: int | None, state0: Any, actions: Any,
                    first: Any = None) -> list[dict]:
    """One episode from ``actions`` (any iterable: a scripted controller's is endless, the time
    limit ends it),
    from a reset to ``seed`` / ``state0``, or from the reset the caller made (``first``: its
    observation)."""
    obs = sim.reset(seed=seed, state=state0) if first is None else first
    has_dense = sim.has_dense_reward
    ticks = [dict(obs=obs, dense=0.0 if has_dense else float("nan"), norm=0.0 if has_dense else float("nan"),
                  success=False, failure=False, action=None, end=END_NONE, end_name="", step_success=False)]
    for a in actions:
        step = sim.step(a)
        ticks[-1]["action"] = np.asarray(a, dtype=np.float64)
        end = END_NONE
        if step.terminated:
            end = END_SUCCESS if step.success else END_FAILURE
        elif step.truncated:
            end = END_TIME_LIMIT
        ticks.append(dict(obs=step.observation, dense=step.dense_reward, norm=step.normalized_dense_reward,
                          success=step.success, failure=step.failure, action=None, end=end,
                          step_success=step.success))
        if end != END_NONE:
            break
    if ticks[-1]["end"] == END_NONE:  # the demo's actions ran out before the task ended it
        ticks[-1]["end"] = END_RESET_REQUEST
    ticks[-1]["end_name"] = {END_SUCCESS: "success", END_FAILURE: "failure", END_TIME_LIMIT: "time limit",
                             END_RESET_REQUEST: "actions exhausted"}[ticks[-1]["end"]]
    return ticks


def _write_episode(writer: Any, sim: ManiSkillSim, episode: int, start_s: float, ticks: list[dict]) -> None:
    last = len(ticks) - 1
    for i, t in enumerate(ticks):
        o = t["obs"]
        writer.write_tick(
            stamp_ns=_bag_stamp_ns(start_s + i * sim.control_period), episode=episode, tick=i,
            env_id=sim.config.env_id, image=o.image, intrinsics=o.intrinsics,
            camera_frame_id=sim.camera_frame_id, joint_names=o.joint_names,
            joint_positions=o.joint_positions, joint_velocities=o.joint_velocities,
            dense_reward=t["dense"], normalized_dense_reward=t["norm"], success=t["success"],
            failure=t["failure"], episode_end=(i == last), end_reason=t["end"] if i == last else END_NONE,
            command=None if i == last else t["action"],
        )


def summary_lines(summary: dict, width: int = 220) -> list[str]:
    """What a run did, per task: counts, the time limit, and every lost seed with its reason."""
    lines = []
    for task, e in summary["tasks"].items():
        lines.append(f"{task}: requested {e['requested']}, planned {e['planned']}, converted {e.get('converted', '-')}, "
                     f"replayed {e['replayed']}, written {e['episodes_written']} ({e['ticks']} ticks, limit "
                     f"{e.get('max_episode_ticks', '-')}) -> {e['bag']}")
        lost = e.get("lost_seeds") or {}
        if lost:
            stages = ", ".join(f"{k} {v}" for k, v in sorted(e["lost_by_stage"].items()))
            lines.append(f"  lost {len(lost)} ({stages}):")
            for sd, why in sorted(lost.items(), key=lambda kv: int(kv[0])):
                why = " ".join(why.split())
                lines.append(f"    seed {sd}: {why[:width]}{'...' if len(why) > width else ''}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lrm_ros.sim.demos",
        description="Generate motion-planned ManiSkill demonstrations as lrm_ros episode bags (mcap).")
    p.add_argument("--tasks", nargs="+", default=["PickCube-v1"],
                   help=f"ManiSkill task ids (motion planning: {', '.join(MOTION_PLANNING_TASKS)}; "
                        f"scripted: {', '.join(SCRIPTED_TASKS)})")
    p.add_argument("-n", "--num-per-task", type=int, default=10)
    p.add_argument("--out", type=Path, required=True, help="output folder: one bag per task + summary.json")
    p.add_argument("--seed", type=int, default=0, help="demo i uses seed + i")
    p.add_argument("--control-mode", default=SimConfig.control_mode)
    p.add_argument("--width", type=int, default=SimConfig.camera_width)
    p.add_argument("--height", type=int, default=SimConfig.camera_height)
    p.add_argument("--camera-name", default="")
    p.add_argument("--max-episode-ticks", default=str(SimConfig.max_episode_ticks),
                   help="time limit in control ticks (as the bridge uses), or 'auto': per task, the "
                        "limit measured from its converted demos (tasks.RECOMMENDED_MAX_EPISODE_TICKS), "
                        "raised to cover this run's longest demo; summary.json records each task's")
    p.add_argument("--instruction", default="", help="override the task's instruction (one task only)")
    p.add_argument("--keep-failed", action="store_true", help="also store demos that fail in replay")
    p.add_argument("--overwrite", action="store_true", help="replace existing bags in --out")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        auto = a.max_episode_ticks == "auto"
        try:
            ticks = 100 if auto else int(a.max_episode_ticks)
        except ValueError:
            raise ValueError(f"--max-episode-ticks must be an integer or 'auto', got {a.max_episode_ticks!r}") from None
        cfg = SimConfig(env_id=a.tasks[0], control_mode=a.control_mode, camera_width=a.width,
                        camera_height=a.height, camera_name=a.camera_name,
                        max_episode_ticks=ticks, instruction=a.instruction)
        summary = generate_demos(a.tasks, a.num_per_task, a.out, cfg, seed=a.seed,
                                 progress=not a.no_progress, keep_failed=a.keep_failed, overwrite=a.overwrite,
                                 max_episode_ticks="auto" if auto else None)
    except (ValueError, FileExistsError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in summary_lines(summary):
        print(line)
    for w in summary.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    print(f"summary: {Path(a.out) / 'summary.json'} (merged with the folder's earlier runs; {summary['seconds']} s)")
    return 0 if summary["totals"]["episodes_written"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
