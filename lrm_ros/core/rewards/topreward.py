"""The `topreward` backend (TOPReward): progress = log P(answer "True") that a Qwen-VL model
gives after the episode's frames so far and the statement "The video shows the robot
completing the task: <instruction>. True or False?" (config/prompts/lrm.yaml).

  input builder  `_layout`: the chat prompt for n frames -> token ids, modality types, and
                 where each frame ends; rope positions for the whole sequence.
  model call     one forward over the tokens that are not in the episode's cache.
  parser         log-softmax at the answer position -> log P(True) (and log P(False));
                 online value = clip((log P - logp_min) / (logp_max - logp_min), 0, 1);
                 `minmax_normalize_episode` is the offline per-episode normalisation.

The answer token is the one the prompt's format makes next: the chat template ends with
"<|im_start|>assistant\\n", so it is "True" (id 2514 in the Qwen vocabulary), not " True"
(3007). It is derived from the tokenizer at start-up (tokenize(prompt + word) minus
tokenize(prompt)) and must be a single token.

Prefix KV cache (the point of this module). `query.frames` grows by one frame per query,
so the sequence of query n is
    [header] [frame 1] ... [frame n-1] [frame n] [statement + assistant header]
and everything up to frame n-1 was already computed at query n-1. Per (env, episode) we
keep the KV cache of [header .. last frame] (never the statement: the cache is cropped back
to the end of the last frame after each query, so the suffix does not pollute it); a new
query runs only [new frame(s) + statement] on top of it. Rope positions: Qwen-VL's 3D
(M-RoPE) positions of a token depend only on the tokens before it, so we compute them for
the full sequence with the model's own `get_rope_index` and pass the slice of the new
tokens (plus the plain text position row, cache length + i) as `position_ids` -- the model
then does not recompute them (which it would do from the new tokens alone, wrongly).
Consistency checks: the cached token ids must equal the new layout's prefix and each cached
frame's content hash must match `query.frames` (else the cache is cut back to the last
matching frame). Memory is bounded by an LRU of `max_episodes` episodes; `end_episode`
evicts. Cached frames are recognised by object identity first (queries are snapshots,
never mutated), by content hash otherwise. Cached and uncached log P agree to ~1e-5
(test_rewards_vlm.py). Measured (bench/bench_rewards.py, 1 CPU thread, 16-frame episode,
49 visual tokens per frame): 3.3x (tiny model) / 3.7x ("small") less time per episode; what
remains per query is the new frame's vision-tower pass, which the cache cannot skip and which
is less efficient alone than in the uncached 16-frame batch; the ratio grows with episode
length (uncached work is quadratic in the number of frames).

Batching: queries of one score_batch whose cached prefixes have the same length (envs in
lockstep with same-size frames) run their new tokens in ONE forward: the caches are stacked
along the batch dimension, the new tokens right-padded (causal attention never looks at
padding to the right) and the log-probabilities read at each row's last real token; the
stacked cache is cropped and split back per episode. Other queries run one at a time.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

from .base import NAN, RewardBackend, RewardQuery, RewardResult
from .vlm import DEFAULT_MODEL, frame_key, make_with_model


@dataclass
class TopRewardConfig:
    """Node parameters of the `topreward` backend."""
    model_path: str = DEFAULT_MODEL
    adapter_path: str = ""
    prompts: str = ""                  # YAML prompt file; "" = packaged
    min_pixels: int = 32 * 32
    max_pixels: int = 224 * 224
    dtype: str = "auto"
    device: str = "cpu"
    max_batch: int = 8
    cache: bool = True                 # reuse the KV cache of each episode's frame prefix
    max_episodes: int = 16             # LRU bound of cached episodes
    logp_min: float = -10.0            # online value: log P(True) = logp_min -> 0 ...
    logp_max: float = 0.0              # ... logp_max -> 1 (clipped)

    def __post_init__(self):
        if not isinstance(self.model_path, str) or not self.model_path.strip():
            raise ValueError("topreward: model_path is empty: set it to a local model directory "
                             f"or a hub id in the local HF cache (e.g. {DEFAULT_MODEL})")
        if not self.logp_min < self.logp_max <= 0.0:
            raise ValueError(f"topreward: need logp_min < logp_max <= 0 (log-probabilities), got "
                             f"logp_min={self.logp_min}, logp_max={self.logp_max}")
        if int(self.max_episodes) < 1 or int(self.max_batch) < 1:
            raise ValueError("topreward: max_episodes and max_batch must be >= 1")
        if int(self.min_pixels) < 16 or int(self.max_pixels) < int(self.min_pixels):
            raise ValueError(f"topreward: need 16 <= min_pixels <= max_pixels, got "
                             f"{self.min_pixels}, {self.max_pixels}")
        self.max_episodes = int(self.max_episodes)
        self.max_batch = int(self.max_batch)


def affine_value(logp: float, lo: float, hi: float) -> float:
    """Online TOPReward value: log P mapped affinely from [lo, hi] onto [0, 1], clipped."""
    if logp is None or math.isnan(logp):
        return NAN
    return float(min(1.0, max(0.0, (logp - lo) / (hi - lo))))


def minmax_normalize_episode(values: Sequence[float]) -> List[float]:
    """Offline TOPReward: one episode's scores min-max normalised to [0, 1]. NaNs stay NaN
    and are ignored for the range; a constant episode maps to 0."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return [NAN] * len(arr)
    lo, hi = float(finite.min()), float(finite.max())
    span = hi - lo
    out = np.where(np.isfinite(arr), (arr - lo) / span if span > 0 else 0.0, np.nan)
    return [float(x) for x in out]


@dataclass
class _Layout:
    ids: List[int]
    mm: List[int]
    frame_ends: List[int]      # index just after each frame's <|vision_end|>


@dataclass
class _Episode:
    cache: object              # transformers DynamicCache holding `ids`
    ids: List[int]             # tokens in the cache: [header .. end of the last frame]
    frames: List[np.ndarray]   # the cached frames (identity check before hashing)
    keys: List[bytes]          # content hash per cached frame
    grids: List[object]        # image_grid_thw row per cached frame
    next_pos: List[int]        # rope position that follows each cached frame's end


@dataclass
class _Plan:
    """What one query runs: the tokens from `start` on, on top of `ep`'s cache."""
    ep: Optional[_Episode]
    layout: _Layout
    frames: List[np.ndarray]
    keys: List[bytes]
    grids: List[object]        # all frames'
    n_common: int              # frames reused from the cache
    start: int                 # tokens reused from the cache
    offset: int                # rope position of token `start`
    pixel_values: object       # new frames only
    grid_new: object


class TOPRewardBackend(RewardBackend):
    name = "topreward"
    needs: FrozenSet[str] = frozenset({"frames"})

    def __init__(self, config: Optional[TopRewardConfig] = None, model=None, processor=None,
                 **kwargs):
        self.config = config if config is not None else TopRewardConfig(**kwargs)
        cfg = self.config
        from .prompts import load_prompts
        self.prompts = load_prompts(cfg.prompts)
        self.max_batch = cfg.max_batch
        if model is None or processor is None:
            from .qwen import load_from_config
            model, processor = load_from_config(cfg)
        self.model, self.processor = model, processor
        self._episodes: "OrderedDict[Tuple[str, int], _Episode]" = OrderedDict()
        tp = self.prompts.topreward
        self.answer_id = self.next_token_id(tp.answer_word)
        self.negative_id = self.next_token_id(tp.negative_word) if tp.negative_word else None
        self.stats = {"tokens_run": 0, "tokens_cached": 0, "forwards": 0}

    @property
    def model_id(self) -> str:
        mid = f"topreward:{self.config.model_path}"
        return mid + (f"+{self.config.adapter_path}" if self.config.adapter_path else "")

    # -- input builder -------------------------------------------------------------------
    def _messages(self, instruction: str, n_frames: int):
        from .prompts import topreward_messages
        return topreward_messages(self.prompts.topreward, instruction, n_frames, self.prompts.system)

    def next_token_id(self, word: str, instruction: str = "pick up the cube") -> int:
        """The token id `word` gets when it follows the prompt (checks it is one token)."""
        text = self.processor.render(self._messages(instruction, 1))
        base = self.processor.encode_text(text, [1]).ids
        full = self.processor.encode_text(text + word, [1]).ids
        if full[:len(base)] != base or len(full) != len(base) + 1:
            raise ValueError(f"topreward: answer word {word!r} is not a single token after the "
                             f"prompt (got {len(full) - len(base)} tokens); choose another")
        return full[-1]

    def _layout(self, instruction: str, grids) -> _Layout:
        proc = self.processor
        text = proc.render(self._messages(instruction, len(grids)))
        enc = proc.encode_text(text, proc.tokens_per_image(grids) if len(grids) else [])
        ends = [i + 1 for i, t in enumerate(enc.ids) if t == proc.vision_end_id]
        if len(ends) != len(grids):
            raise ValueError("topreward: the prompt template must show each frame once")
        return _Layout(enc.ids, enc.mm, ends)

    def _rope_positions(self, layout: _Layout, start: int, grids_new, offset: int):
        """(4, 1, L - start) position ids of the tokens from `start` on: the plain text row
        (sequence index) + Qwen-VL's 3D M-RoPE rows. The 3D positions of a token depend only
        on the tokens before it and are shift-invariant (text +1 per token; an image starts
        at the current position and advances it by max(h, w)/merge), so the model's own
        `get_rope_index` run on the new tokens, plus the position that follows the cached
        prefix, equals the slice of the full sequence's positions (tested against the
        uncached forward)."""
        import torch
        ids = torch.tensor([layout.ids[start:]], dtype=torch.long)
        mm = torch.tensor([layout.mm[start:]], dtype=torch.long)
        grid_t = torch.as_tensor(grids_new).long().view(-1, 3) if len(grids_new) else None
        pos3, _ = self.model.model.get_rope_index(ids, mm_token_type_ids=mm, image_grid_thw=grid_t,
                                                  attention_mask=torch.ones_like(ids))
        text_row = torch.arange(start, len(layout.ids), dtype=pos3.dtype).view(1, 1, -1)
        return torch.cat([text_row, pos3 + offset], dim=0)

    # -- model call ----------------------------------------------------------------------
    def _scores(self, logits_last) -> Tuple[List[float], List[float]]:
        import torch
        lp = torch.log_softmax(logits_last.float(), dim=-1)
        t = lp[:, self.answer_id].tolist()
        f = lp[:, self.negative_id].tolist() if self.negative_id is not None else [NAN] * len(t)
        return t, f

    def logp_uncached(self, instruction: str, frames: Sequence[np.ndarray]) -> Tuple[float, float]:
        """Reference: the whole prompt in one plain forward (the model computes its own rope
        positions). Used when `cache` is off, and by the tests."""
        import torch
        proc = self.processor
        text = proc.render(self._messages(instruction, len(frames)))
        batch = proc([text], [list(frames)])
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        with torch.no_grad():
            out = self.model(**batch, use_cache=False, logits_to_keep=1)
        self.stats["tokens_run"] += int(batch["input_ids"].shape[1])
        self.stats["forwards"] += 1
        t, f = self._scores(out.logits[:, -1])
        return t[0], f[0]

    def _plan(self, q: RewardQuery) -> _Plan:
        frames = list(q.frames) if len(q.frames) else [q.frame]
        ep = self._episodes.get((q.env, q.episode))
        n_common = 0
        keys: List[Optional[bytes]] = [None] * len(frames)
        if ep is not None:
            self._episodes.move_to_end((q.env, q.episode))
            while n_common < min(len(ep.keys), len(frames)):
                f = frames[n_common]
                if f is not ep.frames[n_common]:       # not the same object: compare content
                    keys[n_common] = frame_key(f)
                    if keys[n_common] != ep.keys[n_common]:
                        break
                keys[n_common] = ep.keys[n_common]
                n_common += 1
            if n_common == len(frames):   # same frames again: re-run the last one (the cache
                n_common -= 1             # holds no logits); cut the cache before it
        keys = [k if k is not None else frame_key(f) for k, f in zip(keys, frames)]
        grids_old = list(ep.grids[:n_common]) if ep is not None else []
        pv, grid_new = self.processor.preprocess_images(frames[n_common:])
        layout = self._layout(q.instruction, grids_old + list(grid_new))
        start = layout.frame_ends[n_common - 1] if n_common > 0 else 0
        if n_common > 0 and ep.ids[:start] != layout.ids[:start]:
            # the header changed (another template?): start over
            n_common, start, ep = 0, 0, None
            pv, grid_new = self.processor.preprocess_images(frames)
            layout = self._layout(q.instruction, list(grid_new))
        if n_common == 0:
            ep = None
        elif len(ep.ids) > start:         # frames changed or re-query: cut the cache back
            ep.cache = self._select(ep.cache, 0, start, copy=False)
            ep.ids = ep.ids[:start]
        offset = ep.next_pos[n_common - 1] if ep is not None else 0
        return _Plan(ep, layout, frames, keys, grids_old + list(grid_new), n_common, start,
                     offset, pv, grid_new)

    def _score_group(self, queries: Sequence[RewardQuery], plans: Sequence[_Plan]
                     ) -> List[Tuple[float, float]]:
        """One forward for queries whose cached prefixes have the same length: the caches
        stacked along the batch, the new tokens right-padded."""
        import torch
        from transformers import DynamicCache
        model = self.model
        start = plans[0].start
        lens = [len(p.layout.ids) - start for p in plans]
        n_new, B = max(lens), len(plans)
        ids = torch.full((B, n_new), self.processor.pad_token_id, dtype=torch.long)
        mm = torch.zeros((B, n_new), dtype=torch.long)
        pos = torch.zeros((4, B, n_new), dtype=torch.long)
        att = torch.zeros((B, start + n_new), dtype=torch.long)
        pvs, grids, next_pos = [], [], []
        for b, p in enumerate(plans):
            L = lens[b]
            ids[b, :L] = torch.tensor(p.layout.ids[start:])
            mm[b, :L] = torch.tensor(p.layout.mm[start:])
            new_pos = self._rope_positions(p.layout, start, p.grid_new, p.offset)
            pos[:, b, :L] = new_pos[:, 0]
            if L < n_new:  # padding: continue the positions (never attended to)
                pos[:, b, L:] = new_pos[:, 0, -1:] + torch.arange(1, n_new - L + 1)
            att[b, :start + L] = 1
            # rope position following each new frame's end (for the next query's offset)
            ends = p.layout.frame_ends[p.n_common:]
            next_pos.append([int(new_pos[1:, 0, e - 1 - start].max()) + 1 for e in ends])
            if p.pixel_values is not None:
                pvs.append(p.pixel_values)
                grids.append(p.grid_new)
        cache = self._stack_caches([p.ep.cache for p in plans]) if start > 0 else DynamicCache()
        kwargs = {}
        if pvs:
            kwargs["pixel_values"] = torch.cat(pvs).to(model.device)
            kwargs["image_grid_thw"] = torch.cat(grids).to(model.device)
        dev = model.device
        # logits only at each row's last real token (the lm head over ~150k words is costly)
        keep_pos = 1 if min(lens) == n_new else (torch.tensor(lens) - 1).view(B, 1).to(dev)
        with torch.no_grad():
            out = model(input_ids=ids.to(dev), mm_token_type_ids=mm.to(dev),
                        position_ids=pos.to(dev),
                        attention_mask=att.to(dev) if min(lens) < n_new else None,
                        past_key_values=cache, use_cache=True, logits_to_keep=keep_pos, **kwargs)
        self.stats["tokens_run"] += int(sum(lens))
        self.stats["tokens_cached"] += start * B
        self.stats["forwards"] += 1
        t, f = self._scores(out.logits[:, -1])
        # keep [.. last frame] per episode: crop off the statement (and padding)
        cache = out.past_key_values
        for b, (q, p) in enumerate(zip(queries, plans)):
            keep = p.layout.frame_ends[-1]
            old_next = p.ep.next_pos[:p.n_common] if p.ep is not None else []
            self._episodes[(q.env, q.episode)] = _Episode(
                self._select(cache, b, keep, copy=B > 1), p.layout.ids[:keep], list(p.frames),
                p.keys, p.grids, old_next + next_pos[b])
            self._episodes.move_to_end((q.env, q.episode))
        while len(self._episodes) > self.config.max_episodes:
            self._episodes.popitem(last=False)
        return list(zip(t, f))

    @staticmethod
    def _stack_caches(caches):
        import torch
        from transformers import DynamicCache
        if len(caches) == 1:
            return caches[0]
        out = DynamicCache()
        for li in range(len(caches[0].layers)):
            k = torch.cat([c.layers[li].keys for c in caches], dim=0)
            v = torch.cat([c.layers[li].values for c in caches], dim=0)
            out.update(k, v, li)
        return out

    @staticmethod
    def _select(cache, b: int, keep: int, copy: bool = True):
        """Row b of a cache, its first `keep` positions, as a new DynamicCache (copied when
        the source is a stacked batch, so that it does not keep the whole batch alive)."""
        from transformers import DynamicCache
        out = DynamicCache()
        for li, layer in enumerate(cache.layers):
            k = layer.keys[b:b + 1, :, :keep]
            v = layer.values[b:b + 1, :, :keep]
            out.update(k.clone() if copy else k, v.clone() if copy else v, li)
        return out

    # -- the interface -------------------------------------------------------------------
    def score_batch(self, queries: Sequence[RewardQuery]) -> List[RewardResult]:
        results: List[Optional[RewardResult]] = [None] * len(queries)
        scores: Dict[int, Tuple[float, float]] = {}
        if not self.config.cache:
            for i, q in enumerate(queries):
                frames = list(q.frames) if len(q.frames) else [q.frame]
                scores[i] = self.logp_uncached(q.instruction, frames)
        else:
            # one query per episode per forward (a second query of the same episode in one
            # batch must see the first one's cache): process in waves
            pending = list(range(len(queries)))
            while pending:
                wave, seen, rest = [], set(), []
                for i in pending:
                    k = (queries[i].env, queries[i].episode)
                    (rest if k in seen else wave).append(i)
                    seen.add(k)
                pending = rest
                plans = {i: self._plan(queries[i]) for i in wave}
                groups: Dict[Tuple[int, int], List[int]] = {}
                for i in wave:   # same cached length -> stackable (first queries: 0)
                    groups.setdefault((plans[i].start, 0), []).append(i)
                for idx in groups.values():
                    for s in range(0, len(idx), self.max_batch):
                        chunk = idx[s:s + self.max_batch]
                        res = self._score_group([queries[i] for i in chunk], [plans[i] for i in chunk])
                        for i, r in zip(chunk, res):
                            scores[i] = r
        for i, q in enumerate(queries):
            lt, lf = scores[i]
            value = affine_value(lt, self.config.logp_min, self.config.logp_max)
            results[i] = RewardResult(value=value, progress=value, valid=math.isfinite(lt),
                                      raw={"log_p_true": lt, "log_p_false": lf,
                                           "n_frames": len(q.frames) if len(q.frames) else 1})
        return results  # type: ignore[return-value]

    def end_episode(self, env: str, episode: int) -> None:
        self._episodes.pop((env, episode), None)

    def cached_episodes(self) -> List[Tuple[str, int]]:
        return list(self._episodes)

    def close(self) -> None:
        self._episodes.clear()
        self.model = None
        self.processor = None


def make(**config) -> TOPRewardBackend:
    return make_with_model(TOPRewardBackend, TopRewardConfig, config)
