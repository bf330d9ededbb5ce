"""The `vlm` reward backend: LRM's three signals asked of a Qwen-VL model (optionally with a
LoRA adapter such as the published LRM ones), answered as JSON and parsed.

Three parts, as every backend:
  input builder  `build_jobs`: query -> one chat prompt (+ its images) per signal needed
                 (contrastive: frame K ticks ago + now; progress: [first frame +] now;
                 completion: now). Prompts are a profile (config/prompts/<name>.yaml):
                 `lrm_released` reproduces the released LRM adapters' formats and is the
                 default when adapters are given; `lrm_ros` (our own) otherwise.
  model call     `run_jobs`: ONE batched greedy `generate` per adapter over all prompts of
                 all queries of the batch, left-padded (Qwen-VL's 3D rope positions take
                 the attention mask, so left padding is exact: batched == one-at-a-time,
                 tested). Each row stops at its signal's max_new_tokens, or as soon as its
                 answer holds a closed JSON object with the signal's key (stop_on_json).
  parser         `to_result`: the profile's parsers per signal -> RewardResult.

Adapters: none; one (`adapter_path` holding adapter_config.json; merged into the weights);
or one per signal on one base model (`adapter_path` with progress/, completion/,
contrastive/ sub-folders as the LRM adapters are published, or `adapter_<signal>` paths):
held by peft, not merged, switched with `set_adapter` for each signal's group of prompts,
so a batch runs one generate per adapter. A signal without its own adapter runs on the base
model (adapters disabled). Frames are encoded per group: an adapter may train the vision
tower (the published progress adapter saves its own copy of it).

Signals: "contrastive" (value = the raw -1/0/+1), "progress", "completion" (1/0), "tri"
(all three asked). An invalid result has value NaN (base convention); components stay set
(an unparseable contrastive is 0, LRM's convention). "tri" combines as the profile says
(`tri_combination` overrides): "released" = LRM's weighted sum (base.tri_value_released:
first query's contrastive 0, unparseable contrastive 0.5, unparseable progress/completion
0); "mean_parsed" = the mean of what parsed (base.tri_value; first query's contrastive 0.5).
Either way the result is valid when progress or completion parsed; failures are listed in
`invalid`. The first query of an episode has no previous frame: contrastive is not asked.

Shared work (what is not recomputed), chosen by measurement on the tiny model
(bench/bench_rewards.py):
  * all prompts of a batch (all signals x all queries; per adapter when the signals have
    their own) go through one `generate`: the decoder runs once per new token for the whole
    batch, instead of once per prompt; rows whose answer is complete stop early;
  * each distinct frame is encoded by the vision tower once per batch: in "tri" the current
    frame appears in all three prompts (and the previous/first frames may be shared), so the
    frames are de-duplicated by content (within an adapter's group) and their features
    (incl. deepstack features) are
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
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

from .base import NAN, RewardBackend, RewardQuery, RewardResult, signal_needs, tri_value, tri_value_released
from .parsers import PARSERS_BY_FORMAT, has_closed_answer
from .prompts import TRI_COMBINATIONS, build_messages, load_prompts

VLM_SIGNALS = ("contrastive", "progress", "completion", "tri")
DEFAULT_MODEL = "Qwen/Qwen3-VL-8B-Instruct"


@dataclass
class VLMConfig:
    """Node parameters of the `vlm` backend. 0 / "" = the prompt profile's setting."""
    model_path: str = DEFAULT_MODEL      # local dir, or a hub id already in the local HF cache
    adapter_path: str = ""               # one peft LoRA adapter dir, or a dir of per-signal ones
    adapter_progress: str = ""           # per-signal adapters (instead of adapter_path)
    adapter_completion: str = ""
    adapter_contrastive: str = ""
    signal: str = "tri"                  # contrastive | progress | completion | tri
    use_first_frame: bool = True         # progress prompt shows the episode's first frame
    prompts: str = ""                    # profile name or YAML file; "" = lrm_released with
                                         # adapters from elsewhere, else lrm_ros
    max_new_tokens: int = 0              # 0 = the profile's, per signal
    tri_combination: str = ""            # "" = the profile's: released | mean_parsed
    max_batch: int = 8                   # queries per generate call (x signals prompts)
    min_pixels: int = 0                  # frame resolution bounds for the vision tower;
    max_pixels: int = 0                  # 0 = the profile's (0 there = the checkpoint's)
    dtype: str = "auto"                  # auto | float32 | bfloat16 | float16
    device: str = "cpu"
    dedup_frames: bool = True            # encode each distinct frame once per batch

    def __post_init__(self):
        if self.signal not in VLM_SIGNALS:
            raise ValueError(f"vlm: signal must be one of {VLM_SIGNALS}, got {self.signal!r}")
        if not isinstance(self.model_path, str) or not self.model_path.strip():
            raise ValueError("vlm: model_path is empty: set it to a local model directory or a "
                             f"hub id in the local HF cache (e.g. {DEFAULT_MODEL})")
        if not 0 <= int(self.max_new_tokens) <= 4096:
            raise ValueError(f"vlm: max_new_tokens must be in 0..4096 (0 = the prompt profile's "
                             f"per-signal value), got {self.max_new_tokens}")
        if int(self.max_batch) < 1:
            raise ValueError(f"vlm: max_batch must be >= 1, got {self.max_batch}")
        from .qwen import check_pixels   # light: qwen imports torch lazily
        check_pixels("vlm", self.min_pixels, self.max_pixels)
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"vlm: dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.tri_combination and self.tri_combination not in TRI_COMBINATIONS:
            raise ValueError(f"vlm: tri_combination must be one of {TRI_COMBINATIONS} (or '' for "
                             f"the prompt profile's), got {self.tri_combination!r}")
        self.max_new_tokens = int(self.max_new_tokens)
        self.max_batch = int(self.max_batch)

    @property
    def signals(self) -> Tuple[str, ...]:
        return ("contrastive", "progress", "completion") if self.signal == "tri" else (self.signal,)

    def per_signal_adapters(self) -> Dict[str, str]:
        return {"progress": self.adapter_progress, "completion": self.adapter_completion,
                "contrastive": self.adapter_contrastive}


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


def _answer_stopper(proc, start: int, budgets: List[int], json_stop: List[Optional[str]]):
    """A transformers StoppingCriteria ending each row at its own budget of new tokens, or
    (json_stop[row] = the row's signal) once its answer holds a closed JSON object with the
    signal's key. Rows are decoded only when their last token holds a '}'."""
    import torch
    from transformers import StoppingCriteria
    close_ids = proc.close_brace_ids

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            n = input_ids.shape[1] - start
            done = torch.tensor([n >= b for b in budgets], device=input_ids.device)
            has_close = torch.isin(input_ids[:, -1].cpu(), close_ids)
            for row, sig in enumerate(json_stop):
                if sig and not done[row] and has_close[row]:
                    text = proc.decode(input_ids[row, start:].cpu())
                    done[row] = has_closed_answer(text, sig)
            return done

    return _Stop()


class VLMRewardBackend(RewardBackend):
    name = "vlm"

    def __init__(self, config: Optional[VLMConfig] = None, model=None, processor=None, **kwargs):
        self.config = config if config is not None else VLMConfig(**kwargs)
        cfg = self.config
        from .qwen import adapter_profile, find_adapters
        self.adapters = find_adapters(cfg.adapter_path, cfg.per_signal_adapters())
        self.prompts = load_prompts(cfg.prompts or (adapter_profile(self.adapters)
                                                    if self.adapters else "lrm_ros"))
        self.parsers = PARSERS_BY_FORMAT[self.prompts.answer_format]
        self.tri_combination = cfg.tri_combination or self.prompts.tri.combination
        self.needs: FrozenSet[str] = signal_needs(cfg.signals, cfg.use_first_frame)
        self.max_batch = cfg.max_batch
        self.min_pixels = cfg.min_pixels or self.prompts.min_pixels
        self.max_pixels = cfg.max_pixels or self.prompts.max_pixels
        self.peft = None           # the peft model when several adapters are held
        if model is None or processor is None:
            from .qwen import load_adapters, load_qwen_vl
            single = self.adapters.get("*")
            model, processor = load_qwen_vl(cfg.model_path, str(single) if single else "",
                                            dtype=cfg.dtype, device=cfg.device,
                                            min_pixels=self.min_pixels, max_pixels=self.max_pixels)
            if self.adapters and single is None:
                self.peft = load_adapters(model, self.adapters).to(cfg.device)
                model = self.peft.base_model.model
        elif self.adapters:   # a model passed in is not merged into (it may be shared)
            from .qwen import load_adapters
            self.peft = load_adapters(model, {("single" if k == "*" else k): v
                                              for k, v in self.adapters.items()})
            model = self.peft.base_model.model
        self.model, self.processor = model, processor

    @property
    def model_id(self) -> str:
        mid = f"vlm:{self.config.model_path}"
        for sig, path in sorted(self.adapters.items()):
            mid += f"+{path}" if sig == "*" else f"+{sig}={path}"
        return f"{mid}:{self.prompts.profile}:{self.config.signal}"

    # -- input builder -------------------------------------------------------------------
    def build_jobs(self, queries: Sequence[RewardQuery]) -> List[Job]:
        p = self.prompts
        jobs = []
        for qi, q in enumerate(queries):
            images = {"current": q.frame, "previous": q.previous_frame, "first": q.first_frame}
            for sig in self.config.signals:
                if sig == "contrastive":
                    if self.first_query(q):
                        continue          # first query of the episode: not asked
                    prompt = p.contrastive
                elif sig == "progress":
                    use_first = self.config.use_first_frame and q.first_frame is not None
                    prompt = p.progress if use_first else p.progress_current_only
                else:
                    prompt = p.completion
                messages, ims = build_messages(prompt, q.instruction, images, p.system, p.instruction)
                jobs.append(Job(qi, sig, messages, ims))
        return jobs

    def first_query(self, q: RewardQuery) -> bool:
        """No earlier frame to compare with: none at all, or (profiles with
        contrastive_from_start false, as LRM's environment) only the episode's start frame,
        which LRM never compares with: its first query's contrastive is not asked."""
        return q.previous_frame is None or (not self.prompts.contrastive_from_start
                                            and q.previous_tick == 0)

    def adapter_of(self, signal: str) -> Optional[str]:
        """The adapter name a signal's prompts run with (None: the model as loaded)."""
        if self.peft is None:
            return None
        if "*" in self.adapters:
            return "single"
        return signal if signal in self.adapters else ""

    # -- model call ----------------------------------------------------------------------
    def run_jobs(self, jobs: Sequence[Job]) -> List[str]:
        """Greedy generation over all jobs -> answer texts: one batched generate per adapter
        (one in all without per-signal adapters)."""
        out: List[str] = [""] * len(jobs)
        groups: Dict[Optional[str], List[int]] = {}
        for i, j in enumerate(jobs):
            groups.setdefault(self.adapter_of(j.signal), []).append(i)
        for adapter, idx in groups.items():
            if adapter is None:
                answers = self._generate([jobs[i] for i in idx])
            elif adapter == "":          # a signal without an adapter: the base model
                with self.peft.disable_adapter():
                    answers = self._generate([jobs[i] for i in idx])
            else:
                self.peft.set_adapter(adapter)
                answers = self._generate([jobs[i] for i in idx])
            for i, a in zip(idx, answers):
                out[i] = a
        return out

    def _budget(self, signal: str) -> int:
        return self.config.max_new_tokens or self.prompts.gen(signal).max_new_tokens

    def _generate(self, jobs: Sequence[Job]) -> List[str]:
        if not jobs:
            return []
        import torch
        from transformers import StoppingCriteriaList
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
        budgets = [self._budget(j.signal) for j in jobs]
        json_stop = [j.signal if self.prompts.gen(j.signal).stop_on_json else None for j in jobs]
        start = batch["input_ids"].shape[1]
        stop = StoppingCriteriaList([_answer_stopper(proc, start, budgets, json_stop)])
        with torch.no_grad():
            out = model.generate(**batch, **kwargs, max_new_tokens=max(budgets),
                                 stopping_criteria=stop, do_sample=False, num_beams=1,
                                 eos_token_id=eos, pad_token_id=proc.pad_token_id,
                                 temperature=None, top_p=None, top_k=None)
        new = out[:, start:].cpu()
        return [proc.decode(row[:b]).strip() for row, b in zip(new, budgets)]

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
        asked_contrastive = "contrastive" in answers
        for sig in cfg.signals:
            if sig not in answers:  # contrastive without a previous frame
                vals[sig] = 0.0
                notes[sig] = "first query of the episode: not asked"
                continue
            v, ok, reason = self.parsers[sig](answers[sig])
            if not ok and sig != "contrastive":
                v = NAN
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
            if not valid:
                value = NAN
            elif self.tri_combination == "released":
                w = self.prompts.tri
                value = tri_value_released(prog, comp, contr if asked_contrastive else None,
                                           (w.weight("contrastive"), w.weight("progress"),
                                            w.weight("completion")))
            else:
                value = tri_value(prog, comp, contr)
        else:
            valid = not invalid
            value = vals[cfg.signal] if valid else NAN
        raw = {"answers": dict(answers), "notes": notes, "profile": self.prompts.profile}
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
        self.peft = None


def make_with_model(backend_cls, config_cls, config: dict):
    """A Qwen-VL backend from keyword settings; `model` / `processor` may be passed in
    already loaded (tests and benchmarks share one model between backends)."""
    model = config.pop("model", None)
    processor = config.pop("processor", None)
    return backend_cls(config_cls(**config), model=model, processor=processor)


def make(**config) -> VLMRewardBackend:
    return make_with_model(VLMRewardBackend, VLMConfig, config)
