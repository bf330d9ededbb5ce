"""Failed rollouts in ManiSkillSim, stored as episode bags (the negatives of the LRM labels).

Kinds (per task; the camera, control mode and time limit are the demos'):
  noise     a demo's actions replayed from the demo's seed with Gaussian noise on every
            action (``noise_std``, in units of the action range's half-width);
  stretch   a demo's actions replayed with a random stretch of uniformly random actions
            somewhere in the middle (``stretch_ticks`` long), the demo's actions after it;
  random    uniformly random actions until the time limit, from a fresh seed;
  zero      the zero action (the arm holds still) until the time limit;
  stall     a near miss: a demo's actions up to a random point late in the demo
            (``near_fraction`` of its length), then the arm holds still (zero deltas, the
            gripper, the last action dimension of the Panda arms these tasks use, held as
            it was) for the rest of the demo's length;
  undo      a regression: a demo's actions up to such a point, then the same motion
            played back (arm deltas negated in reverse order, the gripper retracing its
            commands, so a grasped object is let go where it was grasped).

A rollout that the oracle says succeeded is discarded and retried with other noise, up to
``max_attempts`` times (counted in the summary). Demo replays end when the demo's actions run
out (END_RESET_REQUEST) or at the time limit, so failures are as long as demos, not longer.

Output (as ``lrm_ros.sim.demos``): ``OUT/<task>/`` one rosbag2 mcap bag per task, read by
``lrm_ros.bags.reader.read_episodes``; ``OUT/summary.json`` lists each episode's kind, seed and
source demo, merged with the folder's earlier runs (tasks generated in batches keep theirs).
Seeds and time limits of the demos come from each demo bag's own metadata, else from its
folder's summary.json entry, else the limit is ``--max-episode-ticks auto``'s for the demos'
lengths. CLI:

    python -m lrm_ros.data.failures --demos data/demos --out data/failures \\
        [--noise 1 --stretch 1 --random 2 --zero 1 --noise-std 0.5 --seed 0]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["FailureConfig", "generate_failures", "find_bags", "main", "KINDS"]

KINDS = ("noise", "stretch", "random", "zero", "stall", "undo")
FORMAT = "lrm_ros.failures/1"


@dataclass(frozen=True)
class FailureConfig:
    noise_per_demo: int = 1          # noisy replays per demo episode
    stretch_per_demo: int = 1        # random-stretch replays per demo episode
    random_per_task: int = 1         # random-policy rollouts per task
    zero_per_task: int = 1           # zero-action rollouts per task
    stall_per_demo: int = 1          # near misses per demo episode (stop short, hold still)
    undo_per_demo: int = 1           # regressions per demo episode (get close, back off)
    near_fraction: Tuple[float, float] = (0.5, 0.9)   # where a stall / undo turns, fraction of the demo
    noise_std: float = 0.5           # Gaussian noise std, x half the action range
    stretch_ticks: Tuple[int, int] = (10, 30)   # random stretch length range (ticks)
    stretch_start: Tuple[float, float] = (0.2, 0.6)  # where it starts, fraction of the demo
    max_attempts: int = 3            # retries of a rollout that succeeded anyway
    max_episode_ticks: int = 0       # time limit; 0 = the demos' (summary / bag metadata) or 100
    max_demos: int = 0               # use at most this many demos per task (0 = all)
    seed: int = 0
    seed_offset: int = 100_000       # random / zero rollouts use seeds seed_offset + seed + i

    def __post_init__(self):
        for name in ("noise_per_demo", "stretch_per_demo", "random_per_task", "zero_per_task",
                     "stall_per_demo", "undo_per_demo", "max_episode_ticks", "max_demos"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"FailureConfig.{name} must be >= 0")
        if self.max_attempts < 1:
            raise ValueError("FailureConfig.max_attempts must be >= 1")
        if not self.noise_std >= 0:
            raise ValueError("FailureConfig.noise_std must be >= 0")
        lo, hi = self.stretch_ticks
        if not 1 <= lo <= hi:
            raise ValueError(f"FailureConfig.stretch_ticks must be (lo, hi) with 1 <= lo <= hi, got {self.stretch_ticks}")
        lo, hi = self.near_fraction
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"FailureConfig.near_fraction must be (lo, hi) with 0 < lo <= hi < 1, "
                             f"got {self.near_fraction}")


def _is_bag(p: Path) -> bool:
    return p.is_dir() and ((p / "metadata.yaml").is_file() or any(p.glob("*.mcap")) or any(p.glob("*.db3")))


def find_bags(paths: Sequence[Path | str]) -> Tuple[List[Path], Dict[str, str]]:
    """Bag directories from paths that are bags or folders of bags (one level). Returns the
    bags (sorted per folder) and errors for paths that are neither."""
    bags: List[Path] = []
    errors: Dict[str, str] = {}
    for p in map(Path, paths):
        if not p.exists():
            errors[str(p)] = f"{p} does not exist"
        elif _is_bag(p):
            bags.append(p)
        elif p.is_dir():
            sub = sorted(q for q in p.iterdir() if _is_bag(q))
            if not sub:
                errors[str(p)] = f"{p} is neither a rosbag2 bag nor a folder of bags"
            bags.extend(sub)
        else:
            errors[str(p)] = f"{p} is not a bag directory (a rosbag2 bag is a folder with metadata.yaml)"
    return list(dict.fromkeys(bags)), errors


_JSON_META = ("episode_seeds", "max_episode_ticks", "control_period")


def bag_info(bag: Path) -> Dict[str, Any]:
    """What a bag says about how it was recorded: the bag's own custom metadata (format,
    control mode, and for newer demo bags ``max_episode_ticks`` and ``episode_seeds``) and,
    where the bag lacks them and sits in a demos/failures output folder, its summary.json
    entry (``episode_seeds``, ``max_episode_ticks``, ``control_mode``; for failures also
    ``episode_kinds``: episode -> kind)."""
    info: Dict[str, Any] = {}
    meta = Path(bag) / "metadata.yaml"
    if meta.is_file():
        try:
            import yaml

            doc = yaml.safe_load(meta.read_text()) or {}
            custom = (doc.get("rosbag2_bagfile_information") or {}).get("custom_data") or {}
            info.update({k.split(".", 1)[-1]: v for k, v in custom.items()})
        except Exception:          # metadata is optional here; read_episodes reports real damage
            pass
    for k in _JSON_META:
        if isinstance(info.get(k), str):
            try:
                info[k] = json.loads(info[k])
            except ValueError:
                del info[k]
    summary = Path(bag).parent / "summary.json"
    if summary.is_file():
        try:
            doc = json.loads(summary.read_text())
            entry = (doc.get("tasks") or {}).get(Path(bag).name) or {}
            info.setdefault("control_mode", entry.get("control_mode") or doc.get("control_mode"))
            if not info.get("episode_seeds"):
                info["episode_seeds"] = entry.get("episode_seeds")
            if not info.get("max_episode_ticks"):
                info["max_episode_ticks"] = entry.get("max_episode_ticks") or doc.get("max_episode_ticks")
            if isinstance(entry.get("episodes"), list):
                info["episode_kinds"] = {int(e["episode"]): e.get("kind") for e in entry["episodes"]
                                         if isinstance(e, dict) and "episode" in e}
        except (OSError, ValueError, TypeError, AttributeError):
            pass
    return info


def _plan(cfg: FailureConfig, demos: List[Any], seeds: Optional[List[int]], rng: np.random.Generator
          ) -> List[Dict[str, Any]]:
    plan = []
    for i, ep in enumerate(demos):
        seed = seeds[i] if seeds and i < len(seeds) and seeds[i] is not None else None
        for kind, n in (("noise", cfg.noise_per_demo), ("stretch", cfg.stretch_per_demo),
                        ("stall", cfg.stall_per_demo), ("undo", cfg.undo_per_demo)):
            for _ in range(n):
                plan.append(dict(kind=kind, demo_episode=int(ep.episode), seed=seed, actions=ep.actions))
    for kind, n in (("random", cfg.random_per_task), ("zero", cfg.zero_per_task)):
        for j in range(n):
            plan.append(dict(kind=kind, demo_episode=None, seed=cfg.seed_offset + cfg.seed + len(plan) + j,
                             actions=None))
    return plan


def _actions(item: Dict[str, Any], cfg: FailureConfig, low: np.ndarray, high: np.ndarray, limit: int,
             rng: np.random.Generator) -> np.ndarray:
    half, mid = (high - low) / 2.0, (high + low) / 2.0
    kind = item["kind"]
    if kind in ("noise", "stretch", "stall", "undo"):
        a = np.array(item["actions"], dtype=np.float64, copy=True)
        if a.size == 0:
            raise ValueError("the demo episode has no actions")
        if kind in ("stall", "undo"):
            n = len(a)
            if n < 2:
                raise ValueError(f"the demo episode has {n} action(s): too short to stop short of its end")
            k = min(n - 1, max(1, int(round(rng.uniform(*cfg.near_fraction) * n))))
            moved = a[:k]
            if kind == "undo":                 # the same motion played back
                back = a[:k][::-1][: n - k].copy()
                back[:, :-1] *= -1.0
                moved = np.concatenate([moved, back])
            hold = np.zeros((n - len(moved), a.shape[1]))   # then still, the gripper as it was
            hold[:, -1] = moved[-1, -1]
            a = np.concatenate([moved, hold])
        elif kind == "noise":
            a = a + rng.normal(0.0, cfg.noise_std, size=a.shape) * half
        else:
            n = len(a)
            length = int(rng.integers(cfg.stretch_ticks[0], cfg.stretch_ticks[1] + 1))
            start = int(rng.integers(int(cfg.stretch_start[0] * n), max(int(cfg.stretch_start[0] * n) + 1,
                                                                         int(cfg.stretch_start[1] * n) + 1)))
            stop = min(n, start + length)
            a[start:stop] = rng.uniform(low, high, size=(stop - start, a.shape[1]))
        return np.clip(a, low, high)[:limit]
    if kind == "random":
        return rng.uniform(low, high, size=(limit, low.size))
    if kind == "zero":
        return np.tile(np.clip(np.zeros_like(mid), low, high), (limit, 1))
    raise ValueError(f"unknown failure kind {kind!r}; known: {KINDS}")


def generate_failures(demo_bags: Sequence[Path | str], out_dir: Path | str,
                      config: Optional[FailureConfig] = None, *, progress: bool = True,
                      overwrite: bool = False, render_backend: str = "auto") -> Dict[str, Any]:
    """Failed rollouts for the tasks of ``demo_bags`` (bags, or folders of bags such as a
    demos output folder), one bag per task under ``out_dir`` plus ``out_dir/summary.json``.
    Returns the summary. Unreadable bags are reported in the summary's ``errors``."""
    from tqdm.auto import tqdm

    from lrm_ros.bags.reader import BagFormatError, read_episodes
    from lrm_ros.bags.writer import EpisodeBagWriter
    from lrm_ros.sim.demos import (EPISODE_GAP_S, START_S, _bag_stamp_ns, _replay_episode, _write_episode,
                                   auto_max_ticks, write_summary)
    from lrm_ros.sim.maniskill_env import ManiSkillSim, SimConfig

    cfg = config or FailureConfig()
    out_dir = Path(out_dir)
    bags, errors = find_bags(demo_bags)
    by_task: Dict[str, Dict[str, Any]] = {}
    for bag in bags:
        try:
            eps = read_episodes(bag)
        except (FileNotFoundError, BagFormatError) as e:
            errors[str(bag)] = str(e)
            continue
        info = bag_info(bag)
        seeds = info.get("episode_seeds")
        for i, ep in enumerate(eps):
            if not ep.task:
                errors[f"{bag} episode {ep.episode}"] = "no task id (sim/oracle env_id) in the bag"
                continue
            t = by_task.setdefault(ep.task, {"demos": [], "seeds": [], "info": info, "bags": []})
            if not cfg.max_demos or len(t["demos"]) < cfg.max_demos:
                t["demos"].append(ep)
                t["seeds"].append(seeds[i] if seeds and i < len(seeds) else None)
            if str(bag) not in t["bags"]:
                t["bags"].append(str(bag))
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "summary.json").is_file():   # a folder of another tool: fail before the work
        try:
            fmt = json.loads((out_dir / "summary.json").read_text()).get("format")
        except (ValueError, AttributeError):
            fmt = FORMAT                     # unreadable: write_summary keeps it aside
        if fmt != FORMAT:
            raise ValueError(f"{out_dir / 'summary.json'} is a {fmt!r} summary, not {FORMAT!r}: "
                             "write the failures into another folder")
    for task in by_task:
        if (out_dir / task).exists():
            if not overwrite:
                raise FileExistsError(f"{out_dir / task} exists; pass overwrite=True (--overwrite) or another out_dir")
            shutil.rmtree(out_dir / task)

    rng = np.random.default_rng(cfg.seed)
    plans = {task: _plan(cfg, t["demos"], t["seeds"], rng) for task, t in by_task.items()}
    summary: Dict[str, Any] = {"format": FORMAT, "config": dataclasses.asdict(cfg), "tasks": {},
                               "errors": errors}
    t_all = time.perf_counter()
    bar = tqdm(total=sum(len(p) for p in plans.values()), desc="failures", unit="rollout", disable=not progress)
    try:
        for task, t in by_task.items():
            t0 = time.perf_counter()
            demo0 = t["demos"][0]
            h, w = demo0.frames.shape[1:3]
            if cfg.max_episode_ticks:
                limit, limit_from = int(cfg.max_episode_ticks), "given"
            elif t["info"].get("max_episode_ticks"):
                limit, limit_from = int(t["info"]["max_episode_ticks"]), "the demos' time limit"
            else:
                limit, limit_from = auto_max_ticks(task, [len(d.actions) for d in t["demos"]])
            sim_cfg = SimConfig(env_id=task, control_mode=t["info"].get("control_mode") or SimConfig.control_mode,
                                camera_width=int(w), camera_height=int(h), max_episode_ticks=limit,
                                instruction=demo0.instruction, render_backend=render_backend)
            entry: Dict[str, Any] = {"demo_bags": t["bags"], "demos": len(t["demos"]), "planned": len(plans[task]),
                                     "episodes_written": 0, "ticks": 0, "succeeded_discarded": 0,
                                     "kinds": {k: 0 for k in KINDS}, "episodes": [], "errors": {},
                                     "camera": [int(w), int(h)], "control_mode": sim_cfg.control_mode,
                                     "max_episode_ticks": limit, "max_episode_ticks_from": limit_from,
                                     "config": dataclasses.asdict(cfg), "bag": None}
            summary["tasks"][task] = entry
            bar.set_description(f"{task}: failures")
            writer = None
            sim = None
            try:
                sim = ManiSkillSim(sim_cfg)
                stamp_s = START_S
                for item in plans[task]:
                    ticks = None
                    for attempt in range(cfg.max_attempts):
                        try:
                            actions = _actions(item, cfg, sim.action_low, sim.action_high, limit, rng)
                        except ValueError as e:
                            entry["errors"][f"{item['kind']} demo {item['demo_episode']}"] = str(e)
                            break
                        seed = item["seed"] if item["seed"] is not None else int(rng.integers(1 << 30))
                        run = _replay_episode(sim, seed, None, actions)
                        if run[-1]["step_success"] or any(r["success"] for r in run):
                            entry["succeeded_discarded"] += 1
                            continue
                        ticks = run
                        break
                    bar.update(1)
                    if ticks is None:
                        continue
                    if writer is None:
                        writer = EpisodeBagWriter(out_dir / task, metadata={
                            "format": FORMAT, "env_id": task, "control_mode": sim_cfg.control_mode,
                            "control_period": sim.control_period, "source": "lrm_ros failures"})
                        writer.write_instruction(sim.instruction, _bag_stamp_ns(stamp_s))
                    idx = entry["episodes_written"]
                    _write_episode(writer, sim, idx, stamp_s, ticks)
                    entry["episodes"].append({"episode": idx, "kind": item["kind"], "seed": seed,
                                              "demo_episode": item["demo_episode"], "ticks": len(ticks),
                                              "end": ticks[-1]["end_name"], "attempts": attempt + 1})
                    entry["episodes_written"] += 1
                    entry["kinds"][item["kind"]] += 1
                    entry["ticks"] += len(ticks)
                    stamp_s = math.ceil(stamp_s + (len(ticks) - 1) * sim.control_period + EPISODE_GAP_S)
            except (ValueError, RuntimeError) as e:
                entry["errors"]["sim"] = f"{type(e).__name__}: {e}"
            finally:
                if writer is not None:
                    writer.close()
                    entry["bag"] = str(out_dir / task)
                if sim is not None:
                    sim.close()
            entry["seconds"] = round(time.perf_counter() - t0, 2)
    finally:
        bar.close()
    summary["seconds"] = round(time.perf_counter() - t_all, 2)
    keys = ("planned", "episodes_written", "ticks", "succeeded_discarded")
    summary["totals"] = {k: sum(e[k] for e in summary["tasks"].values()) for k in keys}
    merged = write_summary(out_dir, summary, keys)
    if "warnings" in merged:
        summary["warnings"] = merged["warnings"]
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lrm_ros.data.failures",
                                description="Generate failed ManiSkill rollouts (noisy demo replays, "
                                            "random and zero policies, near misses and regressions) "
                                            "as lrm_ros episode bags.")
    p.add_argument("--demos", nargs="+", type=Path, required=True,
                   help="demo bags, or folders of them (e.g. data/demos)")
    p.add_argument("--out", type=Path, required=True, help="output folder: one bag per task + summary.json")
    p.add_argument("--noise", type=int, default=1, help="noisy replays per demo")
    p.add_argument("--stretch", type=int, default=1, help="random-stretch replays per demo")
    p.add_argument("--random", type=int, default=1, help="random-policy rollouts per task")
    p.add_argument("--zero", type=int, default=1, help="zero-action rollouts per task")
    p.add_argument("--stall", type=int, default=1,
                   help="near misses per demo: its actions up to a late point, then holding still")
    p.add_argument("--undo", type=int, default=1,
                   help="regressions per demo: its actions up to a late point, then played back")
    p.add_argument("--noise-std", type=float, default=FailureConfig.noise_std)
    p.add_argument("--max-episode-ticks", type=int, default=0,
                   help="0: the demos' time limit (bag metadata or summary.json; else from their lengths)")
    p.add_argument("--max-demos", type=int, default=0, help="use at most this many demos per task (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        cfg = FailureConfig(noise_per_demo=a.noise, stretch_per_demo=a.stretch, random_per_task=a.random,
                            zero_per_task=a.zero, stall_per_demo=a.stall, undo_per_demo=a.undo,
                            noise_std=a.noise_std, max_episode_ticks=a.max_episode_ticks,
                            max_demos=a.max_demos, seed=a.seed)
        summary = generate_failures(a.demos, a.out, cfg, progress=not a.no_progress, overwrite=a.overwrite)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, msg in summary["errors"].items():
        print(f"error: {path}: {msg}", file=sys.stderr)
    for task, e in summary["tasks"].items():
        print(f"{task}: {e['episodes_written']} failures ({e['kinds']}), {e['succeeded_discarded']} rollouts "
              f"discarded as successful -> {e['bag']}")
    for w in summary.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    print(f"summary: {a.out / 'summary.json'} (merged with the folder's earlier runs; {summary['seconds']} s)")
    return 0 if summary["totals"]["episodes_written"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
