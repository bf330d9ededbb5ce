"""scripted_policy: answers every control tick with a random (or zero) command, so the
simulated graph runs end to end before a learned policy exists."""
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray

from lrm_ros.msg import ControlTick
from lrm_ros.nodes.runtime import run_node
from lrm_ros.policy.scripted import ScriptedPolicy, ScriptedPolicyConfig
from lrm_ros.ros.params import declare_config
from lrm_ros.ros.qos import RELIABLE


class ScriptedPolicyNode(Node):
    def __init__(self, **kwargs):
        super().__init__("policy", **kwargs)
        self.config = declare_config(self, ScriptedPolicyConfig)
        self.policy = ScriptedPolicy(self.config)
        self.pub = self.create_publisher(Float64MultiArray, "policy/command", RELIABLE)
        self.create_subscription(ControlTick, "control/tick", self._on_tick, RELIABLE)

    def _on_tick(self, msg: ControlTick) -> None:
        if msg.episode_end:
            return
        self.pub.publish(Float64MultiArray(data=self.policy.act().tolist()))


def main(args=None) -> int:
    return run_node(ScriptedPolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
