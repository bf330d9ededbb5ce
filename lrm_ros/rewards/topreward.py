"""The `topreward` backend (TOPReward): progress = log P of the answer token that a Qwen-VL
model gives after the episode's frames so far and a statement about the task.

The query is a prompt profile (config/prompts/<profile>.yaml, `topreward:` entry). The
default, `topreward_official`, is the official formulation: the user turn holds the frames
as ONE video followed by "The above video shows a robot manipulation trajectory that
completes the following task: {instruction} Decide whether the above statement is True or
not. The answer is:"; the turn is left open (chat template without a generation prompt, cut
at the end-of-turn token) and the score is log P(" True") (with its space, Qwen id 3007) as
the statement's continuation. `lrm_ros` keeps our earlier variant (frames as images, the
assistant turn, "True").

  input builder  `_layout`: the chat text for the query's frames -> token ids, modality types
                 (text 0, image 1, video 2) and where each visual unit ends. A unit is one
                 frame (images) or one temporal patch of two frames (video: Qwen3-VL pairs
                 consecutive frames and heads each pair with its "<t seconds>" timestamp).
  model call     one forward over the tokens that are not in the episode's cache.
  parser         log-softmax at the last prompt position -> log P(answer) (and of the negative
                 word); online value = clip((log P - logp_min) / (logp_max - logp_min), 0, 1)
                 with LRM's online constants [-25, -5] by default; `minmax_normalize_episode`
                 is the official offline per-trajectory normalisation.

The answer token is derived from the tokenizer at start-up (tokenize(prompt + word) minus
tokenize(prompt)) and must be a single token that leaves the prompt's tokens unchanged.

Prefix KV cache (the point of this module). `query.frames` grows by one frame per query, so
query n's sequence is [header] [unit 1] ... [unit k] [statement], and the units computed at
query n-1 do not change -- except, with video, a last pair that held one real frame (an odd
count is padded by repeating the last frame, and its timestamp averages the two indices):
that pair is recomputed once its second frame arrives. Per (env, episode) we keep the KV
cache of [header .. last stable unit] (never the statement: the cache is cut back after each
query); a new query runs only [changed/new units + statement] on top of it. Rope positions:
Qwen-VL's 3D (M-RoPE) positions of a token depend only on the tokens before it, so the
model's own `get_rope_index` over the new tokens, plus the position that follows the cached
prefix, gives them (Qwen3-VL positions each video pair like an image of t = 1); they are
passed as `position_ids`. Each unit's content key (frames, size, timestamp) must match the
cache's, else the cache is cut back to the last matching unit; a video whose frame size
changes (the video rule resizes by frames x height x width) starts over. The vision tower
attends within one temporal patch, so encoding the new pairs alone gives the same features
as encoding the whole video (tested: cached == uncached). Memory: an LRU of `max_episodes`
episodes; `end_episode` evicts. Measured in bench/bench_rewards.py.

Batching: queries of one score_batch whose cached prefixes have the same length (envs in
lockstep with same-size frames) run their new tokens in ONE forward: the caches are stacked
along the batch dimension, the new tokens right-padded (causal attention never looks at
padding to the right) and the log-probabilities read at each row's last real token; the
stacked cache is cut and split back per episode. Other queries run one at a time.

Why one file of about 520 lines: nearly all of it is one backend class whose prompt layout,
prefix KV cache and batched scoring share per-episode state.
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

from .base import NAN, RewardBackend, RewardQuery, RewardResult
from .vlm import DEFAULT_MODEL, frame_key, make_with_model

#: LRM's online port of TOPReward maps log P affinely from [-25, -5] onto [0, 1]
#: (vlm_reward/vlm_reward_server.py: TOPREWARD_LOGP_LO / _HI)
LRM_LOGP_MIN, LRM_LOGP_MAX = -25.0, -5.0


@dataclass
class TopRewardConfig:
    """Node parameters of the `topreward` backend."""
    model_path: str = DEFAULT_MODEL
    adapter_path: str = ""
    prompts: str = ""                  # profile name or YAML file; "" = topreward_official
    video_fps: float = 0.0             # frame rate for the video timestamps; 0 = the profile's
    min_pixels: int = 0                # frames as images: bounds; 0 = the profile's
    max_pixels: int = 0
    dtype: str = "auto"
    device: str = "cpu"
    max_batch: int = 8
    cache: bool = True                 # reuse the KV cache of each episode's frame prefix
    max_episodes: int = 16             # LRU bound of cached episodes
    logp_min: float = LRM_LOGP_MIN     # online value: log P = logp_min -> 0 ...
    logp_max: float = LRM_LOGP_MAX     # ... logp_max -> 1 (clipped)

    def __post_init__(self):
        if not isinstance(self.model_path, str) or not self.model_path.strip():
            raise ValueError("topreward: model_path is empty: set it to a local model directory "
                             f"or a hub id in the local HF cache (e.g. {DEFAULT_MODEL})")
        if not self.logp_min < self.logp_max <= 0.0:
            raise ValueError(f"topreward: need logp_min < logp_max <= 0 (log-probabilities), got "
                             f"logp_min={self.logp_min}, logp_max={self.logp_max}")
        if int(self.max_episodes) < 1 or int(self.max_batch) < 1:
            raise ValueError("topreward: max_episodes and max_batch must be >= 1")
        from .qwen import check_pixels
        check_pixels("topreward", self.min_pixels, self.max_pixels)
        if float(self.video_fps) < 0:
            raise ValueError(f"topreward: video_fps must be > 0 (0 = the profile's), got {self.video_fps}")
        self.max_episodes = int(self.max_episodes)
        self.max_batch = int(self.max_batch)


def affine_value(logp: float, lo: float, hi: float) -> float:
    """Online TOPReward value: log P mapped affinely from [lo, hi] onto [0, 1], clipped."""
    if logp is None or math.isnan(logp):
        return NAN
    return float(min(1.0, max(0.0, (logp - lo) / (hi - lo))))


def minmax_normalize_episode(values: Sequence[float]) -> List[float]:
    """Offline TOPReward, as the official evaluation normalises: one trajectory's scores
    min-max normalised to [0, 1]; a single value or a constant trajectory maps to 1. NaNs
    stay NaN and are ignored for the range."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return [NAN] * len(arr)
    lo, hi = float(finite.min()), float(finite.max())
    span = hi - lo
    out = np.where(np.isfinite(arr), (arr - lo) / span if span > 0 else 1.0, np.nan)
    return [float(x) for x in out]


@dataclass
class _Layout:
    ids: List[int]
    mm: List[int]
    unit_ends: List[int]       # index just after each visual unit's <|vision_end|>


@dataclass
class _Units:
    """The visual units of one query's frames."""
    keys: List[bytes]          # content key per unit
    frames: List[Tuple[np.ndarray, ...]]   # the frames of each unit (video: padded pair)
    stable: int                # units that later frames will not change
    size: Tuple[int, int]      # video: the frame size; images: (0, 0)
    timestamps: List[float]    # video: per unit


@dataclass
class _Episode:
    cache: object              # transformers DynamicCache holding `ids`
    ids: List[int]             # tokens in the cache: [header .. end of the last stable unit]
    frames: List[np.ndarray]   # the query frames seen (identity check before hashing)
    frame_keys: List[bytes]
    unit_keys: List[bytes]     # keys of the cached units
    grids: List[object]        # grid row per cached unit
    next_pos: List[int]        # rope position that follows each cached unit's end


@dataclass
class _Plan:
    """What one query runs: the tokens from `start` on, on top of `ep`'s cache."""
    ep: Optional[_Episode]
    layout: _Layout
    frames: List[np.ndarray]
    frame_keys: List[bytes]
    units: _Units
    grids: List[object]        # all units'
    n_common: int              # units reused from the cache
    start: int                 # tokens reused from the cache
    offset: int                # rope position of token `start`
    pixel_values: object       # new units only
    grid_new: object


class TOPRewardBackend(RewardBackend):
    name = "topreward"
    needs: FrozenSet[str] = frozenset({"frames"})

    def __init__(self, config: Optional[TopRewardConfig] = None, model=None, processor=None,
                 **kwargs):
        self.config = config if config is not None else TopRewardConfig(**kwargs)
        cfg = self.config
        from .prompts import load_prompts
        self.prompts = load_prompts(cfg.prompts or "topreward_official")
        tp = self.prompts.topreward
        self.video = tp.frames == "video"
        self.fps = float(cfg.video_fps or tp.video_fps)
        self.max_batch = cfg.max_batch
        if model is None or processor is None:
            from .qwen import load_qwen_vl
            model, processor = load_qwen_vl(
                cfg.model_path, cfg.adapter_path, dtype=cfg.dtype, device=cfg.device,
                min_pixels=cfg.min_pixels or self.prompts.min_pixels,
                max_pixels=cfg.max_pixels or self.prompts.max_pixels)
        self.model, self.processor = model, processor
        if self.video and getattr(getattr(model, "config", None), "model_type", "qwen3_vl") != "qwen3_vl":
            raise ValueError(f"topreward: profile {self.prompts.profile!r} passes the frames as one "
                             f"video, which lrm_ros builds for Qwen3-VL only (this model is a "
                             f"{model.config.model_type}); use prompts_path:=lrm_ros (frames as images)")
        self._episodes: "OrderedDict[Tuple[str, int], _Episode]" = OrderedDict()
        self.answer_id = self.next_token_id(tp.answer_word)
        self.negative_id = self.next_token_id(tp.negative_word) if tp.negative_word else None
        self.stats = {"tokens_run": 0, "tokens_cached": 0, "forwards": 0}

    @property
    def model_id(self) -> str:
        mid = f"topreward:{self.config.model_path}"
        mid += f"+{self.config.adapter_path}" if self.config.adapter_path else ""
        return f"{mid}:{self.prompts.profile}"

    # -- input builder -------------------------------------------------------------------
    def _messages(self, instruction: str, n_units: int):
        from .prompts import topreward_messages
        p = self.prompts
        return topreward_messages(p.topreward, instruction, n_units, p.system, p.instruction)

    def prompt_text(self, instruction: str, visual: Sequence[str]) -> str:
        """The prompt as text, the answer not included; visual[k] = unit k's expanded text
        (video: all pairs in one string)."""
        proc = self.processor
        n = 1 if self.video else len(visual)
        closed = self.prompts.topreward.turn == "closed"
        text = proc.render(self._messages(instruction, n), add_generation_prompt=closed)
        if not closed:   # open turn: cut at the end of the (last) user turn
            cut = text.rfind("<|im_end|>")
            if cut < 0:
                raise ValueError("topreward: the chat template has no <|im_end|> to cut at")
            text = text[:cut]
        if self.video:
            if text.count(proc.VIDEO_TRIPLE) != 1:
                raise ValueError("topreward: the prompt template must show the video once")
            return text.replace(proc.VIDEO_TRIPLE, "".join(visual), 1)
        parts = text.split("<|image_pad|>")
        if len(parts) != len(visual) + 1:
            raise ValueError("topreward: the prompt template must show each frame once")
        out = parts[0]
        for v, rest in zip(visual, parts[1:]):
            out += v + rest
        return out

    def next_token_id(self, word: str, instruction: str = "pick up the cube") -> int:
        """The token id `word` gets when it follows the prompt (checks it is one token and
        leaves the prompt's tokens unchanged)."""
        visual = [self.processor.video_text([0.0], 1)] if self.video else ["<|image_pad|>"]
        text = self.prompt_text(instruction, visual)
        enc = self.processor.tokenizer.encode
        base, full = enc(text, add_special_tokens=False), enc(text + word, add_special_tokens=False)
        if full[:len(base)] != base or len(full) != len(base) + 1:
            raise ValueError(f"topreward: answer word {word!r} is not a single token after the "
                             f"prompt (got {len(full) - len(base)} tokens); choose another")
        return full[-1]

    def _units(self, frames: Sequence[np.ndarray], keys: Sequence[bytes]) -> _Units:
        if not self.video:
            return _Units(list(keys), [(f,) for f in frames], len(frames), (0, 0), [])
        proc = self.processor
        n = len(frames)
        tf = proc.temporal_patch_size
        padded = list(frames) + [frames[-1]] * (-n % tf)
        pkeys = list(keys) + [keys[-1]] * (-n % tf)
        h, w = np.asarray(frames[0]).shape[:2]
        size = proc.video_size(len(padded), h, w)
        stamps = proc.video_timestamps(n, self.fps)
        ukeys, uframes = [], []
        for k, t in enumerate(stamps):
            hsh = hashlib.blake2b(digest_size=16)
            for key in pkeys[k * tf:(k + 1) * tf]:
                hsh.update(key)
            hsh.update(repr((size, f"{t:.1f}")).encode())
            ukeys.append(hsh.digest())
            uframes.append(tuple(padded[k * tf:(k + 1) * tf]))
        return _Units(ukeys, uframes, n // tf, size, stamps)

    def _pixels(self, units: _Units, first: int):
        """(pixel_values or pixel_values_videos, grid rows) of units[first:]."""
        if first >= len(units.frames):
            return None, []
        if self.video:
            pv, grid = self.processor.preprocess_pairs(units.frames[first:], units.size)
        else:
            pv, grid = self.processor.preprocess_images([u[0] for u in units.frames[first:]])
        return pv, list(grid)

    def _layout(self, instruction: str, units: _Units, grids) -> _Layout:
        proc = self.processor
        n_tok = proc.tokens_per_image(grids) if len(grids) else []
        if self.video:
            visual = [proc.video_text(units.timestamps, n_tok[0] if n_tok else 0)]
        else:
            visual = ["<|image_pad|>" * t for t in n_tok]
        ids = proc.tokenizer.encode(self.prompt_text(instruction, visual), add_special_tokens=False)
        mm = [1 if t == proc.image_token_id else 2 if t == proc.video_token_id else 0 for t in ids]
        ends = [i + 1 for i, t in enumerate(ids) if t == proc.vision_end_id]
        if len(ends) != len(grids):
            raise ValueError("topreward: the prompt template must show each frame once")
        return _Layout(ids, mm, ends)

    def _rope_positions(self, layout: _Layout, start: int, grids_new, offset: int):
        """(4, 1, L - start) position ids of the tokens from `start` on: the plain text row
        (sequence index) + Qwen-VL's 3D M-RoPE rows, from the model's own `get_rope_index`
        over the new tokens shifted by the position that follows the cached prefix (shift-
        invariant: text +1 per token, a visual unit starts at the current position and
        advances it by max(h, w)/merge; tested against the uncached forward)."""
        import torch
        ids = torch.tensor([layout.ids[start:]], dtype=torch.long)
        mm = torch.tensor([layout.mm[start:]], dtype=torch.long)
        grid_t = torch.stack([torch.as_tensor(g).long() for g in grids_new]) if len(grids_new) else None
        kw = {"video_grid_thw": grid_t} if self.video else {"image_grid_thw": grid_t}
        pos3, _ = self.model.model.get_rope_index(ids, mm_token_type_ids=mm,
                                                  attention_mask=torch.ones_like(ids), **kw)
        text_row = torch.arange(start, len(layout.ids), dtype=pos3.dtype).view(1, 1, -1)
        return torch.cat([text_row, pos3 + offset], dim=0)

    def _visual_kwargs(self, pv, grids) -> dict:
        import torch
        if pv is None:
            return {}
        grid = torch.stack([torch.as_tensor(g).long() for g in grids]).to(self.model.device)
        if self.video:
            return {"pixel_values_videos": pv.to(self.model.device), "video_grid_thw": grid}
        return {"pixel_values": pv.to(self.model.device), "image_grid_thw": grid}

    # -- model call ----------------------------------------------------------------------
    def _scores(self, logits_last) -> Tuple[List[float], List[float]]:
        import torch
        lp = torch.log_softmax(logits_last.float(), dim=-1)
        t = lp[:, self.answer_id].tolist()
        f = lp[:, self.negative_id].tolist() if self.negative_id is not None else [NAN] * len(t)
        return t, f

    def logp_uncached(self, instruction: str, frames: Sequence[np.ndarray]) -> Tuple[float, float]:
        """Reference: the whole prompt in one plain forward (the model computes its own rope
        positions; a video as one (T/2, h, w) grid). Used when `cache` is off, and by the
        tests."""
        import torch
        frames = list(frames)
        units = self._units(frames, [b""] * len(frames))
        pv, grids = self._pixels(units, 0)
        layout = self._layout(instruction, units, grids)
        if self.video and grids:   # one video: (T/2, h, w), as the stock processor gives it
            g = torch.as_tensor(grids[0]).clone()
            g[0] = len(grids)
            grids = [g]
        dev = self.model.device
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([layout.ids], device=dev),
                             mm_token_type_ids=torch.tensor([layout.mm], device=dev),
                             use_cache=False, logits_to_keep=1, **self._visual_kwargs(pv, grids))
        self.stats["tokens_run"] += len(layout.ids)
        self.stats["forwards"] += 1
        t, f = self._scores(out.logits[:, -1])
        return t[0], f[0]

    def _plan(self, q: RewardQuery) -> _Plan:
        frames = list(q.frames) if len(q.frames) else [q.frame]
        ep = self._episodes.get((q.env, q.episode))
        keys: List[bytes] = []
        for i, f in enumerate(frames):   # identity first: queries are snapshots, never mutated
            same = ep is not None and i < len(ep.frames) and f is ep.frames[i]
            keys.append(ep.frame_keys[i] if same else frame_key(f))
        units = self._units(frames, keys)
        n_common = 0
        if ep is not None:
            self._episodes.move_to_end((q.env, q.episode))
            while (n_common < min(len(ep.unit_keys), units.stable)
                   and ep.unit_keys[n_common] == units.keys[n_common]):
                n_common += 1
            if n_common == len(units.keys):   # same units again: re-run the last one (the
                n_common -= 1                 # cache holds no logits)
        grids_old = list(ep.grids[:n_common]) if n_common else []
        pv, grid_new = self._pixels(units, n_common)
        layout = self._layout(q.instruction, units, grids_old + grid_new)
        start = layout.unit_ends[n_common - 1] if n_common > 0 else 0
        if n_common > 0 and ep.ids[:start] != layout.ids[:start]:
            n_common, start = 0, 0   # the header changed (another template?): start over
            pv, grid_new = self._pixels(units, 0)
            layout = self._layout(q.instruction, units, grid_new)
            grids_old = []
        if n_common == 0:
            ep = None
        elif len(ep.ids) > start:         # units changed or re-query: cut the cache back
            ep.cache = self._select(ep.cache, 0, start, copy=False)
            ep.ids = ep.ids[:start]
        offset = ep.next_pos[n_common - 1] if ep is not None else 0
        return _Plan(ep, layout, frames, keys, units, grids_old + grid_new, n_common, start,
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
            # rope position following each new unit's end (for the next query's offset)
            ends = p.layout.unit_ends[p.n_common:]
            next_pos.append([int(new_pos[1:, 0, e - 1 - start].max()) + 1 for e in ends])
            if p.pixel_values is not None:
                pvs.append(p.pixel_values)
                grids.extend(p.grid_new)
        cache = self._stack_caches([p.ep.cache for p in plans]) if start > 0 else DynamicCache()
        kwargs = self._visual_kwargs(torch.cat(pvs) if pvs else None, grids)
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
        # keep [.. last stable unit] per episode: cut off the rest (and the statement)
        cache = out.past_key_values
        for b, (q, p) in enumerate(zip(queries, plans)):
            n_keep = p.units.stable
            if n_keep == 0:
                self._episodes.pop((q.env, q.episode), None)
                continue
            keep = p.layout.unit_ends[n_keep - 1]
            old_next = p.ep.next_pos[:p.n_common] if p.ep is not None else []
            all_next = (old_next + next_pos[b])[:n_keep]
            self._episodes[(q.env, q.episode)] = _Episode(
                self._select(cache, b, keep, copy=B > 1), p.layout.ids[:keep], list(p.frames),
                list(p.frame_keys), p.units.keys[:n_keep], p.grids[:n_keep], all_next)
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
                groups: Dict[int, List[int]] = {}
                for i in wave:   # same cached length -> stackable (first queries: 0)
                    groups.setdefault(plans[i].start, []).append(i)
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
