"""`lrm-ros train-lite` end to end, shrunk: real ManiSkill demos and failures of two tasks at
64x64 (one demo each), labels, features, the leave-task-out folds through the real
interval-hold, the final model with a task excluded; and the refusal of reserved tasks."""
import json
import math

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from lrm_ros.learn import lite_lto  # noqa: E402
from lrm_ros.learn.lite_pipeline import main  # noqa: E402
from lrm_ros.rewards.lite import load_checkpoint  # noqa: E402
from lrm_ros.sim.tasks import LITE_TRAIN_TASKS, RESERVED_EVAL_TASKS  # noqa: E402

TASKS = ["PickCube-v1", "PushCube-v1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lite")
    argv = ["--generate", "-n", "1", "--width", "64", "--height", "64", "--tasks", *TASKS,
            "--exclude-tasks", "PushCube-v1", "--leave-task-out", "--epochs", "2", "--augment", "1",
            "--data", str(root / "data"), "--out", str(root / "out"), "--quiet"]
    assert main(argv) == 0
    return root


def test_leave_task_out_record(run):
    rec = json.loads((run / "out" / "lite_generalization.json").read_text())
    assert rec["train_tasks"] == TASKS
    assert set(rec["per_task"]) == set(TASKS)
    for task, m in rec["per_task"].items():
        assert m["successes"] == 1 and m["failures"] >= 1, (task, m)
        # each fold's model was trained without its task
        _, meta = load_checkpoint(m["checkpoint"])
        assert meta["training_tasks"] == [t for t in TASKS if t != task]
        for k in ("voc", "pairwise", "roc_auc", "direction_acc"):
            assert -1.0 <= m[k] <= 1.0, (task, k, m[k])
    assert rec["mean_unseen_voc"] == pytest.approx(
        sum(m["voc"] for m in rec["per_task"].values()) / 2)
    assert rec["command"].startswith("lrm-ros train-lite --generate")
    assert len(rec["data_hash"]) == 24 and rec["augment"] == 1
    assert "train_rollouts" not in rec          # none asked for
    md = (run / "out" / "lite_generalization.md").read_text()
    assert "| PickCube-v1 | 1 / " in md and "**mean**" in md
    assert (run / "out" / "lite_generalization.png").stat().st_size > 1000


def test_final_model_never_saw_the_excluded_task(run):
    _, meta = load_checkpoint(run / "out" / "lite_reward.pt")
    assert meta["training_tasks"] == ["PickCube-v1"]
    assert meta["excluded_tasks"] == ["PushCube-v1"]
    s = json.loads((run / "out" / "summary.json").read_text())
    assert meta["data_hash"] == s["data_hash"]
    assert s["augment"] == 1 and s["completion_first"] is True
    assert meta["train_config"]["completion_first"] is True
    ev = s["final_eval"]
    assert ev["unseen"] is True and list(ev["per_task"]) == ["PushCube-v1"]
    assert math.isfinite(ev["per_task"]["PushCube-v1"]["roc_auc"])


def test_generate_skips_tasks_that_have_data(run, capsys):
    # the data exist now: a second run generates nothing and reuses the feature cache
    out = run / "out2"
    assert main(["--generate", "-n", "1", "--tasks", "PickCube-v1", "--epochs", "1",
                 "--data", str(run / "data"), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "generating" not in text
    s = json.loads((out / "summary.json").read_text())
    assert s["final_eval"]["unseen"] is False and s["checkpoint_tasks"] == ["PickCube-v1"]


@pytest.mark.parametrize("task", RESERVED_EVAL_TASKS)
def test_reserved_tasks_are_refused(task, tmp_path, capsys):
    assert main(["--tasks", "PickCube-v1", task, "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert task in err and "reserved" in err
    assert task not in LITE_TRAIN_TASKS


def test_missing_data_says_how_to_make_it(tmp_path):
    with pytest.raises(SystemExit, match="--generate"):
        main(["--tasks", "PickCube-v1", "--data", str(tmp_path), "--out", str(tmp_path / "o")])


def test_memo_encoder_encodes_each_frame_once():
    import numpy as np

    class Counting:
        batch_size = 4
        calls = 0

        def encode(self, frames, batch_size=None):
            Counting.calls += len(frames)
            return np.stack([np.full(1280, float(f[0, 0, 0]), np.float32) for f in frames])

    enc = lite_lto.MemoImageEncoder(Counting())
    frames = np.zeros((3, 4, 4, 3), np.uint8)
    frames[:, 0, 0, 0] = [1, 2, 3]
    enc.prime(frames[:1], np.full((1, 1280), 7.0, np.float32))   # primed: not re-encoded
    out = enc.encode(list(frames) + [frames[1].copy()])
    assert out[:, 0].tolist() == [7.0, 2.0, 3.0, 2.0]
    assert Counting.calls == 2 and enc.hits == 2 and enc.encoded == 2


def test_policy_rollouts_join_the_training_data_labelled_by_the_simulator(run):
    """--train-rollouts' path: real tiny_vla rollouts (short, in this process) become bag
    Episodes at the bags' frame size, success only where the simulator said so, and the
    labeller counts them as failures or demonstrations of their task."""
    import dataclasses

    import numpy as np
    from lrm_ros.data.labels import split_by_task
    from lrm_ros.learn.lite_pipeline import prepare

    rolls = lite_lto.policy_rollouts("PushCube-v1", 2, workers=0, seed=lite_lto.TRAIN_ROLLOUT_SEED,
                                     max_ticks=12)
    assert [r.seed for r in rolls] == [30_000, 30_001] and not any(r.success for r in rolls)
    won = dataclasses.replace(rolls[1], success=True)      # the demonstration branch
    eps = lite_lto.rollouts_as_episodes([rolls[0], won], size=(64, 64))
    assert [e.frames.shape[1:] for e in eps] == [(64, 64, 3)] * 2
    assert eps[0].success is False and not eps[0].successes.any()
    assert eps[1].success is True and eps[1].successes.tolist() == [False] * (len(won.frames) - 1) + [True]
    assert eps[0].task == "PushCube-v1" and eps[0].extra["source"] == "policy_rollout"

    base = prepare(TASKS, str(run / "data"), show_progress=False)
    more = prepare(TASKS, str(run / "data"), show_progress=False, rollouts=[rolls[0], won])
    push = more.examples.tasks.index("PushCube-v1")
    n_base = (base.examples.completion_task == base.examples.tasks.index("PushCube-v1")).sum()
    n_more = (more.examples.completion_task == push).sum()
    assert n_more > n_base and more.data_hash != base.data_hash
    assert (more.examples.progress_task == push).sum() > (
        base.examples.progress_task == base.examples.tasks.index("PushCube-v1")).sum()   # the won one
    # a leave-task-out fold without PushCube keeps none of them
    train, _ = split_by_task(more.examples, ["PushCube-v1"])
    assert "PushCube-v1" not in train.tasks or not (train.completion_task == train.tasks.index("PushCube-v1")).any()
    assert np.isfinite(more.examples.features).all()
