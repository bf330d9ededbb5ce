"""The reward-backend interface: queries in, results out, in batches.

A backend is three small parts (see each backend module): an input builder (query -> model
inputs), the model call (batched), and a parser (model outputs -> RewardResult). Parse
failures are explicit invalid results, counted by the engine; they never raise.
"""
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

NAN = float("nan")
SIGNALS = ("progress", "completion", "contrastive", "tri", "topreward", "oracle")


@dataclass(frozen=True, eq=False)
class RewardQuery:
    """Everything a backend may need to score one environment at one query tick. The frames
    are snapshots taken at query time (never mutated afterwards)."""
    env: str                                   # environment key (namespace), e.g. "env0"
    episode: int
    tick: int                                  # the query tick
    instruction: str
    frame: np.ndarray                          # (H, W, 3) uint8 RGB, the current frame
    previous_frame: Optional[np.ndarray] = None  # the frame K ticks earlier (contrastive)
    previous_tick: int = -1                      # its tick (0: the episode's start; -1: unknown)
    first_frame: Optional[np.ndarray] = None     # the episode's first frame (progress)
    frames: Tuple[np.ndarray, ...] = ()          # frames at the query points so far (TOPReward)
    oracle: Optional[float] = None               # simulator's normalized dense reward (oracle)
    stamp_ns: int = 0                            # header stamp of the query tick

    @property
    def key(self) -> Tuple[str, int, int]:
        return (self.env, self.episode, self.tick)


@dataclass(frozen=True)
class RewardResult:
    """One scored query. `value` is the reward for the configured signal, in [0, 1] for the
    LRM signals; NaN when invalid. The components are NaN where not computed;
    `contrastive` is the raw answer -1 / 0 / +1 (0 = unparseable)."""
    value: float
    progress: float = NAN
    completion: float = NAN
    contrastive: float = NAN
    valid: bool = True
    invalid: Tuple[str, ...] = ()              # which parts could not be parsed, and why
    raw: Dict[str, object] = field(default_factory=dict)   # e.g. answers, log P(True)
    #: "" = scored (valid or not); "error" / "timeout" = the backend could not score this
    #: query (e.g. its inference server failed or did not answer): `invalid` holds the reason
    status: str = ""

    @staticmethod
    def invalid_result(reason: str, **raw) -> "RewardResult":
        return RewardResult(value=NAN, valid=False, invalid=(reason,), raw=dict(raw))


def tri_value(progress: float, completion: float, contrastive: float) -> float:
    """LRM's "tri" signal: the mean of progress, completion and contrastive mapped to [0, 1]
    by (x + 1) / 2. Components that are NaN are left out of the mean."""
    parts = [progress, completion, (contrastive + 1.0) / 2.0 if not math.isnan(contrastive) else NAN]
    parts = [p for p in parts if not math.isnan(p)]
    return sum(parts) / len(parts) if parts else NAN


def tri_value_released(progress: float, completion: float, contrastive: Optional[float],
                       weights: Tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)) -> float:
    """LRM's published "tri" reward (envs/vlm_maniskill_env.py of the LRM code): the weighted
    sum w_c * (contrastive + 1) / 2 + w_p * progress + w_d * completion, weights in the
    order (contrastive, progress, completion). contrastive None = not asked (the first query
    of an episode), which counts 0, not 0.5; NaN progress/completion (unparseable) count 0."""
    w_c, w_p, w_d = weights
    c = 0.0 if contrastive is None or math.isnan(contrastive) else (contrastive + 1.0) / 2.0
    p = 0.0 if math.isnan(progress) else progress
    d = 0.0 if math.isnan(completion) else completion
    return w_c * c + w_p * p + w_d * d


class RewardBackend(ABC):
    """Scores batches of queries. Implementations must be safe to call from one worker thread
    (the engine's); they need not be thread-safe."""

    #: backend name in the registry, e.g. "vlm"
    name: str = ""
    #: which optional query fields the backend reads: "previous_frame", "first_frame",
    #: "frames", "oracle"; the hold snapshots only those
    needs: FrozenSet[str] = frozenset()
    #: the largest batch one forward pass takes
    max_batch: int = 8

    @property
    def model_id(self) -> str:
        return self.name

    @abstractmethod
    def score_batch(self, queries: Sequence[RewardQuery]) -> List[RewardResult]:
        """One result per query, same order. May raise on a backend failure (the engine
        catches and counts it); malformed model output is an invalid result, not an error."""

    def end_episode(self, env: str, episode: int) -> None:
        """The episode is over: drop any per-episode state (caches)."""

    def close(self) -> None:
        """Free models and caches."""


def signal_needs(signals, use_first_frame: bool) -> frozenset:
    """The frames beyond the current one that LRM-style signals read: contrastive compares
    with the previous query's frame, progress (optionally) with the episode's first."""
    needs = set()
    if "contrastive" in signals:
        needs.add("previous_frame")
    if "progress" in signals and use_first_frame:
        needs.add("first_frame")
    return frozenset(needs)
