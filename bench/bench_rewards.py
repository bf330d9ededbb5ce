#!/usr/bin/env python3
"""Benchmark of the VLM reward backends, measured side by side in one run (same model, same
requests; no assertions). Random-weight Qwen3-VL models with the real Qwen tokenizer (no real
weights exist on these machines): the ratios measure the serving machinery, not quality.

  (a) TOPReward over one 16-frame episode (a growing prefix, one query per frame):
      prefix KV cache vs recomputing the whole prompt at each query, for each prompt
      profile: topreward_official (the frames as one Qwen3-VL video, two frames per
      temporal patch; the default) and lrm_ros (one image per frame).      goal >= 4x
  (b) VLM ("tri": 3 prompts per query), 12 envs querying at the same tick: the batched
      RewardEngine vs one-prompt-at-a-time serving (a request/response reward server answering
      each signal of each env with its own generate call).                goal >= 6x

Run:  PYTHONPATH=/work/main /work/main/.venv/bin/python bench/bench_rewards.py \
          [--model-size tiny|small|medium|8b] [--device cpu|cuda] [--repeats 3]
  tiny  : 2 text layers, hidden 64 (the test model; overhead-bound)
  small : 4 text layers, hidden 256, vision depth 4 (default for (b): generation stays short)
  medium: 8 text layers, hidden 768, vision depth 8 (~315M with the 152k vocabulary;
          default for (a): compute-bound like a real model)
  8b    : Qwen3-VL-8B's shapes, random bf16 weights built in memory (GPU machines only)
Writes out/bench/rewards.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import median_time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent


def build(size: str, device: str, max_pixels: int, workdir: Path):
    import torch
    from lrm_ros.rewards.qwen import load_processor, load_qwen_vl
    from lrm_ros.rewards.qwen_tiny import make_tiny_qwen3vl, tiny_qwen3vl_config
    if size != "8b":
        path = make_tiny_qwen3vl(workdir / f"qwen3vl_{size}", size=size)
        model, proc = load_qwen_vl(path, device=device, max_pixels=max_pixels)
        return path, model, proc
    # 8B shapes: build in memory (bf16, on the device) instead of writing 16 GB to disk;
    # tokenizer and image processor from the tiny checkpoint (same vocabulary)
    from transformers import Qwen3VLForConditionalGeneration
    path = make_tiny_qwen3vl(workdir / "qwen3vl_tiny", size="tiny")
    cfg = tiny_qwen3vl_config("8b")
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration(cfg).eval()
    torch.set_default_dtype(torch.float32)
    return path, model, load_processor(path, max_pixels=max_pixels)


timed = median_time   # (median seconds, last result)


INSTRUCTIONS = ["pick up the cube", "stack the red cube on the green cube", "push the cube to the goal",
                "insert the peg into the hole", "lift the peg upright", "pull the cube back"]


def tick_queries(n_envs: int, previous_tick=None):
    """One LRM query per env at the same tick (random 224x224 frames, seeded per env)."""
    from lrm_ros.rewards.base import RewardQuery
    extra = {} if previous_tick is None else {"previous_tick": previous_tick}
    queries = []
    for i in range(n_envs):
        rng = np.random.default_rng(100 + i)
        f = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(3)]
        queries.append(RewardQuery(env=f"env{i}", episode=0, tick=20, instruction=INSTRUCTIONS[i % 6],
                                   frame=f[2], previous_frame=f[1], first_frame=f[0], **extra))
    return queries


def run_engine(backend, queries, max_batch: int):
    """Submit every query to a RewardEngine at once; (status, result, latency_s, batch_size)
    per query, in order."""
    import threading
    from lrm_ros.rewards.engine import EngineConfig, RewardEngine
    done, results = threading.Event(), {}

    def collect(q, result, status, info):
        results[q.env] = (status, result, info["latency_s"], info["batch_size"])
        if len(results) == len(queries):
            done.set()

    engine = RewardEngine(backend, EngineConfig(max_batch=max_batch, max_wait_s=0.05,
                                                timeout_s=3600), collect)
    for q in queries:
        engine.submit(q)
    done.wait()
    engine.close()
    return [results[q.env] for q in queries]


def bench_topreward(path, model, proc, n_frames: int, repeats: int, prompts: str):
    from lrm_ros.rewards import make_backend
    from lrm_ros.rewards.base import RewardQuery
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(n_frames)]
    queries = [RewardQuery(env="env0", episode=0, tick=10 * n, instruction="pick up the red cube",
                           frame=frames[n - 1], frames=tuple(frames[:n])) for n in range(1, n_frames + 1)]
    common = dict(model_path=path, model=model, processor=proc, prompts=prompts)
    cached = make_backend("topreward", **common)
    plain = make_backend("topreward", cache=False, **common)

    def episode(be):
        be.end_episode("env0", 0)
        return [be.score_batch([q])[0].raw["log_p_true"] for q in queries]

    episode(cached), episode(plain)     # warm-up
    t_cached, lp_c = timed(lambda: episode(cached), repeats)
    t_plain, lp_p = timed(lambda: episode(plain), repeats)
    if cached.video:   # a pair of frames shares one temporal patch
        units = cached._units(frames[:2], [b"", b""])
        tokens_per_frame = proc.tokens_per_image(cached._pixels(units, 0)[1])[0] / 2
    else:
        tokens_per_frame = proc.tokens_per_image(proc.preprocess_images(frames[:1])[1])[0]
    return {
        "prompts": prompts, "frames_as": "video" if cached.video else "images",
        "frames": n_frames, "visual_tokens_per_frame": tokens_per_frame,
        "tokens_cached": cached.stats["tokens_cached"], "tokens_run_cached": cached.stats["tokens_run"],
        "episode_s_cached": t_cached, "episode_s_uncached": t_plain,
        "per_query_ms_cached": 1e3 * t_cached / n_frames,
        "per_query_ms_uncached": 1e3 * t_plain / n_frames,
        "speedup": t_plain / t_cached,
        "max_abs_logp_diff": float(np.max(np.abs(np.array(lp_c) - np.array(lp_p)))),
    }


def bench_vlm(path, model, proc, n_envs: int, repeats: int, max_new_tokens: int, measure_single: bool = True):
    """12 envs query at the same tick. Batched: the RewardEngine (max_batch = n_envs) over a
    "tri" backend: one left-padded generate for all 3 x n_envs prompts. One-at-a-time: how a
    request/response reward server (the LRM reference server) serves them: each request is
    one prompt (one signal of one env), answered by its own generate call, in turn."""
    from lrm_ros.rewards import make_backend
    queries = tick_queries(n_envs)
    common = dict(model_path=path, model=model, processor=proc, max_new_tokens=max_new_tokens,
                  prompts="lrm_ros")
    tri = make_backend("vlm", signal="tri", max_batch=n_envs, **common)
    single = {sig: make_backend("vlm", signal=sig, max_batch=1, **common)
              for sig in ("contrastive", "progress", "completion")}

    def batched_engine():
        return run_engine(tri, queries, n_envs)

    def one_prompt_at_a_time():
        return [{sig: be.score_batch([q])[0] for sig, be in single.items()} for q in queries]

    batched_engine()                                 # warm-up
    t_batch, rb = timed(batched_engine, repeats)
    result = {"envs": n_envs, "prompts": 3 * n_envs, "max_new_tokens": max_new_tokens,
              "batch_sizes": sorted({r[3] for r in rb}), "batched_engine_s": t_batch,
              "queries_per_s_batched": n_envs / t_batch}
    if not measure_single:
        return result
    one_prompt_at_a_time()
    t_single, rs = timed(one_prompt_at_a_time, repeats)
    answers_b = [r[1].raw["answers"] for r in rb]
    answers_s = [{sig: res.raw["answers"][sig] for sig, res in per.items()
                  if sig in res.raw.get("answers", {})} for per in rs]
    same = all(all(ab.get(sig) == ans for sig, ans in a_s.items())
               for ab, a_s in zip(answers_b, answers_s))
    result.update(one_prompt_at_a_time_s=t_single, queries_per_s_single=n_envs / t_single,
                  speedup=t_single / t_batch, same_answers=same)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-size", default="", choices=["", "tiny", "small", "medium", "8b"],
                    help="one size for both parts (default: medium for (a), small for (b))")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--envs", type=int, nargs="+", default=[12],
                    help="(b) at each of these numbers of envs querying at the same tick")
    ap.add_argument("--single-max-envs", type=int, default=1000,
                    help="(b) measure one-prompt-at-a-time only up to this many envs (it is slow)")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--max-pixels", type=int, default=224 * 224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--topreward-prompts", nargs="+", default=["topreward_official", "lrm_ros"],
                    help="TOPReward prompt profiles to measure in (a)")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "rewards.json"))
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        size_a = args.model_size or "medium"
        size_b = args.model_size or "small"
        path, model, proc = build(size_a, args.device, args.max_pixels, Path(tmp) / "a")
        build_s = time.perf_counter() - t
        a = {}
        for prompts in args.topreward_prompts:
            r = bench_topreward(path, model, proc, args.frames, args.repeats, prompts)
            r["model_size"] = size_a
            a[prompts] = r
            print(f"(a) TOPReward {r['frames']}-frame episode, {prompts} (frames as {r['frames_as']}, "
                  f"{r['visual_tokens_per_frame']:g} visual tokens/frame, {size_a} model): "
                  f"cached {r['per_query_ms_cached']:.1f} ms/query vs uncached "
                  f"{r['per_query_ms_uncached']:.1f} ms/query -> {r['speedup']:.1f}x (goal >= 4x); "
                  f"max |dlogP| {r['max_abs_logp_diff']:.2e}", flush=True)
        if size_b != size_a:
            path, model, proc = build(size_b, args.device, args.max_pixels, Path(tmp) / "b")
        b = []
        for n_envs in args.envs:
            r = bench_vlm(path, model, proc, n_envs, args.repeats, args.max_new_tokens,
                          measure_single=n_envs <= args.single_max_envs)
            r["model_size"] = size_b
            b.append(r)
            single = (f"vs one prompt at a time {r['one_prompt_at_a_time_s']:.3f} s -> "
                      f"{r['speedup']:.1f}x (goal >= 6x); same answers: {r['same_answers']}"
                      if "speedup" in r else "(one prompt at a time not measured)")
            print(f"(b) VLM tri, {r['envs']} envs ({r['prompts']} prompts, {r['max_new_tokens']} new "
                  f"tokens, {size_b} model): batched engine {r['batched_engine_s']:.3f} s "
                  f"({r['queries_per_s_batched']:.1f} queries/s, batch sizes {r['batch_sizes']}) "
                  + single, flush=True)
            write(args, build_s, a, b)
    return write(args, build_s, a, b, final=True)


def write(args, build_s, a, b, final=False):
    argv = sys.argv[1:]
    result = {"command": "python bench/bench_rewards.py " + " ".join(argv),
              "device": args.device, "threads": args.threads,
              "build_s": build_s, "topreward_prefix_cache": a,
              "vlm_batching": b[0] if len(b) == 1 else b,
              "note": "random-weight Qwen3-VL with the real Qwen tokenizer; ratios, not quality"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    if final:
        print(f"wrote {out}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
