"""Parallel in-process rollouts: N worker processes, each with its own ManiSkill environment
and tiny_vla adapter, running episodes for a list of seeds with the learner's current weights.

Rendering (SAPIEN on the CPU: ~45-85 ms per frame) and the frozen image features (~35 ms)
dominate a rollout step, and both run on one core each, so the only large speed-up on a CPU
machine is more processes (`bench/bench_rollout.py` measures it). Results do not depend on the
number of workers: every episode reseeds the action noise from (`noise_seed`, episode seed),
so the same seeds give the same episodes serially or in parallel.

Workers start with the multiprocessing "forkserver" context (ManiSkill hangs under "fork").
The policy's weights travel with each task (the MLP is ~1.5 MB), so a worker always acts with
the version the caller set, and a worker that dies is an error, never a skipped episode.
"""
from __future__ import annotations

import io
import multiprocessing as mp
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from lrm_ros.learn.rollout import RolloutEpisode, run_episode, summarize_successes

_WORKER: dict = {}


def episode_noise_seed(noise_seed: int, seed: int, repeat: int = 0) -> int:
    """The action-noise seed of one episode: independent of which process runs it. `repeat`
    tells apart the episodes of one call that start from the same seed (0 for the first)."""
    return (int(noise_seed) * 1_000_003 + int(seed) + int(repeat) * 7_919_000_017) % (2 ** 63)


def _state_bytes(model) -> bytes:
    import torch
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def _init_worker(sim_config, checkpoint: str, threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch
    torch.set_num_threads(threads)
    from lrm_ros.policy.adapter import TinyVLAAdapter
    from lrm_ros.sim.maniskill_env import ManiSkillSim
    _WORKER["sim"] = ManiSkillSim(sim_config)
    _WORKER["adapter"] = TinyVLAAdapter.from_checkpoint(checkpoint)
    _WORKER["version"] = None


def _run(task) -> RolloutEpisode:
    import torch
    version, state, seed, deterministic, episode, noise_seed, keep_frames, repeat = task
    adapter = _WORKER["adapter"]
    if version != _WORKER["version"]:
        adapter.model.load_state_dict(torch.load(io.BytesIO(state), weights_only=True))
        _WORKER["version"] = version
    adapter._gen.manual_seed(episode_noise_seed(noise_seed, seed, repeat))
    ep = run_episode(_WORKER["sim"], adapter, seed, deterministic, episode=episode)
    if not keep_frames:      # only the first and last frame travel back
        ep.frames = ep.frames[[0, -1]]
    return ep


class RolloutPool:
    """Run episodes in `workers` processes (workers=0: in this process, for tests and
    debugging). `set_policy(model)` before `run`; `run` returns the episodes in seed order."""

    def __init__(self, sim_config, checkpoint: str = "", workers: int = 2, threads: int = 1,
                 noise_seed: int = 0):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers, self.noise_seed = int(workers), int(noise_seed)
        self._version, self._state = 0, b""
        if self.workers == 0:
            _init_worker(sim_config, checkpoint, threads)
            self._pool = None
        else:
            ctx = mp.get_context("forkserver")
            self._pool = ctx.Pool(self.workers, initializer=_init_worker,
                                  initargs=(sim_config, checkpoint, threads))

    def set_policy(self, model) -> None:
        self._state = _state_bytes(model)
        self._version += 1

    def run(self, seeds: Sequence[int], deterministic: bool, episode_ids: Optional[Sequence[int]] = None,
            keep_frames: bool = True, progress=None) -> List[RolloutEpisode]:
        if not self._state:
            raise RuntimeError("RolloutPool.run before set_policy(model)")
        ids = list(episode_ids) if episode_ids is not None else list(range(len(seeds)))
        seen: Dict[int, int] = {}
        repeats = []
        for s in seeds:                # a seed given twice gets different action noise
            repeats.append(seen.get(int(s), 0))
            seen[int(s)] = repeats[-1] + 1
        tasks = [(self._version, self._state, int(s), bool(deterministic), int(i), self.noise_seed,
                  keep_frames, r) for s, i, r in zip(seeds, ids, repeats)]
        if self._pool is None:
            out = []
            for t in tasks:
                out.append(_run(t))
                if progress:
                    progress(out[-1])
            return out
        out = []
        for ep in self._pool.imap(_run, tasks):       # in order; a worker's error is raised here
            out.append(ep)
            if progress:
                progress(ep)
        return out

    def evaluate(self, seeds: Sequence[int], deterministic: bool = True, desc: str = "evaluating",
                 show_progress: bool = True) -> Dict[str, object]:
        """Success rate over one episode per seed, with its 95% Wilson interval."""
        from tqdm.auto import tqdm
        bar = tqdm(total=len(seeds), desc=desc, unit="ep", disable=not show_progress)
        wins: List[bool] = []

        def tick(ep):
            wins.append(ep.success)
            bar.update(1)
            bar.set_postfix(success=f"{np.mean(wins):.2f}")
        eps = self.run(seeds, deterministic, keep_frames=False, progress=tick)
        bar.close()
        res = summarize_successes([e.success for e in eps])
        res["steps"] = int(sum(len(e.action) for e in eps))
        return res

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None
        elif "sim" in _WORKER:
            _WORKER.pop("sim").close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
