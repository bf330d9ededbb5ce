"""Model files shipped with lrm_ros (data, not code).

`lite_reward.pt`: the `lite` reward backend's trained heads (lrm_ros.rewards.lite,
DEFAULT_CHECKPOINT), produced by `lrm-ros train-lite` /
`python -m lrm_ros.learn.train_lite`.
"""
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent   # where the shipped checkpoints lie
