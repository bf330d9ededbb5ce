"""lrm_ros.evaluation.metrics against hand-computed values, including every documented edge case."""
import math

import numpy as np
import pytest

from lrm_ros.evaluation import metrics as M


def nan_with(result, word):
    value, reason = result
    assert math.isnan(value), value
    assert word in reason, reason


# ---------------------------------------------------------------- VOC / Spearman
def test_voc_perfect_and_inverse():
    assert M.voc([0.1, 0.2, 0.3, 0.4]) == pytest.approx(1.0)
    assert M.voc([0.4, 0.3, 0.2, 0.1]) == pytest.approx(-1.0)
    # monotone but non-linear still 1 (ranks only); times given explicitly
    assert M.voc([0.0, 0.01, 0.5, 0.99], times=[10, 20, 30, 40]) == pytest.approx(1.0)


def test_voc_hand_computed():
    # ranks (1, 3, 2) vs (1, 2, 3): sum d^2 = 2, rho = 1 - 6*2 / (3*(9-1)) = 0.5
    assert M.voc([0.1, 0.3, 0.2]) == pytest.approx(0.5)


def test_voc_ties_get_average_ranks():
    # pred ranks (1.5, 1.5, 3.5, 3.5) vs (1, 2, 3, 4): r = 4 / sqrt(4 * 5)
    assert M.voc([0, 0, 1, 1]) == pytest.approx(4 / math.sqrt(20))


def test_voc_undefined_cases():
    nan_with(M.voc([0.5, 0.5, 0.5], return_reason=True), "constant predictions")
    nan_with(M.voc([0.5], return_reason=True), "fewer than 2")
    nan_with(M.voc([], return_reason=True), "fewer than 2")
    nan_with(M.voc([0.1, 0.2], times=[3, 3], return_reason=True), "constant reference")
    assert M.voc([0.1, 0.2, 0.3], return_reason=True) == (pytest.approx(1.0), "")


def test_voc_drops_nan_and_checks_length():
    assert M.voc([0.1, float("nan"), 0.3]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="length"):
        M.voc([0.1, 0.2], times=[0, 1, 2])


# ---------------------------------------------------------------- ROC-AUC / pairwise
def test_roc_auc_hand_computed():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ordered -> 0.75
    assert M.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert M.roc_auc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == pytest.approx(1.0)
    assert M.roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == pytest.approx(0.0)


def test_roc_auc_ties_count_half():
    # (0.5 vs 0.5) = 0.5, (0.9 vs 0.5) = 1 -> 0.75
    assert M.roc_auc([0.5, 0.5, 0.9], [0, 1, 1]) == pytest.approx(0.75)
    assert M.roc_auc([0.3, 0.3, 0.3, 0.3], [0, 1, 0, 1]) == pytest.approx(0.5)   # constant


def test_roc_auc_single_class_and_nan():
    nan_with(M.roc_auc([0.1, 0.9], [1, 1], return_reason=True), "single class")
    nan_with(M.roc_auc([0.1, 0.9], [0, 0], return_reason=True), "single class")
    # the only negative has a NaN score: dropped -> single class
    nan_with(M.roc_auc([float("nan"), 0.9], [0, 1], return_reason=True), "single class")
    with pytest.raises(ValueError, match="0/1"):
        M.roc_auc([0.1, 0.2], [0, 2])


def test_pairwise_accuracy():
    # (.9>.5) (.9>.1) (.5=.5 -> .5) (.5>.1) = 3.5 / 4
    assert M.pairwise_accuracy([0.9, 0.5], [0.5, 0.1]) == pytest.approx(0.875)
    assert M.pairwise_accuracy([1.0], [0.0, 0.2]) == 1.0
    assert M.pairwise_accuracy([0.0], [1.0]) == 0.0
    assert M.pairwise_accuracy([0.4, 0.4], [0.4]) == 0.5
    nan_with(M.pairwise_accuracy([0.9], [], return_reason=True), "no pairs")
    nan_with(M.pairwise_accuracy([float("nan")], [0.1], return_reason=True), "no pairs")
    # equals ROC-AUC on the same data
    s, f = [0.35, 0.8, 0.5], [0.1, 0.4, 0.5]
    assert M.pairwise_accuracy(s, f) == pytest.approx(M.roc_auc(s + f, [1, 1, 1, 0, 0, 0]))


def test_order_accuracy():
    # pairs (0,1) up, (0,2) up, (1,2) down -> 2/3
    assert M.order_accuracy([0.1, 0.5, 0.3]) == pytest.approx(2 / 3)
    assert M.order_accuracy([0.0, 0.2, 0.9]) == 1.0 and M.order_accuracy([3, 2, 1]) == 0.0
    assert M.order_accuracy([0.4, 0.4, 0.4]) == 0.5                      # no order: ties count half
    # times given (query ticks); a NaN point is dropped with its time
    assert M.order_accuracy([0.2, float("nan"), 0.1, 0.9], [10, 20, 30, 40]) == pytest.approx(2 / 3)
    assert M.order_accuracy([0.9, 0.1], [30, 10]) == 1.0                 # later by time, not position
    nan_with(M.order_accuracy([0.5], return_reason=True), "no pair")
    nan_with(M.order_accuracy([0.5, 0.6], [7, 7], return_reason=True), "no pair")
    with pytest.raises(ValueError, match="length"):
        M.order_accuracy([0.1, 0.2], [1])


# ---------------------------------------------------------------- contrastive
def test_contrastive_accuracy():
    assert M.contrastive_accuracy([1, -1], [1, -1]) == 1.0
    assert M.contrastive_accuracy([-1, 1], [1, -1]) == 0.0
    # only the first is right: 0 and NaN (unparseable) count as wrong
    assert M.contrastive_accuracy([1, -1, 0, float("nan"), 1], [1, 1, 1, -1, -1]) == pytest.approx(0.2)
    assert M.contrastive_accuracy([0.3, -2.0], [1, -1]) == 1.0       # signs only
    nan_with(M.contrastive_accuracy([], [], return_reason=True), "no contrastive")
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        M.contrastive_accuracy([1], [0])


# ---------------------------------------------------------------- Pearson / progress
def test_pearson():
    # centred (-1,0,1) . (-7/3,-1/3,8/3) = 5; r = 5 / sqrt(2 * 114/9)
    assert M.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    assert M.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    nan_with(M.pearson([0.2, 0.2, 0.2], [1, 2, 3], return_reason=True), "constant predictions")
    nan_with(M.pearson([1.0], [2.0], return_reason=True), "fewer than 2")
    assert M.pearson([1, 2, float("nan"), 3], [1, 2, 5, 3]) == pytest.approx(1.0)


def test_progress_mae_and_accuracy_within():
    assert M.progress_mae([0.1, 0.5], [0.0, 1.0]) == pytest.approx(0.3)
    assert M.progress_mae([0.1, float("nan")], [0.0, 1.0]) == pytest.approx(0.1)
    nan_with(M.progress_mae([float("nan")], [0.0], return_reason=True), "no valid")
    # 0.3 vs 0.2 is within 0.1 despite float rounding; 0.5 vs 0.2 is not; the NaN pair is dropped
    assert M.accuracy_within([0.3, 0.5, 0.0], [0.2, 0.2, float("nan")], 0.1) == pytest.approx(0.5)
    assert M.accuracy_within([0.3, 0.5], [0.2, 0.2], 0.3) == 1.0
    assert M.accuracy_within([0.0, 1.0], [0.0, 0.0], 0.0) == 0.5
    with pytest.raises(ValueError):
        M.accuracy_within([0.1], [0.1], -0.1)
    with pytest.raises(ValueError, match="length"):
        M.progress_mae([0.1, 0.2], [0.1])


def test_nanmean():
    assert M.nanmean([1.0, float("nan"), 0.0]) == 0.5
    nan_with(M.nanmean([float("nan")], return_reason=True), "no finite")
    assert math.isnan(M.nanmean([]))
    assert M.nanmean(np.array([0.25])) == 0.25
