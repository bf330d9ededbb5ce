"""Counters of a node published as standard diagnostic_msgs on /diagnostics."""
from typing import Callable, Dict

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node


def wall_timer(node: Node, period_s: float, callback):
    """A timer on the steady clock: it keeps firing in wall time when the node uses
    simulated time (use_sim_time), which only the stamps should follow."""
    from rclpy.clock import Clock, ClockType
    return node.create_timer(period_s, callback, clock=Clock(clock_type=ClockType.STEADY_TIME))


class DiagnosticsPublisher:
    """Publishes `values()` (a flat dict) every `period_s` as one DiagnosticStatus named
    after the node's fully qualified name. `level()` may return WARN/ERROR with a message."""

    def __init__(self, node: Node, values: Callable[[], Dict[str, object]], period_s: float = 1.0,
                 level: Callable[[], tuple] = lambda: (DiagnosticStatus.OK, "ok")):
        self._node = node
        self._values = values
        self._level = level
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = wall_timer(node, period_s, self.publish)

    def publish(self) -> None:
        level, message = self._level()
        status = DiagnosticStatus(level=level, name=self._node.get_fully_qualified_name(),
                                  message=message, hardware_id="lrm_ros")
        status.values = [KeyValue(key=str(k), value=str(v)) for k, v in self._values().items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(msg)


def parse_status(status: DiagnosticStatus) -> Dict[str, str]:
    """The key/values of one DiagnosticStatus as a dict (for tests and monitors)."""
    return {kv.key: kv.value for kv in status.values}
