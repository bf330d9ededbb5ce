"""Reward-model quality metrics: pure functions on numpy arrays (ROS-free, no model code).

Every function returns a float. Where a metric is undefined it returns NaN and never raises
for data reasons (shape mismatches and invalid labels do raise ValueError); call it with
``return_reason=True`` to get ``(value, reason)``, ``reason`` being "" when the value is
defined and a short explanation otherwise (e.g. "constant predictions", "single class").

Conventions shared by all functions:
  * inputs are 1-D sequences; entries where any input is NaN/inf are dropped first (a model's
    invalid answers are NaN), and the metric is computed on what remains;
  * ties are handled explicitly: rank correlations use average ranks; ranking metrics give a
    tied pair half credit (0.5), the usual Mann-Whitney convention.

Metrics:
  voc                 Value-Order Correlation (TOPReward): Spearman rank correlation between the
                      predicted progress along one episode and time (or the true progress).
  roc_auc             area under the ROC curve of scores vs binary labels (sklearn).
  pairwise_accuracy   fraction of (success, failure) episode pairs whose success scores higher
                      (identical to roc_auc of the same scores: the Mann-Whitney statistic).
  order_accuracy      fraction of (earlier, later) point pairs of one episode whose later point
                      is predicted higher (a rank-order measure along time, like voc).
  contrastive_accuracy  fraction of contrastive answers (-1/0/+1) equal to the true direction.
  pearson             Pearson correlation (e.g. a trajectory's reward vs the oracle dense reward).
  progress_mae        mean absolute error of predicted vs target progress.
  accuracy_within     fraction of predictions within +-tol of the target.
  nanmean             mean of per-episode values, ignoring NaN (NaN when none is finite).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["voc", "roc_auc", "pairwise_accuracy", "order_accuracy", "contrastive_accuracy", "pearson",
           "progress_mae", "accuracy_within", "nanmean", "spearman"]

NAN = float("nan")
Result = Union[float, Tuple[float, str]]
# tolerance for "within tol": |0.3 - 0.2| must count as within 0.1 despite float rounding
_EPS = 1e-9


def _out(value: float, reason: str, return_reason: bool) -> Result:
    value = float(value)
    if not math.isnan(value):
        reason = ""
    return (value, reason) if return_reason else value


def _vec(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def _paired(a, b, na: str, nb: str) -> Tuple[np.ndarray, np.ndarray]:
    x, y = _vec(a, na), _vec(b, nb)
    if x.shape != y.shape:
        raise ValueError(f"{na} and {nb} differ in length: {x.size} vs {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _is_constant(x: np.ndarray) -> bool:
    return x.size > 0 and bool(np.all(x == x[0]))


def _correlation(x: np.ndarray, y: np.ndarray, rank: bool, return_reason: bool) -> Result:
    if x.size < 2:
        return _out(NAN, f"fewer than 2 valid points ({x.size})", return_reason)
    if _is_constant(x):
        return _out(NAN, "constant predictions (correlation undefined)", return_reason)
    if _is_constant(y):
        return _out(NAN, "constant reference (correlation undefined)", return_reason)
    from scipy import stats

    r = stats.spearmanr(x, y).statistic if rank else stats.pearsonr(x, y).statistic
    return _out(float(np.clip(r, -1.0, 1.0)), "", return_reason)


def spearman(a: Sequence[float], b: Sequence[float], *, return_reason: bool = False) -> Result:
    """Spearman rank correlation (average ranks for ties). NaN when fewer than 2 finite pairs
    or either side is constant."""
    x, y = _paired(a, b, "a", "b")
    return _correlation(x, y, True, return_reason)


def voc(pred: Sequence[float], times: Optional[Sequence[float]] = None, *,
        return_reason: bool = False) -> Result:
    """VOC of one episode: Spearman correlation between ``pred`` (predicted progress at
    successive points of the episode) and ``times`` (their ticks, or the true progress;
    default 0, 1, 2, ...). +1: progress rises monotonically with time; -1: falls.

    Ties in ``pred`` get average ranks (a plateau is neither rewarded nor punished as a
    whole). Constant predictions carry no order: NaN ("constant predictions") -- callers
    that want a number for them may count that as 0. Fewer than 2 valid points: NaN.
    """
    p = _vec(pred, "pred")
    t = np.arange(p.size, dtype=np.float64) if times is None else _vec(times, "times")
    if p.size != t.size:
        _raise_len("pred", "times", p.size, t.size)
    return spearman(p, t, return_reason=return_reason)


def _raise_len(na: str, nb: str, a: int, b: int):
    raise ValueError(f"{na} and {nb} differ in length: {a} vs {b}")


def pearson(a: Sequence[float], b: Sequence[float], *, return_reason: bool = False) -> Result:
    """Pearson correlation of two equally long series (finite pairs only). NaN when fewer
    than 2 pairs or either series is constant (e.g. a reward model that never moves)."""
    x, y = _paired(a, b, "a", "b")
    return _correlation(x, y, False, return_reason)


def _binary_labels(labels, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.size != n:
        raise ValueError(f"labels must be 1-D with {n} entries, got shape {y.shape}")
    if y.dtype == bool:
        return y
    yf = y.astype(np.float64)
    if not np.all(np.isin(yf, (0.0, 1.0))):
        raise ValueError(f"labels must be 0/1 or bool, got values {sorted(set(yf.tolist()))[:5]}")
    return yf == 1.0


def roc_auc(scores: Sequence[float], labels: Sequence, *, return_reason: bool = False) -> Result:
    """ROC-AUC of ``scores`` for binary ``labels`` (1/True = positive, e.g. a successful
    episode). Ties between a positive and a negative count half (equal to
    ``pairwise_accuracy(scores[pos], scores[neg])``). Entries with a NaN score are dropped.
    A single class (all positive or all negative after dropping): NaN ("single class")."""
    s = _vec(scores, "scores")
    y = _binary_labels(labels, s.size)
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    if s.size == 0:
        return _out(NAN, "no valid scores", return_reason)
    if y.all() or not y.any():
        return _out(NAN, f"single class (all {'positive' if y.all() else 'negative'})", return_reason)
    from sklearn.metrics import roc_auc_score

    return _out(float(roc_auc_score(y.astype(int), s)), "", return_reason)


def pairwise_accuracy(success_scores: Sequence[float], failure_scores: Sequence[float], *,
                      return_reason: bool = False) -> Result:
    """Fraction of (success, failure) pairs with success score > failure score; a tie counts
    0.5. NaN scores are dropped; NaN when either side is empty."""
    s = _vec(success_scores, "success_scores")
    f = _vec(failure_scores, "failure_scores")
    s, f = s[np.isfinite(s)], f[np.isfinite(f)]
    if s.size == 0 or f.size == 0:
        return _out(NAN, f"no pairs ({s.size} success, {f.size} failure scores)", return_reason)
    diff = s[:, None] - f[None, :]
    wins = (diff > 0).sum() + 0.5 * (diff == 0).sum()
    return _out(wins / diff.size, "", return_reason)


def order_accuracy(pred: Sequence[float], times: Optional[Sequence[float]] = None, *,
                   return_reason: bool = False) -> Result:
    """Of all pairs of points (i, j) of one episode with ``times[i] < times[j]`` (default
    times 0, 1, 2, ...), the fraction whose ``pred[j] > pred[i]``; a tie in ``pred`` counts
    0.5, pairs with equal times are skipped. 1: the prediction never falls; 0.5: no order
    (e.g. constant); 0: it always falls. NaN when there is no pair of distinct times."""
    p = _vec(pred, "pred")
    t = np.arange(p.size, dtype=np.float64) if times is None else _vec(times, "times")
    if p.size != t.size:
        _raise_len("pred", "times", p.size, t.size)
    p, t = _paired(p, t, "pred", "times")
    later = t[None, :] > t[:, None]            # [i, j]: j comes after i
    n = int(later.sum())
    if n == 0:
        return _out(NAN, f"no pair of points at distinct times ({p.size} valid points)", return_reason)
    d = (p[None, :] - p[:, None])[later]
    return _out(((d > 0).sum() + 0.5 * (d == 0).sum()) / n, "", return_reason)


def contrastive_accuracy(pred_signs: Sequence[float], labels: Sequence[float], *,
                         return_reason: bool = False) -> Result:
    """Fraction of contrastive answers that match the true direction.

    ``labels`` are the true directions, +1 (the current frame is closer to done than the
    earlier one) or -1. ``pred_signs`` are the model's answers; only their sign is used: a
    0 or NaN (unparseable / abstained) answer counts as wrong, so abstaining is never
    rewarded. NaN only when there are no labels.
    """
    p = _vec(pred_signs, "pred_signs")
    y = _vec(labels, "labels")
    if p.size != y.size:
        _raise_len("pred_signs", "labels", p.size, y.size)
    if not np.all(np.isin(y, (-1.0, 1.0))):
        raise ValueError("contrastive labels must be +1 or -1")
    if y.size == 0:
        return _out(NAN, "no contrastive labels", return_reason)
    sign = np.sign(np.nan_to_num(p, nan=0.0))
    return _out(float(np.mean(sign == y)), "", return_reason)


def progress_mae(pred: Sequence[float], target: Sequence[float], *,
                 return_reason: bool = False) -> Result:
    """Mean |pred - target| over finite pairs; NaN when there are none."""
    x, y = _paired(pred, target, "pred", "target")
    if x.size == 0:
        return _out(NAN, "no valid pairs", return_reason)
    return _out(float(np.mean(np.abs(x - y))), "", return_reason)


def accuracy_within(pred: Sequence[float], target: Sequence[float], tol: float, *,
                    return_reason: bool = False) -> Result:
    """Fraction of finite pairs with |pred - target| <= tol (boundary inclusive, with 1e-9
    slack for float rounding: 0.3 vs 0.2 is within 0.1). NaN when there are no pairs."""
    if not (tol >= 0):
        raise ValueError(f"tol must be >= 0, got {tol}")
    x, y = _paired(pred, target, "pred", "target")
    if x.size == 0:
        return _out(NAN, "no valid pairs", return_reason)
    return _out(float(np.mean(np.abs(x - y) <= tol + _EPS)), "", return_reason)


def nanmean(values: Sequence[float], *, return_reason: bool = False) -> Result:
    """Mean of the finite values (e.g. per-episode VOCs); NaN when none is finite."""
    v = _vec(values, "values") if len(values) else np.zeros(0)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return _out(NAN, "no finite values", return_reason)
    return _out(float(v.mean()), "", return_reason)
