#!/usr/bin/env python3
"""The reward node's memory over many episodes, without ROS: is growth a leak or the allocator?

Drives what the live reward node runs per tick (lrm_ros/nodes/reward_model.py), in-process:
per env an `IntervalHold`, one `RewardEngine` with the real backend (default lite), frames of
camera size made in this (the "executor") thread and freed in the engine's worker, ticks,
`engine.end_episode` at each new episode. Every --every episodes it samples:
- RSS (/proc/self/status);
- Python's traced memory (tracemalloc: every live Python/numpy allocation): a leak of
  objects (a container that grows per episode or query) shows here;
- glibc's mallinfo2: `in_use` (allocated chunks), `free` (freed chunks the allocator keeps:
  fragmentation), `mmap` (chunks in their own mappings), and the number of arenas in use.
At the end `malloc_trim(0)` and RSS again (what the allocator gives back).

  MALLOC_ARENA_MAX=2 .venv/bin/python bench/bench_reward_memory.py --episodes 600
"""
import argparse
import ctypes
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def mallinfo(libc) -> dict:
    if libc is None or not hasattr(libc, "mallinfo2"):
        return {}
    libc.mallinfo2.restype = _MallInfo2
    m = libc.mallinfo2()         # main arena + all thread arenas
    mb = 1024.0 * 1024.0
    return {"in_use_mb": round(m.uordblks / mb, 1), "free_mb": round(m.fordblks / mb, 1),
            "mmap_mb": round(m.hblkhd / mb, 1), "heap_mb": round(m.arena / mb, 1)}


def arenas_in_use() -> int:
    """Anonymous mappings of arena size (glibc reserves 64 MB per thread arena)."""
    n = 0
    for line in Path("/proc/self/maps").read_text().splitlines():
        f = line.split()
        if len(f) == 5:                     # anonymous
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            n += (hi - lo) >= 60 << 20
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=600, help="episodes per env")
    ap.add_argument("--envs", type=int, default=2)
    ap.add_argument("--ticks", type=int, default=20, help="ticks per episode (the soak's 20)")
    ap.add_argument("--interval", type=int, default=10, help="K")
    ap.add_argument("--size", type=int, default=224, help="frame side (camera_ingest's output)")
    ap.add_argument("--backend", default="lite")
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--trace", action="store_true", help="tracemalloc (slower; counts Python allocations)")
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    from lrm_ros.rewards.engine import EngineConfig, RewardEngine
    from lrm_ros.rewards.hold import HoldConfig, IntervalHold
    from lrm_ros.rewards import make_backend
    import torch
    torch.set_num_threads(1)                 # the node's cpu_threads
    libc = _libc()
    backend = make_backend(a.backend, **({"max_batch": 8} if a.backend != "oracle" else {}))
    envs = [f"env{i}" for i in range(a.envs)]
    holds = {e: IntervalHold(HoldConfig(interval=a.interval), backend.needs, env=e) for e in envs}
    engine = RewardEngine(backend, EngineConfig(),
                          lambda q, r, status, info: holds[q.env].on_result(q, r, status == "ok"))
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(64, a.size, a.size, 3), dtype=np.uint8)
    if a.trace:
        tracemalloc.start()
    samples, stamp = [], 0

    def sample(episode):
        row = {"episode": episode, "rss_mb": round(rss_mb(), 1), "arenas": arenas_in_use(), **mallinfo(libc)}
        if a.trace:
            row["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 1)
        row.update({k: engine.stats()[k] for k in ("ok", "dropped", "episodes_ended", "episode_ends_pending")})
        samples.append(row)
        print(json.dumps(row), flush=True)

    t0 = time.monotonic()
    for episode in range(a.episodes):
        for tick in range(a.ticks + 1):
            stamp += 50_000_000
            for e in envs:
                # as image_msg_to_rgb: a fresh array per message, made in this thread
                frame = np.frombuffer(noise[(episode * 7 + tick + hash(e)) % 64].tobytes(), np.uint8)
                frame = frame.reshape(a.size, a.size, 3).copy()
                frame[0, :8, 0] = np.frombuffer(np.int64(stamp).tobytes(), np.uint8)   # unique: no cache hits
                if tick == 0 and episode > 0:
                    engine.end_episode(e, episode - 1)
                for q in holds[e].on_frame(stamp, frame):
                    engine.submit(q)
                queries, _ = holds[e].on_tick(episode, tick, stamp, tick == 0, tick == a.ticks)
                for q in queries:
                    engine.submit(q)
        while engine.stats()["queued"] or engine.stats()["in_flight"]:   # keep up, as the soak did
            time.sleep(0.005)
        if episode % a.every == 0 or episode == a.episodes - 1:
            sample(episode)
    engine.close()
    before = rss_mb()
    trimmed = libc.malloc_trim(0) if libc is not None else None
    result = {"args": vars(a), "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", ""),
              "seconds": round(time.monotonic() - t0, 1), "samples": samples,
              "rss_before_trim_mb": round(before, 1), "rss_after_trim_mb": round(rss_mb(), 1),
              "trim_released": bool(trimmed)}
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
