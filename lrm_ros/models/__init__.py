"""Model files shipped with lrm_ros (data, not code).

`lite_reward.pt`: the `lite` reward backend's trained heads (lrm_ros.core.rewards.lite,
DEFAULT_CHECKPOINT), produced by `lrm-ros train-lite` /
`python -m lrm_ros.core.learn.train_lite`.
"""
