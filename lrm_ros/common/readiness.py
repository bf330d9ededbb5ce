"""Whether the nodes a tick source must wait for are ready (ROS-free).

A tick source (maniskill_bridge's first tick, robot_bridge's `episode/start`) must not
start an episode before the graph's policy and reward model can act on its ticks: the
reward model loads its model for up to a minute, and every tick published before it
subscribes gets no held reward. The ROS side (`lrm_ros.ros.readiness`) observes each
required node and reports, per node, what is still missing ("" = ready); this module turns
those observations into a decision, with a timeout and a message that names the nodes.
"""
import time
from typing import Callable, Dict, Optional, Sequence

NOT_RUNNING = "not running"


def node_problem(discovered: bool, subscribes_ticks: bool, lifecycle_state: Optional[str],
                 tick_topic: str) -> str:
    """What keeps one node from being ready ("" = ready).

    `lifecycle_state`: the node's answer to `get_state` ("active", "inactive", ...), or
    None when it is not a lifecycle node (or has not answered yet: then the tick
    subscription, which our lifecycle nodes create only once their model is loaded, decides).
    """
    if not discovered:
        return NOT_RUNNING
    if lifecycle_state is not None and lifecycle_state != "active":
        return f"not active (lifecycle state: {lifecycle_state})"
    if not subscribes_ticks:
        return f"does not subscribe {tick_topic} yet (still loading its model?)"
    return ""


class RequiredNodes:
    """The wait for a set of nodes: `update()` with each node's problem ("" = ready);
    `ready` once all are; `timed_out` after `timeout_s` without that."""

    def __init__(self, names: Sequence[str], timeout_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.names = [n for n in names if n]
        self.timeout_s = float(timeout_s)
        self._clock = clock
        self._t0 = clock()
        self.problems: Dict[str, str] = {n: NOT_RUNNING for n in self.names}
        self.ready_since: Optional[float] = None

    def update(self, problems: Dict[str, str]) -> None:
        for name in self.names:
            self.problems[name] = problems.get(name, NOT_RUNNING)
        if self.ready and self.ready_since is None:
            self.ready_since = self._clock() - self._t0

    @property
    def ready(self) -> bool:
        return all(not p for p in self.problems.values())

    @property
    def waited_s(self) -> float:
        return self._clock() - self._t0

    @property
    def timed_out(self) -> bool:
        return not self.ready and self.waited_s >= self.timeout_s

    def missing(self) -> Dict[str, str]:
        return {n: p for n, p in self.problems.items() if p}

    def describe(self) -> str:
        """e.g. "/reward_model: not active (lifecycle state: unconfigured); /env0/policy: not
        running"; "" when all are ready."""
        return "; ".join(f"{n}: {p}" for n, p in self.missing().items())


def waiting_nodes(description: str) -> Dict[str, str]:
    """The inverse of `RequiredNodes.describe`: {node: problem} from a tick source's
    `waiting_for` diagnostic ("" -> {})."""
    out = {}
    for part in description.split("; "):
        name, sep, problem = part.partition(": ")
        if sep and name.startswith("/"):
            out[name] = problem
    return out
