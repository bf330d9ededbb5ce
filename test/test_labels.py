"""lrm_ros.data.labels on synthetic episodes whose frames encode (tick, episode, task)."""
import numpy as np
import pytest

from lrm_ros.bags.reader import Episode
from lrm_ros.data.labels import (LabelConfig, build_examples, build_labelled, instruction_owner,
                                 split_by_task)
from lrm_ros.data.lite_data import LiteExamples

INSTR = {"PickCube-v1": "pick the cube", "PushCube-v1": "push the cube"}
TASK_CODE = {"PickCube-v1": 1, "PushCube-v1": 2}


def episode(task, ep, T, success=True):
    frames = np.zeros((T, 4, 4, 3), np.uint8)
    frames[..., 0] = np.arange(T)[:, None, None]       # tick
    frames[..., 1] = ep                                 # episode
    frames[..., 2] = TASK_CODE[task] + (10 if not success else 0)
    succ = np.zeros(T, bool)
    succ[-1] = success
    z = np.zeros((T, 2))
    return Episode(task=task, instruction=INSTR[task], episode=ep, ticks=np.arange(T),
                   stamps_ns=np.arange(T) * 50_000_000, frames=frames, actions=np.zeros((T - 1, 7)),
                   joint_names=["a", "b"], joint_positions=z, joint_velocities=z,
                   dense_rewards=np.zeros(T), normalized_dense_rewards=np.zeros(T),
                   successes=succ, failures=np.zeros(T, bool), episode_end=True,
                   end_reason=1 if success else 2)


def tick_of(ex, idx):
    return ex.frames[np.asarray(idx), 0, 0, 0].astype(int)


def task_code(ex, idx):
    return ex.frames[np.asarray(idx), 0, 0, 2].astype(int)


@pytest.fixture(scope="module")
def data():
    eps = [episode("PickCube-v1", 0, 31), episode("PickCube-v1", 1, 25), episode("PushCube-v1", 0, 41)]
    fails = [episode("PickCube-v1", 2, 20, success=False)]
    return eps, fails


def test_output_is_lite_examples(data, tmp_path):
    eps, fails = data
    ex = build_examples(eps, fails, LabelConfig(frame_stride=2))
    assert isinstance(ex, LiteExamples)
    ex.validate()
    assert ex.frames.dtype == np.uint8 and ex.frames.shape[1:] == (4, 4, 3)
    assert sorted(ex.tasks) == ["PickCube-v1", "PushCube-v1"]
    back = LiteExamples.load(ex.save(tmp_path / "ex.npz"))
    assert back.counts() == ex.counts()
    np.testing.assert_array_equal(back.progress_target, ex.progress_target)


def test_progress_targets_are_temporal_position(data):
    eps, fails = data
    lab = build_labelled(eps, fails, LabelConfig(frame_stride=2, reversed=False, cross_task=False))
    ex = lab.lite
    t = tick_of(ex, ex.progress_frame)
    T = np.where(task_code(ex, ex.progress_frame) == 2, 41, np.where(ex.frames[ex.progress_frame, 0, 0, 1] == 0, 31, 25))
    np.testing.assert_allclose(ex.progress_target, t / (T - 1), atol=1e-6)
    assert (tick_of(ex, ex.progress_first) == 0).all()          # the episode's first frame
    assert ex.progress_target.min() == 0.0 and ex.progress_target.max() == pytest.approx(1.0)
    # every 2nd tick is kept (plus the final ticks); failures give no progress labels
    kept = set(tick_of(ex, ex.progress_frame[task_code(ex, ex.progress_frame) == 2]).tolist())
    assert set(range(0, 41, 2)) <= kept and {38, 39, 40} <= kept and 1 not in kept
    assert not (task_code(ex, ex.progress_frame) >= 10).any()
    # fewer frames with a larger stride
    ex4 = build_examples(eps, fails, LabelConfig(frame_stride=4))
    assert ex4.num_frames < ex.num_frames


def test_completion_labels(data):
    eps, fails = data
    lab = build_labelled(eps, fails, LabelConfig(done_ticks=3, balance_completion=False))
    ex = lab.lite
    own = np.array([ex.instructions[i] for i in ex.completion_instr]) == np.array(
        [INSTR[ex.tasks[k]] for k in ex.completion_task])
    f = ex.completion_frame
    t, code = tick_of(ex, f), task_code(ex, f)
    T = np.where(code == 2, 41, np.where(ex.frames[f, 0, 0, 1] == 0, 31, 25))
    succ = (code < 10) & own & lab.source_mask("completion", "success")
    np.testing.assert_array_equal(ex.completion_label[succ], (t[succ] >= T[succ] - 3).astype(np.float32))
    assert ex.completion_label[succ].sum() == 9                   # 3 final ticks x 3 successes
    # all frames of the failure are 0, incl. its last one
    fail = code >= 10
    assert fail.sum() == 11 and (ex.completion_label[fail] == 0).all() and 19 in t[fail]
    # truncated: the end of the first half of each success is not done
    tr = lab.source_mask("completion", "truncated")
    assert tr.any() and (ex.completion_label[tr] == 0).all()
    assert set(t[tr & (code == 2)].tolist()) == {18, 19, 20}
    # reversed clips count as failures: their final frames (the original start) are 0
    rv = lab.source_mask("completion", "reversed")
    assert (ex.completion_label[rv] == 0).all() and set(t[rv].tolist()) <= {0, 1, 2}
    # every completion example carries its clip's first frame: tick 0 (a failure's too), the
    # done frame for the reversed clip
    fr = ex.completion_first
    assert (fr >= 0).all() and (task_code(ex, fr) == code).all()
    assert (tick_of(ex, fr[~rv]) == 0).all()
    assert (tick_of(ex, fr[rv & (code == 2)]) == 40).all()
    # balancing: both classes weigh the same in total
    exb = build_examples(eps, fails, LabelConfig())
    pos = exb.completion_label == 1
    assert exb.completion_weight[pos].sum() == pytest.approx(exb.completion_weight[~pos].sum(), rel=1e-5)


def test_contrastive_pairs_both_orders(data):
    eps, _ = data
    lab = build_labelled(eps, (), LabelConfig(frame_stride=2, contrastive_gap=10, random_gap_pairs=1))
    ex = lab.lite
    tp, tc = tick_of(ex, ex.contrastive_prev), tick_of(ex, ex.contrastive_cur)
    # label 1 exactly when the current frame is the later one; same episode always
    np.testing.assert_array_equal(ex.contrastive_label, (tc > tp).astype(np.float32))
    np.testing.assert_array_equal(lab.contrastive_gap, tc - tp)
    assert (ex.frames[ex.contrastive_prev, 0, 0, 1:] == ex.frames[ex.contrastive_cur, 0, 0, 1:]).all()
    # gap-K pairs exist in both orders; reversed pairs are the label-0 ones
    gaps = lab.contrastive_gap.tolist()
    assert gaps.count(10) == gaps.count(-10) > 0
    assert sorted(set(gaps) - {10, -10})                         # random gaps too
    rv = lab.source_mask("contrastive", "reversed")
    assert (ex.contrastive_label[rv] == 0).all() and (ex.contrastive_label[~rv] == 1).all()
    assert rv.sum() == (~rv).sum()


def test_reversed_progress_keeps_true_progress(data):
    eps, _ = data
    lab = build_labelled(eps[2:], (), LabelConfig(frame_stride=2, cross_task=False))
    ex = lab.lite
    rv = lab.source_mask("progress", "reversed")
    assert rv.any()
    t = tick_of(ex, ex.progress_frame[rv])
    # the reversed clip's first frame is the done frame; the label is NOT the reversed order
    assert (tick_of(ex, ex.progress_first[rv]) == 40).all()
    np.testing.assert_allclose(ex.progress_target[rv], t / 40, atol=1e-6)
    assert (ex.progress_weight[rv] == 0.5).all()


def test_cross_task_instruction_negatives(data):
    eps, fails = data
    lab = build_labelled(eps, fails, LabelConfig(cross_task_per_episode=4))
    ex = lab.lite
    own = {k: ex.instructions.index(INSTR[ex.tasks[k]]) for k in range(len(ex.tasks))}
    for kind, col in (("progress", "target"), ("completion", "label")):
        instr, task = getattr(ex, f"{kind}_instr"), getattr(ex, f"{kind}_task")
        other = np.array([i != own[k] for i, k in zip(instr, task)])
        ct = lab.source_mask(kind, "cross_task")
        np.testing.assert_array_equal(other, ct)
        assert ct.sum() == 12                                    # 4 per success episode
        assert (getattr(ex, f"{kind}_{col}")[ct] == 0).all()
        # the done frame of each success is among them (the hardest negative)
        f = getattr(ex, f"{kind}_frame")[ct]
        assert {30, 24, 40} <= set(tick_of(ex, f).tolist())
    # a single task and no extra instructions: no cross-task negatives
    lab1 = build_labelled(eps[2:], (), LabelConfig())
    assert not lab1.source_mask("completion", "cross_task").any()
    lab2 = build_labelled(eps[2:], (), LabelConfig(extra_instructions=(("Other-v1", "do something"),)))
    assert lab2.source_mask("completion", "cross_task").sum() == 4


def test_split_by_task(data):
    eps, fails = data
    lab = build_labelled(eps, fails, LabelConfig())
    train, test = split_by_task(lab, ["PushCube-v1"])
    for part, codes in ((train.lite, {1, 11}), (test.lite, {2})):
        part.validate()
        assert set(task_code(part, np.arange(part.num_frames)).tolist()) == codes  # compacted frames
    # no train example shows the test task's instruction; test keeps its cross-task negatives
    assert "push the cube" not in train.lite.instructions
    assert test.source_mask("completion", "cross_task").sum() == 4
    assert train.lite.counts()["progress"] + test.lite.counts()["progress"] < lab.lite.counts()["progress"]
    # the same split on plain LiteExamples (instruction owners inferred)
    np.testing.assert_array_equal(instruction_owner(lab.lite), lab.instruction_task)
    tr2, te2 = split_by_task(lab.lite, ["PushCube-v1"])
    assert tr2.counts() == train.lite.counts() and te2.counts() == test.lite.counts()
    with pytest.raises(ValueError, match="unknown task"):
        split_by_task(lab, ["Nope-v1"])


def test_mixed_sizes_need_image_size(data):
    eps, _ = data
    big = episode("PickCube-v1", 5, 12)
    big.frames = np.repeat(np.repeat(big.frames, 2, axis=1), 2, axis=2)
    with pytest.raises(ValueError, match="image_size"):
        build_examples([eps[0], big])
    ex = build_examples([eps[0], big], config=LabelConfig(image_size=(4, 4)))
    assert ex.frames.shape[1:] == (4, 4, 3)


def test_augmented_episode_is_one_camera_and_labels_the_same(data):
    """Another camera sees every frame of an episode the same way (one draw per episode, a
    frame reads the same twice); the labels built from it are the original's."""
    from lrm_ros.data.augment import AugmentConfig, augment_episode

    eps, fails = data
    rng = np.random.default_rng(0)
    aug = [augment_episode(e, rng) for e in eps]
    assert len(aug[0].frames) == len(eps[0].frames)
    f5 = aug[0].frames[5]
    assert f5.shape == eps[0].frames[5].shape and f5.dtype == np.uint8
    assert (aug[0].frames[5] == f5).all() and not (f5 == eps[0].frames[5]).all()
    assert aug[0].frames.cam is aug[0].frames.cam and aug[0].frames.cam != aug[1].frames.cam
    a = build_labelled(aug, fails, LabelConfig(seed=3)).lite
    b = build_labelled(eps, fails, LabelConfig(seed=3)).lite
    np.testing.assert_array_equal(a.progress_target, b.progress_target)
    np.testing.assert_array_equal(a.completion_label, b.completion_label)
    assert a.num_frames == b.num_frames and not (a.frames == b.frames).all()
    with pytest.raises(ValueError, match="scale"):
        AugmentConfig(scale=(0.9, 1.2))
