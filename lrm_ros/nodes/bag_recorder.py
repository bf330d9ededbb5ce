"""bag_recorder: records the graph's topics into a rosbag2 (mcap) bag, without `ros2 bag`.

Topics come up after the recorder: it looks at the ROS graph every 0.1 s for the first
minute (while the graph starts), then every `discovery_period_s` (wall clock), and subscribes
(once) to each wanted topic that has a publisher, with `raw=True` so the CDR bytes go into the
bag untouched (lrm_ros.bags.recorder.BagRecorder). The QoS follows the
publishers: best effort if any publisher is, transient local (latched topics such as
task/instruction) if all are. A topic whose type the bag typestore does not know is skipped
and reported in the log and on /diagnostics. Shutdown (Ctrl-C) closes the bag.
"""
import importlib
import time

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from lrm_ros.bags.recorder import BagRecorder, RecorderConfig
from lrm_ros.nodes.runtime import run_node
from lrm_ros.ros.diagnostics import DiagnosticsPublisher, wall_timer
from lrm_ros.ros.params import declare_config

DEPTH = 100
FAST_DISCOVERY_S = 60.0          # after start-up, look for topics every ...
FAST_DISCOVERY_PERIOD_S = 0.1    # ... this many seconds


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the generated Python class (no rosidl_runtime_py needed)."""
    parts = msgtype.split("/")
    if len(parts) != 3:
        raise ImportError(f"type name {msgtype!r} is not of the form package/msg/Name")
    package, kind, name = parts
    module = importlib.import_module(f"{package}.{kind}")
    try:
        return getattr(module, name)
    except AttributeError:
        raise ImportError(f"module {package}.{kind} has no message {name}") from None


def subscription_qos(publishers) -> tuple:
    """(QoSProfile, description) compatible with every publisher in `publishers`."""
    profiles = [p.qos_profile for p in publishers]
    best_effort = any(q.reliability == ReliabilityPolicy.BEST_EFFORT for q in profiles)
    latched = bool(profiles) and all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL
                                     for q in profiles)
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=DEPTH,
                     reliability=ReliabilityPolicy.BEST_EFFORT if best_effort
                     else ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL if latched
                     else DurabilityPolicy.VOLATILE)
    text = ("best_effort" if best_effort else "reliable") + \
        (",transient_local" if latched else ",volatile")
    return qos, text


class BagRecorderNode(Node):
    def __init__(self, **kwargs):
        super().__init__("bag_recorder", **kwargs)
        self.config = cfg = declare_config(self, RecorderConfig)
        self.wanted = [self.resolve_topic_name(t) for t in cfg.wanted_topics()]
        self.bag_path = cfg.bag_path().resolve()
        try:
            self.recorder = BagRecorder(self.bag_path, metadata={
                "recorder": "bag_recorder", "envs": list(cfg.envs),
                "node": self.get_fully_qualified_name()})
        except FileExistsError as exc:
            raise ValueError(f"{exc} (parameter path)") from None
        except OSError as exc:
            raise ValueError(f"cannot create bag {self.bag_path}: {exc}; set the parameter path "
                             "to a writable location") from None
        self.subscribed = {}           # topic -> (msgtype, qos text)
        self._subs = []
        self.write_errors = 0
        self._closed = False
        # Topics appear while the graph starts: look often then, so the first messages are
        # not lost to a slow poll; afterwards every discovery_period_s.
        self._fast_until = time.monotonic() + FAST_DISCOVERY_S
        self._last_discovery = 0.0
        wall_timer(self, min(FAST_DISCOVERY_PERIOD_S, cfg.discovery_period_s), self._discover)
        self.diagnostics = DiagnosticsPublisher(self, self._counters, cfg.diagnostics_period_s,
                                                level=self._level)
        self.get_logger().info(f"recording {len(self.wanted)} topic(s) of envs "
                               f"{[e or '.' for e in cfg.envs]} into {self.bag_path}")
        self._discover()

    def _discover(self) -> None:
        if self._closed:
            return
        now = time.monotonic()
        if now > self._fast_until and now - self._last_discovery < self.config.discovery_period_s - 0.05:
            return
        self._last_discovery = now
        graph = dict(self.get_topic_names_and_types())
        for topic in self.wanted:
            if topic in self.subscribed or topic in self.recorder.skipped or topic not in graph:
                continue
            types = graph[topic]
            publishers = [p for p in self.get_publishers_info_by_topic(topic)]
            if not publishers:
                continue        # only subscribers so far: the QoS is the publishers' to decide
            msgtype = types[0]
            if len(types) > 1:
                self.get_logger().warn(f"{topic} is published with several types {types}; "
                                       f"recording {msgtype} only")
            self._subscribe(topic, msgtype, publishers)

    def _subscribe(self, topic: str, msgtype: str, publishers) -> None:
        try:
            cls = message_class(msgtype)
        except ImportError as exc:
            self.recorder.skipped[topic] = (f"cannot import the Python class of {msgtype}: {exc}; "
                                            "install its message package to record it")
            self.get_logger().warn(f"not recording {topic}: {self.recorder.skipped[topic]}")
            return
        qos, qos_text = subscription_qos(publishers)
        if not self.recorder.add_topic(topic, msgtype, qos_text):
            self.get_logger().warn(f"not recording {topic}: {self.recorder.skipped[topic]}")
            return
        self._subs.append(self.create_subscription(
            cls, topic, lambda data, topic=topic: self._on_message(topic, data), qos, raw=True))
        self.subscribed[topic] = (msgtype, qos_text)
        self.get_logger().info(f"recording {topic} ({msgtype}, {qos_text})")

    def _on_message(self, topic: str, data: bytes) -> None:
        try:
            self.recorder.write(topic, data, self.get_clock().now().nanoseconds)
        except (RuntimeError, ValueError) as exc:     # closed while shutting down
            self.write_errors += 1
            self.get_logger().error(f"{topic}: message not recorded: {exc}",
                                    throttle_duration_sec=2.0)

    def _counters(self) -> dict:
        out = {"bag": str(self.bag_path), "messages": self.recorder.messages,
               "topics_recorded": len(self.subscribed),
               "topics_waiting": len([t for t in self.wanted if t not in self.subscribed
                                      and t not in self.recorder.skipped]),
               "topics_skipped": len(self.recorder.skipped), "write_errors": self.write_errors}
        out.update({f"count:{t}": n for t, n in sorted(self.recorder.counts.items())})
        out.update({f"skipped:{t}": why for t, why in sorted(self.recorder.skipped.items())})
        return out

    def _level(self) -> tuple:
        if self.recorder.skipped:
            return (DiagnosticStatus.WARN,
                    f"{len(self.recorder.skipped)} topic(s) not recorded: "
                    + ", ".join(sorted(self.recorder.skipped)))
        return DiagnosticStatus.OK, f"recording into {self.bag_path}"

    def summary(self) -> str:
        lines = [f"bag {self.bag_path}: {self.recorder.messages} message(s) on "
                 f"{len(self.recorder.counts)} topic(s)"]
        lines += [f"  {t}: {n}" for t, n in sorted(self.recorder.counts.items())]
        lines += [f"  skipped {t}: {why}" for t, why in sorted(self.recorder.skipped.items())]
        missing = [t for t in self.wanted if t not in self.subscribed and t not in self.recorder.skipped]
        if missing:
            lines.append(f"  never published: {', '.join(missing)}")
        return "\n".join(lines)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.recorder.close()
        text = self.summary()
        if self.context.ok():
            self.get_logger().info(text)
        else:                      # Ctrl-C shut the context down: /rosout is gone, print it
            print(f"[INFO] [{self.get_name()}]: {text}", flush=True)


def main(args=None) -> int:
    return run_node(BagRecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
