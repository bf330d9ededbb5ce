"""The `vlm` reward backend: LRM's three signals asked of a Qwen-VL model (optionally with a
LoRA adapter such as the published LRM ones), answered as JSON and parsed.

Three parts, as every backend:
  input builder  `build_jobs`: query -> one chat prompt (+ its images) per signal needed
                 (contrastive: frame K ticks ago + now; progress: [first frame +] now;
                 completion: now). Prompts are configuration (config/prompts/lrm.yaml).
  model call     `run_jobs`: ONE batched greedy `generate` over all prompts of all queries
                 of the batch, left-padded (Qwen-VL's 3D rope positions take the attention
                 mask, so left padding is exact: batched == one-at-a-time, tested).
  parser         `to_result`: parsers.parse_* per signal -> RewardResult.

Signals: "contrastive" (value = the raw -1/0/+1), "progress", "completion" (1/0), "tri"
(all three asked; value = tri_value). An invalid result has value NaN (base convention);
components stay set (an unparseable contrastive is 0, LRM's convention). For "tri", the
value is the mean of what parsed (unparsed contrastive counts as 0, as in LRM) and the
result is valid when progress or completion parsed; failures are listed in `invalid`.
The first query of an episode has no previous frame: its contrastive is 0 (not asked).

Shared work (what is not recomputed), chosen by measurement on the tiny model
(bench/bench_rewards.py):
  * all prompts of a batch (all signals x all queries) go through one `generate`: the
    decoder runs once per new token for the whole batch, instead of once per prompt;
  * each distinct frame is encoded by the vision tower once per batch: in "tri" the current
    frame appears in all three prompts (and the previous/first frames may be shared), so the
    frames are de-duplicated by content and their features (incl. deepstack features) are
    handed to `generate` as precomputed `mm_encoder_outputs`: 3 encodings -> 1 per query;
  * the constant text prefix is NOT KV-cached: in these prompts it is only the chat header
    plus one sentence (~10 tokens, before the instruction, which differs per env), against
    ~50 visual tokens per image and ~100+ tokens per prompt; with left padding, a shared
    prefix would sit at a different offset in each row, and splicing a cache under it costs
    more than recomputing 10 tokens in a batched prefill. The KV cache that pays is
    TOPReward's growing frame prefix (topreward.py).
Measured (bench/bench_rewards.py, 1 CPU thread, "tri", 12 envs = 36 prompts, 16 new tokens,
224x224 frames = 49 visual tokens): one batched call vs 12 one-at-a-time calls 2.2x (tiny
model) / 3.6x ("small" random model); frame de-dup 1.25x (tiny) / ~1.0x (small, where the
decoder dominates). On a CPU the decode is compute-bound (the output head over the 152k-word
vocabulary is the same work batched or not), so batching only saves per-call overhead and
weight reads; on a GPU, where decoding is memory-bound, the batched call is nearly free per
extra row.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

from .base import NAN, RewardBackend, RewardQuery, RewardResult, tri_value
from .parsers import PARSERS
from .prompts import build_messages

VLM_SIGNALS = ("contrastive", "progress", "completion", "tri")
DEFAULT_MODEL = "Qwen/Qwen3-VL-8B-Instruct"


@dataclass
class VLMConfig:
    """Node parameters of the `vlm` backend."""
    model_path: str = DEFAULT_MODEL      # local dir, or a hub id already in the local HF cache
    adapter_path: str = ""               # optional peft LoRA adapter dir
    signal: str = "tri"                  # contrastive | progress | completion | tri
    use_first_frame: bool = True         # progress prompt shows the episode's first frame
    max_new_tokens: int = 24             # the JSON answers are ~10 tokens
    max_batch: int = 8                   # queries per generate call (x signals prompts)
    prompts: str = ""                    # YAML prompt file; "" = packaged config/prompts/lrm.yaml
    min_pixels: int = 32 * 32            # image resolution bounds fed to the vision tower:
    max_pixels: int = 224 * 224          # 224x224 -> 49 visual tokens (16-px patches, 2x2 merge)
    dtype: str = "auto"                  # auto | float32 | bfloat16 | float16
    device: str = "cpu"
    dedup_frames: bool = True            # encode each distinct frame once per batch

    def __post_init__(self):
        if self.signal not in VLM_SIGNALS:
            raise ValueError(f"vlm: signal must be one of {VLM_SIGNALS}, got {self.signal!r}")
        if not isinstance(self.model_path, str) or not self.model_path.strip():
            raise ValueError("vlm: model_path is empty: set it to a local model directory or a "
                             f"hub id in the local HF cache (e.g. {DEFAULT_MODEL})")
        if not 1 <= int(self.max_new_tokens) <= 512:
            raise ValueError(f"vlm: max_new_tokens must be in 1..512 (the answers are short "
                             f"JSON), got {self.max_new_tokens}")
        if int(self.max_batch) < 1:
            raise ValueError(f"vlm: max_batch must be >= 1, got {self.max_batch}")
        if int(self.min_pixels) < 4 * 4 or int(self.max_pixels) < int(self.min_pixels):
            raise ValueError(f"vlm: need 16 <= min_pixels <= max_pixels, got min_pixels="
                             f"{self.min_pixels}, max_pixels={self.max_pixels} (e.g. 224*224 "
                             f"= 50176 for 49 visual tokens per frame)")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"vlm: dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        self.max_new_tokens = int(self.max_new_tokens)
        self.max_batch = int(self.max_batch)

    @property
    def signals(self) -> Tuple[str, ...]:
        return ("contrastive", "progress", "completion") if self.signal == "tri" else (self.signal,)


@dataclass
class Job:
    """One prompt of one query: the input builder's output."""
    query_index: int
    signal: str
    messages: List[dict]
    images: List[np.ndarray]


def frame_key(frame: np.ndarray) -> bytes:
    """Content key of a frame (shape + hash of the pixels), for de-duplication/caching."""
    a = np.ascontiguousarray(frame)
    h = hashlib.blake2b(a.data, digest_size=16)
    h.update(repr((a.shape, a.dtype.str)).encode())
    return h.digest()


class VLMRewardBackend(RewardBackend):
    name = "vlm"

    def __init__(self, config: Optional[VLMConfig] = None, model=None, processor=None, **kwargs):
        self.config = config if config is not None else VLMConfig(**kwargs)
        cfg = self.config
        from .prompts import load_prompts
        self.prompts = load_prompts(cfg.prompts)
        needs = set()
        if "contrastive" in cfg.signals:
            needs.add("previous_frame")
        if "progress" in cfg.signals and cfg.use_first_frame:
            needs.add("first_frame")
        self.needs: FrozenSet[str] = frozenset(needs)
        self.max_batch = cfg.max_batch
        if model is None or processor is None:
            from .qwen import load_from_config
            model, processor = load_from_config(cfg)
        self.model, self.processor = model, processor
        self._mm_output_cls = None

    @property
    def model_id(self) -> str:
        mid = f"vlm:{self.config.model_path}"
        if self.config.adapter_path:
            mid += f"+{self.config.adapter_path}"
        return f"{mid}:{self.config.signal}"

    # -- input builder -------------------------------------------------------------------
    def build_jobs(self, queries: Sequence[RewardQuery]) -> List[Job]:
        p = self.prompts
        jobs = []
        for qi, q in enumerate(queries):
            images = {"current": q.frame, "previous": q.previous_frame, "first": q.first_frame}
            for sig in self.config.signals:
                if sig == "contrastive":
                    if q.previous_frame is None:
                        continue          # first query of the episode: contrastive 0, not asked
                    prompt = p.contrastive
                elif sig == "progress":
                    use_first = self.config.use_first_frame and q.first_frame is not None
                    prompt = p.progress if use_first else p.progress_current_only
                else:
                    prompt = p.completion
                messages, ims = build_messages(prompt, q.instruction, images, p.system)
                jobs.append(Job(qi, sig, messages, ims))
        return jobs

    # -- model call ----------------------------------------------------------------------
    def run_jobs(self, jobs: Sequence[Job]) -> List[str]:
        """One batched greedy generate over all jobs (left padding) -> answer texts."""
        if not jobs:
            return []
        import torch
        proc, model = self.processor, self.model
        texts = [proc.render(j.messages) for j in jobs]
        kwargs = {}
        if self.config.dedup_frames:
            # distinct frames -> one vision-tower pass; features re-ordered per occurrence
            uniq: Dict[bytes, int] = {}
            uniq_frames, order = [], []
            for j in jobs:
                for im in j.images:
                    k = frame_key(im)
                    if k not in uniq:
                        uniq[k] = len(uniq_frames)
                        uniq_frames.append(im)
                    order.append(uniq[k])
            pv, grid = proc.preprocess_images(uniq_frames)
            n_tok = proc.tokens_per_image(grid) if grid is not None else []
            encs, pos = [], 0
            for j, text in zip(jobs, texts):
                idx = order[pos:pos + len(j.images)]
                pos += len(j.images)
                encs.append(proc.encode_text(text, [n_tok[i] for i in idx]))
            batch = proc.pad(encs, padding_side="left")
            if pv is not None:
                with torch.no_grad():
                    feats = model.model.get_image_features(
                        pv.to(model.device), grid.to(model.device), return_dict=True)
                batch["image_grid_thw"] = grid[order]
                kwargs["mm_encoder_outputs"] = {"image": self._reorder(feats, order)}
        else:
            batch = proc(texts, [j.images for j in jobs], padding_side="left")
        batch = {k: v.to(model.device) for k, v in batch.items()}
        eos = [proc.tokenizer.convert_tokens_to_ids("<|im_end|>"), proc.pad_token_id]
        with torch.no_grad():
            out = model.generate(**batch, **kwargs, max_new_tokens=self.config.max_new_tokens,
                                 do_sample=False, num_beams=1, eos_token_id=eos,
                                 pad_token_id=proc.pad_token_id, temperature=None,
                                 top_p=None, top_k=None)
        new = out[:, batch["input_ids"].shape[1]:].cpu()
        return [proc.decode(row).strip() for row in new]

    @staticmethod
    def _reorder(feats, order: List[int]):
        """Vision-tower output for the distinct frames -> the same, one entry per occurrence."""
        out = dict(feats.items())
        out["pooler_output"] = tuple(feats.pooler_output[i] for i in order)
        if getattr(feats, "deepstack_features", None) is not None:
            out["deepstack_features"] = [tuple(f[i] for i in order) for f in feats.deepstack_features]
        return type(feats)(**out)

    # -- parser --------------------------------------------------------------------------
    def to_result(self, query: RewardQuery, answers: Dict[str, str]) -> RewardResult:
        cfg = self.config
        vals: Dict[str, float] = {}
        invalid: List[str] = []
        notes: Dict[str, str] = {}
        ok_any = False
        for sig in cfg.signals:
            if sig not in answers:  # contrastive without a previous frame
                vals[sig] = 0.0
                notes[sig] = "no previous frame: 0"
                continue
            v, ok, reason = PARSERS[sig](answers[sig])
            vals[sig] = v
            if reason:
                notes[sig] = reason
            if ok:
                ok_any = ok_any or sig != "contrastive" or cfg.signal == "contrastive"
            else:
                invalid.append(reason or f"{sig}: invalid")
        contr = vals.get("contrastive", NAN)
        prog = vals.get("progress", NAN)
        comp = vals.get("completion", NAN)
        if cfg.signal == "tri":
            valid = ok_any
            value = tri_value(prog, comp, contr) if valid else NAN
        else:
            valid = not invalid
            value = vals[cfg.signal] if valid else NAN
        raw = {"answers": dict(answers), "notes": notes}
        return RewardResult(value=value, progress=prog, completion=comp, contrastive=contr,
                            valid=valid, invalid=tuple(invalid), raw=raw)

    # -- the interface -------------------------------------------------------------------
    def score_batch(self, queries: Sequence[RewardQuery]) -> List[RewardResult]:
        results: List[RewardResult] = []
        for start in range(0, len(queries), self.max_batch):
            chunk = list(queries[start:start + self.max_batch])
            jobs = self.build_jobs(chunk)
            answers = self.run_jobs(jobs)
            per_query: List[Dict[str, str]] = [{} for _ in chunk]
            for job, text in zip(jobs, answers):
                per_query[job.query_index][job.signal] = text
            results.extend(self.to_result(q, a) for q, a in zip(chunk, per_query))
        return results

    def close(self) -> None:
        self.model = None
        self.processor = None


def make_with_model(backend_cls, config_cls, config: dict):
    """A Qwen-VL backend from keyword settings; `model` / `processor` may be passed in
    already loaded (tests and benchmarks share one model between backends)."""
    model = config.pop("model", None)
    processor = config.pop("processor", None)
    return backend_cls(config_cls(**config), model=model, processor=processor)


def make(**config) -> VLMRewardBackend:
    return make_with_model(VLMRewardBackend, VLMConfig, config)
