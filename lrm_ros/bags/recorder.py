"""Record serialized ROS 2 messages into a rosbag2 bag (mcap) without `ros2 bag` (no rclpy).

:class:`BagRecorder` takes the CDR bytes exactly as a subscription with ``raw=True`` hands
them over and writes them untouched; the connections carry the message definitions and
RIHS01 hashes from :func:`lrm_ros.bags.types.make_typestore` (the standard ROS 2 types plus
lrm_ros's own), so the bag replays with `ros2 bag play` and reads back with rosbags.

:class:`RecorderConfig` holds the parameters of the `bag_recorder` node (lrm_ros/nodes), which
subscribes the graph's topics as they appear and feeds this class.

A recorder that is killed (SIGKILL) leaves the mcap file without metadata.yaml; a clean
:meth:`BagRecorder.close` writes it.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from .types import make_typestore

__all__ = ["BagRecorder", "RecorderConfig", "DEFAULT_TOPICS", "DEFAULT_EXTRA_TOPICS",
           "STORAGES", "parse_qos"]

# Relative topic names recorded under every environment namespace by default.
DEFAULT_TOPICS: Tuple[str, ...] = (
    "task/instruction",
    "camera/image_raw",
    "camera/image_raw/compressed",
    "camera/camera_info",
    "camera/frame",
    "joint_states",
    "control/tick",
    "sim/oracle",
    "policy/command",
    "policy/step",
    "reward/held",
    "reward/result",
)
# Absolute topic names recorded by default (once, not per environment).
DEFAULT_EXTRA_TOPICS: Tuple[str, ...] = ("/learner/policy_update", "/learner/stats")

STORAGES = ("mcap", "sqlite3")

_QOS_WORDS = {
    "reliable": ("reliability", "RELIABLE"),
    "best_effort": ("reliability", "BEST_EFFORT"),
    "volatile": ("durability", "VOLATILE"),
    "transient_local": ("durability", "TRANSIENT_LOCAL"),
}
_NAME_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_qos(text: str, depth: int = 100):
    """'reliable,transient_local' -> a rosbags ``Qos`` (the publisher profile offered in the
    bag, which `ros2 bag play` reuses). '' -> None (no profile recorded). Words, separated by
    ',' or whitespace: reliable | best_effort and volatile | transient_local."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)

    words = [w for w in re.split(r"[,\s]+", (text or "").strip().lower()) if w]
    if not words:
        return None
    chosen = {"reliability": "RELIABLE", "durability": "VOLATILE"}
    for word in words:
        if word not in _QOS_WORDS:
            raise ValueError(f"unknown QoS word {word!r} in {text!r}; use "
                             f"{' | '.join(_QOS_WORDS)} (e.g. 'reliable,transient_local')")
        key, value = _QOS_WORDS[word]
        chosen[key] = value
    zero = QosTime(sec=0, nsec=0)
    return Qos(history=QosHistory.KEEP_LAST, depth=int(depth),
               reliability=QosReliability[chosen["reliability"]],
               durability=QosDurability[chosen["durability"]],
               deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=zero, avoid_ros_namespace_conventions=False)


class BagRecorder:
    """Writes raw CDR messages of registered topics into a new bag directory ``path``.

    Thread-safe: ``add_topic``, ``write`` and ``close`` may be called from any thread.
    ``counts`` holds messages written per topic, ``skipped`` the topics that cannot be
    recorded and why. ``metadata`` goes into the bag's custom data as ``lrm_ros.<key>``
    (strings as they are, anything else as JSON).
    """

    def __init__(self, path: Path | str, storage: str = "mcap",
                 metadata: Optional[Dict[str, Any]] = None):
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"bag {self.path} already exists; remove it or choose another "
                                  "path (a bag is always written into a new directory)")
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.typestore = make_typestore()
        self.counts: Dict[str, int] = {}
        self.skipped: Dict[str, str] = {}
        self.msgtypes: Dict[str, str] = {}
        self._conns: Dict[str, Any] = {}
        self._lock = threading.Lock()
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        for key, value in (metadata or {}).items():
            self._writer.set_custom_data(f"lrm_ros.{key}",
                                         value if isinstance(value, str) else json.dumps(value))
        self._writer.open()

    # ------------------------------------------------------------------ topics
    @property
    def closed(self) -> bool:
        return self._writer is None

    @property
    def topics(self) -> Dict[str, str]:
        """Registered topics -> message type."""
        return dict(self.msgtypes)

    def add_topic(self, topic: str, msgtype: str, qos: str = "") -> bool:
        """Register ``topic`` of ``msgtype`` (e.g. 'sensor_msgs/msg/Image').

        Returns True when the topic is (or already was) registered with this type; False,
        with the reason in ``skipped[topic]``, when it cannot be recorded (unknown type).
        ``qos``: the publishers' profile to store with the topic, see :func:`parse_qos`.
        """
        with self._lock:
            self._check_open()
            if topic in self._conns:
                if self.msgtypes[topic] != msgtype:
                    raise ValueError(f"topic {topic} is already registered as "
                                     f"{self.msgtypes[topic]}, not {msgtype}; a bag topic has "
                                     "one type")
                return True
            if msgtype not in self.typestore.fielddefs:
                self.skipped[topic] = (
                    f"message type {msgtype} is unknown to the bag typestore (ROS 2 Kilted "
                    "standard types + lrm_ros/msg); it cannot be recorded without its "
                    "definition (register the .msg with lrm_ros.bags.types)")
                return False
            profile = parse_qos(qos)
            try:
                conn = self._writer.add_connection(
                    topic, msgtype, typestore=self.typestore,
                    offered_qos_profiles=[profile] if profile is not None else [])
            except Exception as exc:   # a definition rosbags cannot render
                self.skipped[topic] = (f"message type {msgtype}: cannot generate its "
                                       f"definition for the bag: {exc}")
                return False
            self._conns[topic] = conn
            self.msgtypes[topic] = msgtype
            self.counts[topic] = 0
            self.skipped.pop(topic, None)
            return True

    # ------------------------------------------------------------------ messages
    def write(self, topic: str, serialized_cdr: bytes, log_time_ns: int) -> None:
        """Write one message: CDR bytes as received with ``raw=True``, logged at ``log_time_ns``."""
        with self._lock:
            self._check_open()
            conn = self._conns.get(topic)
            if conn is None:
                why = (f" (it was skipped: {self.skipped[topic]})" if topic in self.skipped
                       else "; call add_topic(topic, msgtype) first")
                raise ValueError(f"topic {topic} is not registered in bag {self.path}{why}")
            self._writer.write(conn, int(log_time_ns), bytes(serialized_cdr))
            self.counts[topic] += 1

    @property
    def messages(self) -> int:
        return sum(self.counts.values())

    # ------------------------------------------------------------------ life cycle
    def _check_open(self) -> None:
        if self._writer is None:
            raise RuntimeError(f"bag {self.path} is closed; open a new BagRecorder to record more")

    def set_metadata(self, key: str, value: Any) -> None:
        """Add ``lrm_ros.<key>`` to the bag's custom data (written at close)."""
        with self._lock:
            self._check_open()
            self._writer.set_custom_data(f"lrm_ros.{key}",
                                         value if isinstance(value, str) else json.dumps(value))

    def close(self) -> None:
        """Finish the bag (writes metadata.yaml). Safe to call more than once."""
        with self._lock:
            if self._writer is None:
                return
            writer, self._writer = self._writer, None
            if self.skipped:
                writer.set_custom_data("lrm_ros.skipped_topics", json.dumps(self.skipped))
            writer.close()

    def __enter__(self) -> "BagRecorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"BagRecorder({str(self.path)!r}, {state}, {len(self._conns)} topics, {self.messages} messages)"


def _h(text: str) -> dict:
    return {"help": text}


def _check_name(kind: str, name: str, absolute: bool) -> None:
    if absolute and not name.startswith("/"):
        raise ValueError(f"{kind}: {name!r} must be an absolute topic name (start with '/'); "
                         "put names relative to each environment in 'topics'")
    if not absolute and name.startswith("/"):
        raise ValueError(f"{kind}: {name!r} must be relative (recorded under every env "
                         "namespace); put absolute names in 'extra_topics'")
    tokens = name.strip("/").split("/")
    if not name.strip("/") or name.endswith("/") or not all(_NAME_TOKEN.match(t) for t in tokens):
        raise ValueError(f"{kind}: {name!r} is not a valid ROS 2 topic name (tokens of letters, "
                         "digits and '_', not starting with a digit, separated by '/')")


@dataclass(frozen=True)
class RecorderConfig:
    """Parameters of the bag_recorder node."""
    path: str = field(default="", metadata=_h(
        "bag directory to create (must not exist); '' = out/bags/<YYYYmmdd-HHMMSS> under the "
        "working directory"))
    envs: Tuple[str, ...] = field(default=("",), metadata=_h(
        "environment namespaces to record, e.g. ['env0', 'env1'] (topics /env0/control/tick, "
        "...); [''] = the node's own namespace"))
    topics: Tuple[str, ...] = field(default=(), metadata=_h(
        "topic names relative to each env namespace; [] = the default list (task/instruction, "
        "camera/*, joint_states, control/tick, sim/oracle, policy/*, reward/*, plus "
        "/learner/policy_update and /learner/stats)"))
    extra_topics: Tuple[str, ...] = field(default=(), metadata=_h(
        "absolute topic names recorded as they are, in addition to the above"))
    next_free_path: bool = field(default=False, metadata=_h(
        "when `path` exists already, record into <path>_2, <path>_3, ... instead of refusing "
        "to start (the graph sets it with respawn:=true: a restarted recorder goes on in a new "
        "bag next to the one it was killed writing)"))
    discovery_period_s: float = field(default=1.0, metadata=_h(
        "how often to look for wanted topics that have appeared, after the first minute (every "
        "0.1 s until then); each is subscribed once"))
    diagnostics_period_s: float = field(default=1.0, metadata=_h("period of /diagnostics"))

    def __post_init__(self):
        if not self.envs or len(set(self.envs)) != len(self.envs):
            raise ValueError(f"envs must list distinct namespaces, got {list(self.envs)}")
        for env in self.envs:
            if env.strip("/"):
                _check_name("envs", env.strip("/"), absolute=False)
        for name in self.topics:
            _check_name("topics", name, absolute=False)
        for name in self.extra_topics:
            _check_name("extra_topics", name, absolute=True)
        if not self.discovery_period_s > 0:
            raise ValueError(f"discovery_period_s must be > 0, got {self.discovery_period_s}")
        if not self.diagnostics_period_s > 0:
            raise ValueError(f"diagnostics_period_s must be > 0, got {self.diagnostics_period_s}")

    def wanted_topics(self) -> Tuple[str, ...]:
        """Every topic to record: absolute names (envs given) or names relative to the node's
        namespace (env '' with relative topics), in a stable order without duplicates."""
        per_env = self.topics or DEFAULT_TOPICS
        out = []
        for env in self.envs:
            ns = env.strip("/")
            out += [f"/{ns}/{t}" if ns else t for t in per_env]
        out += list(DEFAULT_EXTRA_TOPICS if not self.topics else ()) + list(self.extra_topics)
        return tuple(dict.fromkeys(out))

    def bag_path(self, now: Optional[datetime.datetime] = None) -> Path:
        """Where the bag goes: ``path``, or out/bags/<YYYYmmdd-HHMMSS> when it is ''."""
        if self.path:
            path = Path(self.path).expanduser()
            n = 2
            while self.next_free_path and path.exists():
                path = Path(f"{Path(self.path).expanduser()}_{n}")
                n += 1
            return path
        now = now or datetime.datetime.now()
        return Path("out") / "bags" / now.strftime("%Y%m%d-%H%M%S")
