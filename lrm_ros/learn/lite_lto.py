"""Leave-task-out evaluation of the `lite` reward model: does it score tasks it never saw?

For each task T of the allowed training tasks (lrm_ros.sim.tasks.LITE_TRAIN_TASKS; the
reserved evaluation tasks are refused): train the heads on every other task's examples
(split_by_task: T's frames and T's instruction are kept out, cross-task negatives included)
and score T's demo and failure bags through the real interval-hold, as `lrm-ros eval` does
(lrm_ros.evaluation.evaluate.evaluate, signal "tri", so one pass gives all three heads).

Per task (lrm_ros.evaluation.metrics):
  voc            mean per-episode VOC of the progress head on T's successful episodes
  roc_auc        completion ROC-AUC, episode level (final query's completion probability,
                 successes vs failures)
  pairwise       mean per-episode order accuracy of the progress head on successes
  direction_acc  contrastive direction accuracy (forward successes +1, time-reversed -1)
  pearson        mean per-episode Pearson of the progress head with the oracle's normalised
                 dense reward (tasks without one: null)
  tri_voc        VOC of the tri value (what the RL rows would use)
plus the means over tasks (`mean_unseen_*`).

Image features are computed once for all folds: the frame table's features come from
train_lite.compute_features (disk cache), and the evaluation's image encoder is a
`MemoImageEncoder` primed with them, so a frame seen in training data is not encoded again
in any fold's evaluation.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from lrm_ros.evaluation import metrics as M

METRICS = ("voc", "roc_auc", "pairwise", "direction_acc", "pearson", "tri_voc")


class MemoImageEncoder:
    """An image encoder that remembers every frame's features by content
    (lrm_ros.rewards.lite.frame_content_key); misses go to the wrapped encoder."""

    def __init__(self, base=None):
        self._base = base
        self._memo: Dict[bytes, np.ndarray] = {}
        self.hits = 0
        self.encoded = 0

    @property
    def base(self):
        if self._base is None:
            from lrm_ros.vision.features import image_encoder
            self._base = image_encoder()
        return self._base

    @property
    def batch_size(self) -> int:
        return int(getattr(self.base, "batch_size", 4))

    def prime(self, frames: np.ndarray, feats: np.ndarray) -> None:
        from lrm_ros.rewards.lite import frame_content_key
        for f, v in zip(frames, feats):
            self._memo[frame_content_key(f)] = np.asarray(v, np.float32)

    def encode(self, frames, batch_size: Optional[int] = None) -> np.ndarray:
        from lrm_ros.rewards.lite import frame_content_key
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            frames = frames[None]
        keys = [frame_content_key(f) for f in frames]
        todo = list({k: i for i, k in reversed(list(enumerate(keys))) if k not in self._memo}.values())
        if todo:
            feats = self.base.encode([frames[i] for i in todo], batch_size=batch_size)
            for i, v in zip(todo, feats):
                self._memo[keys[i]] = v
        self.hits += len(keys) - len(todo)
        self.encoded += len(todo)
        if not keys:
            from lrm_ros.vision.features import IMAGE_FEATURE_DIM
            return np.zeros((0, IMAGE_FEATURE_DIM), np.float32)
        return np.stack([self._memo[k] for k in keys])

    __call__ = encode


def _mean(values) -> float:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def task_metrics(report: dict, task: str) -> Dict[str, float]:
    """The per-task metrics of METRICS from an evaluate() report (see the module doc)."""
    eps = [e for e in report["episodes"] if e["task"] == task and not e["reversed"]]
    succ = [e for e in eps if e["success"]]
    pt = report["per_task"].get(task, {})
    dense = [e for e in eps if any(math.isfinite(o) for o in e["oracle"])]
    return {
        "voc": _mean(M.voc(e["progress"], e["query_ticks"]) for e in succ),
        "roc_auc": float(pt.get("completion_auc", math.nan)),
        "pairwise": _mean(M.order_accuracy(e["progress"], e["query_ticks"]) for e in succ),
        "direction_acc": float(pt.get("contrastive_accuracy", math.nan)),
        "pearson": _mean(M.pearson(e["progress"], e["oracle"]) for e in dense),
        "tri_voc": float(pt.get("voc", math.nan)),
        "successes": len(succ), "failures": len(eps) - len(succ),
    }


def mean_metrics(per_task: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    return {k: _mean(m.get(k) for m in per_task.values()) for k in METRICS}


def check_tasks(tasks: Sequence[str]) -> List[str]:
    """`tasks` deduplicated; ValueError naming any reserved evaluation task."""
    from lrm_ros.sim.tasks import RESERVED_EVAL_TASKS
    bad = [t for t in tasks if t in RESERVED_EVAL_TASKS]
    if bad:
        raise ValueError(f"{bad} are reserved for the independent evaluation of reward models "
                         f"({', '.join(RESERVED_EVAL_TASKS)}): never train, tune or select on "
                         "them. Leave them out of the training / leave-task-out tasks.")
    return list(dict.fromkeys(tasks))


def leave_task_out(examples, bags_by_task: Dict[str, List[str]], tasks: Sequence[str], out_dir,
                   train_config, interval: int, image_enc: MemoImageEncoder, text_enc=None,
                   progress: bool = True, rollouts: Optional[Dict[str, list]] = None) -> Dict[str, dict]:
    """Train one model per held-out task of `tasks` on the other tasks' examples and evaluate
    it on the held-out task's bags. `examples` must carry `features` (one table for all
    folds). `rollouts` {task: policy episodes} adds `policy_roc_auc` for those tasks.
    Returns {task: task_metrics + checkpoint + timing}."""
    from lrm_ros.data.labels import split_by_task
    from lrm_ros.evaluation.evaluate import evaluate
    from lrm_ros.learn.train_lite import _tasks_used, train
    from lrm_ros.rewards import make_backend

    out = Path(out_dir)
    per_task: Dict[str, dict] = {}
    for n, task in enumerate(check_tasks(tasks), 1):
        t0 = time.perf_counter()
        train_ex, _ = split_by_task(examples, [task])
        print(f"[lite lto] {n}/{len(tasks)}: {task} held out; training on "
              f"{_tasks_used(train_ex)} ({train_ex.counts()})", flush=True)
        ckpt = out / "folds" / f"without_{task}.pt"
        train(train_ex, train_config, out=str(ckpt), text_enc=text_enc)
        backend = make_backend("lite", model_path=str(ckpt), signal="tri",
                               image_encoder=image_enc, text_encoder=text_enc)
        report = evaluate(bags_by_task[task], backend, out / "folds" / f"eval_{task}",
                          interval=interval, progress=progress,
                          backend_label=f"lite (tri) trained without {task}")
        m = task_metrics(report, task)
        if rollouts and task in rollouts:
            m.update(policy_roc_auc(backend, rollouts[task], interval))
        m.update(checkpoint=str(ckpt), seconds=round(time.perf_counter() - t0, 1))
        per_task[task] = m
        print(f"[lite lto] {task}: " + ", ".join(f"{k} {m[k]:.3f}" for k in METRICS), flush=True)
    return per_task


EVAL_ROLLOUT_SEED = 20_000     # policy rollouts that are scored (policy_roc_auc)
TRAIN_ROLLOUT_SEED = 30_000    # policy rollouts that become training data (--train-rollouts)


def policy_rollouts(task: str, n: int, workers: int = 2, seed: int = EVAL_ROLLOUT_SEED,
                    max_ticks: Optional[int] = None):
    """`n` stochastic episodes of the shipped tiny_vla policy on `task` (seeds seed..seed+n-1,
    never the RL benchmark's training or evaluation seeds), labelled by the simulator's
    success: the rollouts a reward model must judge in RL. `max_ticks` defaults to the
    task's recommended time limit."""
    from lrm_ros.learn.rollout_pool import RolloutPool
    from lrm_ros.policy.adapter import DEFAULT_CHECKPOINT
    from lrm_ros.policy.tiny_vla import load_policy
    from lrm_ros.sim.maniskill_env import SimConfig
    from lrm_ros.sim.tasks import recommended_max_ticks
    from tqdm.auto import tqdm
    model, _ = load_policy(str(DEFAULT_CHECKPOINT))
    cfg = SimConfig(env_id=task, max_episode_ticks=max_ticks or recommended_max_ticks(task))
    with RolloutPool(cfg, str(DEFAULT_CHECKPOINT), workers=workers, noise_seed=seed) as pool:
        pool.set_policy(model)
        with tqdm(total=n, desc=f"tiny_vla rollouts {task} (seeds {seed}+)", unit="ep") as bar:
            return pool.run(list(range(seed, seed + n)), deterministic=False,
                            progress=lambda ep: bar.update(1))


def policy_rollouts_for(tasks: Sequence[str], n: int, workers: int = 2,
                        seed: int = EVAL_ROLLOUT_SEED) -> Dict[str, list]:
    """{task: policy_rollouts(task, n, seed=seed)} for each of `tasks` the shipped tiny_vla
    was trained on (its checkpoint's `tasks`); {} when n is 0."""
    if not n:
        return {}
    from lrm_ros.policy.adapter import DEFAULT_CHECKPOINT
    from lrm_ros.policy.tiny_vla import load_policy
    policy_tasks = load_policy(str(DEFAULT_CHECKPOINT))[1].get("tasks", [])
    return {t: policy_rollouts(t, n, workers=workers, seed=seed) for t in tasks if t in policy_tasks}


def rollouts_as_episodes(rollouts: Sequence, size: Optional[tuple] = None) -> List:
    """Policy rollouts (lrm_ros.learn.rollout.RolloutEpisode) as bag Episodes the labeller
    reads: success only at the last tick, and only when the simulator said so. `size`
    (width, height) resizes the frames to the bags' (the policy sees 224 x 224 crops of the
    camera; the demo bags hold the camera's full frames), so one frame table holds both."""
    from lrm_ros.bags.reader import Episode
    from lrm_ros.vision.image import resize_center_crop
    out = []
    for r in rollouts:
        frames = np.asarray(r.frames)
        if size is not None and (frames.shape[2], frames.shape[1]) != tuple(size):
            frames = np.stack([resize_center_crop(f, *size) for f in frames])
        T = int(frames.shape[0])
        succ = np.zeros(T, bool)
        succ[-1] = bool(r.success)
        dense = np.asarray(r.normalized_dense_rewards, np.float64)
        out.append(Episode(
            task=r.task, instruction=r.instruction, episode=int(r.seed), ticks=np.arange(T, dtype=np.int64),
            stamps_ns=np.asarray(r.stamps_ns, np.int64), frames=frames,
            actions=np.asarray(r.action, np.float64), joint_names=[],
            joint_positions=np.zeros((T, 0)), joint_velocities=np.zeros((T, 0)),
            dense_rewards=np.full(T, np.nan), normalized_dense_rewards=dense, successes=succ,
            failures=np.zeros(T, bool), episode_end=True, end_reason=int(r.end_reason),
            extra={"source": "policy_rollout", "seed": int(r.seed)}))
    return out


def policy_roc_auc(backend, episodes, interval: int) -> Dict[str, float]:
    """Completion ROC-AUC (final query's completion, through the interval-hold) of policy
    rollouts labelled by the simulator's success."""
    from lrm_ros.learn.rollout import held_rewards
    held_rewards(backend, episodes, interval)
    scores = [float(ep.completion[-1]) for ep in episodes]
    labels = [bool(ep.success) for ep in episodes]
    return {"policy_roc_auc": float(M.roc_auc(scores, labels)),   # NaN for a single class
            "policy_successes": int(sum(labels)), "policy_episodes": len(labels)}


def table_markdown(per_task: Dict[str, Dict[str, float]], means: Dict[str, float]) -> str:
    fmt = lambda v: "n/a" if v is None or not math.isfinite(v) else f"{v:.2f}"  # noqa: E731
    head = ("| held-out task | successes / failures | " + " | ".join(METRICS)
            + " | tiny_vla rollouts: ROC-AUC (successes / episodes) |")
    rows = [head, "|" + "---|" * (len(METRICS) + 3)]
    for t, m in per_task.items():
        pol = (f"{fmt(m['policy_roc_auc'])} ({m['policy_successes']} / {m['policy_episodes']})"
               if "policy_roc_auc" in m else "")
        rows.append(f"| {t} | {m['successes']} / {m['failures']} | "
                    + " | ".join(fmt(m[k]) for k in METRICS) + f" | {pol} |")
    rows.append("| **mean** | | " + " | ".join(f"**{fmt(means[k])}**" for k in METRICS) + " | |")
    return "\n".join(rows)


def plot_table(per_task: Dict[str, Dict[str, float]], path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = list(per_task)
    keys = ("voc", "roc_auc", "pairwise", "direction_acc", "pearson")
    fig, ax = plt.subplots(figsize=(1.6 * len(tasks) + 2, 3.6))
    w = 0.8 / len(keys)
    for j, k in enumerate(keys):
        vals = [per_task[t][k] if math.isfinite(per_task[t][k]) else 0.0 for t in tasks]
        ax.bar(np.arange(len(tasks)) + (j - len(keys) / 2 + 0.5) * w, vals, w, label=k)
    ax.axhline(0.0, color="k", lw=0.6)
    ax.axhline(0.9, color="grey", ls=":", lw=0.8)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([t.replace("-v1", "") for t in tasks], rotation=15)
    ax.set_ylim(-0.5, 1.05)
    ax.set_title("lite reward model on tasks it never saw (leave-task-out)")
    ax.legend(ncol=len(keys), fontsize=7, loc="lower center")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
