#!/usr/bin/env python3
"""Micro-benchmark of the `lite` reward model on the CPU (median of N runs; no assertions).

Run:  PYTHONPATH=/work/main /work/main/.venv/bin/python bench/bench_lite.py [--runs 5] [--threads 1]

Cases:
  image features   EfficientNet-Lite0, 224x224 frames, per frame: one call per frame vs one
                   call over 32 frames in forward passes of 4 / 8 / 32; plus 640x480
                   frames (resize + crop included)
  text embedding   MiniLM, one instruction: uncached vs cached (LRU hit)
  heads            LiteRewardModel on precomputed features, "tri" (all three heads), 32 queries
  backend          LiteRewardBackend "tri", 8 queries: all 17 frames new (8 current, 8
                   previous, 1 first) vs the steady state (8 new current frames; previous
                   and first frame features from the cache)
Writes out/bench/lite.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from timing import median_time

ROOT = Path(__file__).resolve().parent.parent


def median_s(fn, runs: int, warmup: int = 1) -> float:
    return median_time(fn, runs, warmup)[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "lite.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    torch.set_num_threads(args.threads)
    from lrm_ros.vision.features import image_encoder, text_encoder
    from lrm_ros.rewards import RewardQuery
    from lrm_ros.rewards.lite import LiteConfig, LiteRewardBackend, LiteRewardModel

    rng = np.random.default_rng(0)
    t = time.perf_counter()
    ie = image_encoder()
    load_image = time.perf_counter() - t
    t = time.perf_counter()
    te = text_encoder()
    load_text = time.perf_counter() - t
    res = {"threads": args.threads, "load_s": {"image_encoder": load_image, "text_encoder": load_text}}

    frames = rng.integers(0, 256, (32, 224, 224, 3), dtype=np.uint8)
    big = rng.integers(0, 256, (8, 480, 640, 3), dtype=np.uint8)
    img = {}
    img["batch1_224"] = median_s(lambda: [ie.encode(f) for f in frames[:8]], args.runs) / 8
    for bs in (4, 8, 32):
        img[f"batch{bs}_224"] = median_s(lambda: ie.encode(frames, batch_size=bs), args.runs) / 32
    img["one_at_a_time_32_224"] = median_s(lambda: [ie.encode(f) for f in frames], args.runs) / 32
    img["batch1_640x480"] = median_s(lambda: [ie.encode(f) for f in big[:4]], args.runs) / 4
    img["batch4_640x480"] = median_s(lambda: ie.encode(big, batch_size=4), args.runs) / 8
    res["image_ms_per_frame"] = {k: v * 1e3 for k, v in img.items()}

    texts = [f"pick up the cube number {i} and place it on the goal" for i in range(args.runs + 2)]
    it = iter(texts)
    res["text_ms"] = {"uncached": median_s(lambda: te.encode(next(it)), args.runs) * 1e3,
                      "cached": median_s(lambda: te.encode(texts[0]), 200) * 1e3}

    model = LiteRewardModel().eval()
    f = torch.from_numpy(rng.random((32, 1280), dtype=np.float32))
    tx = torch.nn.functional.normalize(torch.randn(32, 384), dim=-1)

    def heads():
        with torch.inference_mode():
            model.progress(f, tx, f.flip(0))
            model.completion_logit(f, tx)
            model.contrastive_logit(f.flip(0), f, tx)
    res["heads_ms_tri_32_queries"] = median_s(heads, 20) * 1e3
    res["model_parameters"] = model.num_parameters()

    be = LiteRewardBackend(LiteConfig(signal="tri", max_batch=8), model=model,
                           image_enc=ie, text_enc=te)
    first = frames[0]
    prev = [frames[1 + i] for i in range(8)]

    def step(cur):
        qs = [RewardQuery(env=f"env{i}", episode=0, tick=0, instruction=texts[0], frame=cur[i],
                          previous_frame=prev[i], first_frame=first) for i in range(8)]
        be.score_batch(qs)
        prev[:] = [c.copy() for c in cur]

    def cold():                      # 17 distinct frames: 8 current, 8 previous, 1 first
        be._feat_cache.clear()
        prev[:] = [frames[17 + i] for i in range(8)]
        step([frames[9 + i] for i in range(8)])

    fresh = iter(rng.integers(0, 256, (args.runs + 1, 8, 224, 224, 3), dtype=np.uint8))

    def warm():
        step(list(next(fresh)))
    res["backend_tri_8_queries_ms"] = {"all_frames_new": median_s(cold, args.runs) * 1e3,
                                       "steady_state_cached": median_s(warm, args.runs) * 1e3}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
