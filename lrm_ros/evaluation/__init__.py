"""Is the reward model right? (ROS-free) Offline scoring of recorded episodes, the metrics,
and the audit of what a recorded run's reward model said.

  metrics   VOC, ROC-AUC, pairwise / contrastive accuracy, Pearson: pure numpy functions
  evaluate  `lrm-ros eval`: a backend on demo and failure bags, through the interval-hold
  audit     `lrm-ros audit`: recorded vs re-scored rewards vs success labels of a bag
"""
