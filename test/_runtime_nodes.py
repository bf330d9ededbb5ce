"""Small node processes for test_node_runtime.py, run through lrm_ros.nodes.runtime.run_node.

  flood_pub   publishes JointState (20000 positions) every 2 ms on /flood/joints
  flood_sub   on every message converts it and publishes a command, as vla_policy's
              _on_joints -> _act does; prints RECEIVING once the flood arrives
  raiser      a timer callback raises ValueError after 0.5 s (an unexpected failure)
  slow_start  its constructor takes 120 s (a model loading); prints LOADING first
"""
import sys
import time

from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from lrm_ros.nodes.runtime import run_node
from lrm_ros.ros.qos import RELIABLE


class FloodPub(Node):
    def __init__(self):
        super().__init__("flood_pub")
        self.pub = self.create_publisher(JointState, "/flood/joints", RELIABLE)
        self.msg = JointState(name=[f"j{i}" for i in range(50)], position=[0.5] * 20000)
        self.create_timer(0.002, lambda: self.pub.publish(self.msg))


class FloodSub(Node):
    def __init__(self):
        super().__init__("flood_sub")
        self.seen = 0
        self.pub = self.create_publisher(Float64MultiArray, "/flood/command", RELIABLE)
        self.create_subscription(JointState, "/flood/joints", self._on_joints, RELIABLE)

    def _on_joints(self, msg: JointState) -> None:
        self.seen += 1
        if self.seen == 20:
            print("RECEIVING", flush=True)
        self.pub.publish(Float64MultiArray(data=[float(v) for v in msg.position[:7]]))


class Raiser(Node):
    def __init__(self):
        super().__init__("raiser")
        self.timer = self.create_timer(0.5, self._boom)

    def _boom(self) -> None:
        print("RAISING", flush=True)
        raise ValueError("unexpected failure injected by the test")


class SlowStart(Node):
    def __init__(self):
        super().__init__("slow_start")
        print("LOADING", flush=True)
        end = time.monotonic() + 120
        while time.monotonic() < end:      # Python-level work, as torch loading a checkpoint
            sum(range(10000))


if __name__ == "__main__":
    kind = sys.argv[1]
    factory = {"flood_pub": FloodPub, "flood_sub": FloodSub, "raiser": Raiser,
               "slow_start": SlowStart}[kind]
    raise SystemExit(run_node(factory, sys.argv[:1]))
