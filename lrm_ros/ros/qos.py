"""QoS profiles of the lrm_ros graph (see docs/ARCHITECTURE.md, "QoS")."""
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)

# Camera images and frames: latest-frame consumers. A reliable subscriber receives nothing
# from these publishers: subscribe with SENSOR as well.
SENSOR = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                    reliability=ReliabilityPolicy.BEST_EFFORT,
                    durability=DurabilityPolicy.VOLATILE)
# Camera frames for consumers that need the frame of particular ticks (reward model, policy):
# best effort like SENSOR, but a short queue, so a frame is not overwritten by the next one
# while the node's executor is busy (with depth 1 the reward node, starved by inference on a
# loaded CPU, lost query frames and fell back to older ones).
SENSOR_QUEUE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                          reliability=ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.VOLATILE)
# Ticks, commands, rewards, policy steps: every message matters.
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
# "Current state" topics (task instruction, policy version): late joiners get the last value.
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
