"""An in-process observer of a running lrm_ros graph (used by `lrm-ros demo`, tests, bench).

It has its own rclpy Context and executor thread, so several can exist in one process and
none interferes with a node under test. It records what flows per environment namespace and
can act as a test client (send commands, call resets, publish raw images).
"""
import json
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from lrm_ros.common.readiness import waiting_nodes
from lrm_ros.common.stamps import stamp_ns
from lrm_ros.msg import ControlTick, HeldReward, PolicyStep, PolicyUpdate, RewardQueryResult, SimOracle
from lrm_ros.ros.diagnostics import parse_status
from lrm_ros.ros.image_msgs import image_msg_to_rgb
from lrm_ros.ros.qos import LATCHED, RELIABLE, SENSOR


# What the monitor records per message: tuples with names (t_recv: time.monotonic() at arrival)
class TickRecord(NamedTuple):
    episode: int
    tick: int
    start: bool
    end: bool
    reason: int            # ControlTick.END_*
    fallbacks: int
    t_recv: float
    stamp_ns: int


class FrameRecord(NamedTuple):
    stamp_ns: int
    width: int
    height: int
    encoding: str
    t_recv: float


class RawImageRecord(NamedTuple):
    stamp_ns: int
    t_recv: float


class OracleRecord(NamedTuple):
    episode: int
    tick: int
    dense: float
    normalized: float
    success: bool


class HeldRecord(NamedTuple):
    episode: int
    tick: int
    value: float
    query_tick: int
    age: int
    stale: bool
    t_recv: float


class ResultRecord(NamedTuple):
    episode: int
    query_tick: int
    status: int            # RewardQueryResult.STATUS_*
    value: float
    latency_s: float
    batch_size: int


class PolicyStepRecord(NamedTuple):
    episode: int
    tick: int
    policy_version: int
    deterministic: bool
    n_features: int
    t_recv: float = 0.0


class PolicyUpdateRecord(NamedTuple):
    version: int
    checkpoint_path: str
    sha256: str
    algorithm: str
    iteration: int


@dataclass
class EnvRecord:
    ticks: List[TickRecord] = field(default_factory=list)
    frames: List[FrameRecord] = field(default_factory=list)
    raw_images: List[RawImageRecord] = field(default_factory=list)
    oracle: List[OracleRecord] = field(default_factory=list)
    joint_states: int = 0
    camera_infos: int = 0
    instruction: Optional[str] = None
    last_frame: Optional[np.ndarray] = None
    sample_frames: List[tuple] = field(default_factory=list)  # (stamp_ns, rgb)
    held: List[HeldRecord] = field(default_factory=list)
    results: List[ResultRecord] = field(default_factory=list)
    policy_steps: List[PolicyStepRecord] = field(default_factory=list)
    policy_status: List[str] = field(default_factory=list)   # policy/status texts


class GraphMonitor:
    def __init__(self, namespaces: Sequence[str], *, keep_frames_every: int = 0,
                 on_tick: Optional[Callable[[str, ControlTick], None]] = None,
                 node_name: str = "lrm_monitor", domain_id: Optional[int] = None):
        self.namespaces = [ns.strip("/") for ns in namespaces]
        self.records: Dict[str, EnvRecord] = {ns: EnvRecord() for ns in self.namespaces}
        self.diagnostics: Dict[str, Dict[str, str]] = {}
        self.policy_updates: List[PolicyUpdateRecord] = []
        self.learner_stats: List[dict] = []
        self._keep_every = keep_frames_every
        self._on_tick = on_tick
        self._cond = threading.Condition()
        self._closed = False
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)   # None: ROS_DOMAIN_ID, as nodes do
        self.domain_id = self.context.get_domain_id()
        self.node = rclpy.create_node(node_name, context=self.context)
        self._cmd_pubs = {}
        self._raw_pubs = {}
        self._reset_clients = {}
        for ns in self.namespaces:
            p = f"/{ns}/" if ns else "/"
            self.node.create_subscription(ControlTick, p + "control/tick",
                                          lambda m, ns=ns: self._tick(ns, m), RELIABLE)
            self.node.create_subscription(Image, p + "camera/frame",
                                          lambda m, ns=ns: self._frame(ns, m), SENSOR)
            self.node.create_subscription(Image, p + "camera/image_raw",
                                          lambda m, ns=ns: self._raw(ns, m), SENSOR)
            self.node.create_subscription(CameraInfo, p + "camera/camera_info",
                                          lambda m, ns=ns: self._count(ns, "camera_infos"), SENSOR)
            self.node.create_subscription(JointState, p + "joint_states",
                                          lambda m, ns=ns: self._count(ns, "joint_states"), RELIABLE)
            self.node.create_subscription(SimOracle, p + "sim/oracle",
                                          lambda m, ns=ns: self._oracle(ns, m), RELIABLE)
            self.node.create_subscription(String, p + "task/instruction",
                                          lambda m, ns=ns: self._instruction(ns, m), LATCHED)
            self.node.create_subscription(HeldReward, p + "reward/held",
                                          lambda m, ns=ns: self._held(ns, m), RELIABLE)
            self.node.create_subscription(RewardQueryResult, p + "reward/result",
                                          lambda m, ns=ns: self._result(ns, m), RELIABLE)
            self.node.create_subscription(PolicyStep, p + "policy/step",
                                          lambda m, ns=ns: self._policy_step(ns, m), RELIABLE)
            self.node.create_subscription(String, p + "policy/status",
                                          lambda m, ns=ns: self._policy_status(ns, m), LATCHED)
            self._cmd_pubs[ns] = self.node.create_publisher(Float64MultiArray, p + "policy/command", RELIABLE)
            self._raw_pubs[ns] = self.node.create_publisher(Image, p + "camera/image_raw", SENSOR)
            self._reset_clients[ns] = self.node.create_client(Trigger, p + "episode/reset")
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diag, 50)
        self.node.create_subscription(PolicyUpdate, "/learner/policy_update", self._update, LATCHED)
        self.node.create_subscription(String, "/learner/stats", self._stats, LATCHED)
        self._update_pub = None
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.spin_error: Optional[BaseException] = None   # why the executor stopped, if not close()
        self._thread = threading.Thread(target=self._spin, daemon=True, name="monitor")
        self._thread.start()

    # --- callbacks ------------------------------------------------------------------------
    def _spin(self):
        try:
            self.executor.spin()
        except Exception as exc:   # noqa: BLE001 - reported to every waiter below
            if self._closed:
                return             # the executor shut down under it: close() asked for that
            self.spin_error = exc
            print(f"[monitor] its executor died, nothing more will be recorded: "
                  f"{''.join(traceback.format_exception(exc)).rstrip()}", file=sys.stderr, flush=True)
            self._notify()

    def _notify(self):
        with self._cond:
            self._cond.notify_all()

    def _tick(self, ns, m: ControlTick):
        stamp = stamp_ns(m.header)
        self.records[ns].ticks.append(TickRecord(m.episode, m.tick, m.episode_start, m.episode_end,
                                                 m.end_reason, m.fallback_count, time.monotonic(), stamp))
        if self._on_tick is not None:
            self._on_tick(ns, m)
        self._notify()

    def _frame(self, ns, m: Image):
        stamp = stamp_ns(m.header)
        rec = self.records[ns]
        rec.frames.append(FrameRecord(stamp, m.width, m.height, m.encoding, time.monotonic()))
        if self._keep_every and (len(rec.frames) - 1) % self._keep_every == 0:
            rec.sample_frames.append((stamp, image_msg_to_rgb(m)))
        self._notify()

    def _raw(self, ns, m: Image):
        stamp = stamp_ns(m.header)
        self.records[ns].raw_images.append(RawImageRecord(stamp, time.monotonic()))

    def _count(self, ns, attr):
        setattr(self.records[ns], attr, getattr(self.records[ns], attr) + 1)

    def _oracle(self, ns, m: SimOracle):
        self.records[ns].oracle.append(OracleRecord(m.episode, m.tick, m.dense_reward,
                                                    m.normalized_dense_reward, m.success))
        self._notify()

    def _held(self, ns, m: HeldReward):
        self.records[ns].held.append(HeldRecord(m.episode, m.tick, m.value, m.query_tick, m.age_ticks,
                                                m.stale, time.monotonic()))
        self._notify()

    def _result(self, ns, m: RewardQueryResult):
        self.records[ns].results.append(ResultRecord(m.episode, m.query_tick, m.status, m.value,
                                                     m.latency_s, m.batch_size))
        self._notify()

    def _policy_step(self, ns, m: PolicyStep):
        self.records[ns].policy_steps.append(PolicyStepRecord(m.episode, m.tick, m.policy_version,
                                                              m.deterministic, len(m.features),
                                                              time.monotonic()))
        self._notify()

    def _policy_status(self, ns, m: String):
        self.records[ns].policy_status.append(m.data)
        self._notify()

    def _update(self, m: PolicyUpdate):
        self.policy_updates.append(PolicyUpdateRecord(m.version, m.checkpoint_path, m.sha256, m.algorithm,
                                                      m.iteration))
        self._notify()

    def _stats(self, m: String):
        try:
            self.learner_stats.append(json.loads(m.data))
        except ValueError:
            self.learner_stats.append({"unparsed": m.data})
        self._notify()

    def _instruction(self, ns, m: String):
        self.records[ns].instruction = m.data
        self._notify()

    def _diag(self, m: DiagnosticArray):
        for status in m.status:
            self.diagnostics[status.name] = parse_status(status)
        self._notify()

    # --- client side ------------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``predicate()`` holds (True) or ``timeout_s`` passed (False). Raises
        RuntimeError if the monitor's executor died: no message would arrive any more."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate():
                if self.spin_error is not None:
                    raise RuntimeError(f"the graph monitor stopped receiving: its executor died "
                                       f"({type(self.spin_error).__name__}: {self.spin_error})")
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def send_command(self, ns: str, values) -> None:
        self._cmd_pubs[ns.strip("/")].publish(Float64MultiArray(data=[float(v) for v in values]))

    def announce_policy(self, version: int, path: str, sha256: str = "", algorithm: str = "manual") -> None:
        """Publish a PolicyUpdate as the learner would (e.g. to hand a checkpoint to the
        policies by hand, or to test refusal)."""
        if self._update_pub is None:
            self._update_pub = self.node.create_publisher(PolicyUpdate, "/learner/policy_update", LATCHED)
        self._update_pub.publish(PolicyUpdate(version=int(version), checkpoint_path=str(path),
                                              sha256=sha256, algorithm=algorithm))

    def publish_raw_image(self, ns: str, msg: Image) -> None:
        self._raw_pubs[ns.strip("/")].publish(msg)

    def reset(self, ns: str, timeout_s: float = 60.0) -> Trigger.Response:
        client = self._reset_clients[ns.strip("/")]
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError(f"service /{ns}/episode/reset not available")
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done():
            raise TimeoutError(f"/{ns}/episode/reset did not answer within {timeout_s} s")
        return future.result()

    def subscribers(self, topic: str) -> int:
        return self.node.count_subscribers(topic)

    def publishers(self, topic: str) -> int:
        return self.node.count_publishers(topic)

    def node_diagnostics(self, fq_name: str) -> Dict[str, str]:
        return self.diagnostics.get(fq_name, {})

    def blind_bridges(self, bridge: str = "maniskill_bridge") -> Dict[str, List[str]]:
        """{namespace: [required nodes]} for the namespaces that have not ticked yet because
        their tick source (`<ns>/<bridge>`) waits for nodes that report themselves active to
        this monitor: its process has not discovered them. Seen in `make demo` (1 bring-up
        in 6): env1's bridge waited 300 s for /reward_model and /env1/policy while env0's saw
        both at once."""
        out = {}
        for ns in self.namespaces:
            if self.records[ns].ticks:
                continue
            waiting = waiting_nodes(self.node_diagnostics(f"/{ns}/{bridge}").get("waiting_for", ""))
            unseen = [fq for fq in waiting if self.node_diagnostics(fq).get("lifecycle_state") == "active"]
            if unseen:
                out[ns] = unseen
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
