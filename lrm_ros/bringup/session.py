"""A graph brought up for a program that watches it: the runner's node processes, a monitor
attached to the same domain, and the nodes' output in a log file.

The tests, the benchmarks and `replay` all start a graph, attach a `GraphMonitor`, wait until
it is up (the first tick, a subscriber, a diagnostic), and stop it whatever happened. This is
that sequence, once:

    with running_graph(specs, env=env, log=tmp / "nodes.log",
                       monitor=GraphMonitor(["env0"])) as g:
        g.wait_up(lambda mon: len(mon.records["env0"].ticks) >= 1, 120, "no first tick")
        ...                          # g.monitor, g.runner
    g.codes                          # exit codes of every node, after the Ctrl-C

The monitor is built by the caller (it may add its own subscriptions before the nodes start);
`running_graph` owns it from then on and closes it. On leaving, the runner stops first (SIGINT,
so the monitor still sees the nodes' last messages), then the monitor, then the log.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, Mapping, Optional, Sequence, TextIO, Union

from lrm_ros.bringup.graph import NodeSpec
from lrm_ros.bringup.runner import GraphRunner


class GraphNotUp(RuntimeError):
    """The graph did not reach the state its user waited for; the message names the nodes that
    died (with their last output) and ends with the tail of the nodes' log."""


@dataclass
class RunningGraph:
    monitor: object                  # lrm_ros.ros.monitor.GraphMonitor
    runner: GraphRunner
    log: TextIO
    codes: Dict[str, Optional[int]] = field(default_factory=dict)   # set when the graph stops

    @property
    def log_path(self) -> Path:
        return Path(self.log.name)

    def log_text(self) -> str:
        """Everything the nodes wrote so far."""
        self.log.flush()
        return self.log_path.read_text()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def deaths(self) -> str:
        """The nodes that died and will not come back, each with its last output ('' if none)."""
        return "; ".join(self.runner.describe_death(p) for p in self.runner.dead())

    def wait_up(self, ready: Callable[[object], bool], timeout_s: float,
                what: Union[str, Callable[[], str]] = "the graph did not come up") -> None:
        """Wait until `ready(monitor)`; raise GraphNotUp saying `what` (or what `what()` says
        then), why and the log's tail if it does not hold within `timeout_s` or a node dies
        first."""
        mon, runner = self.monitor, self.runner
        ok = mon.wait_for(lambda: ready(mon) or bool(runner.dead()), timeout_s)
        if not ok or runner.dead():
            why = self.deaths() or f"not within {timeout_s:g} s, no node died"
            what = what() if callable(what) else what
            raise GraphNotUp(f"{what}: {why}\n--- nodes' log (tail) ---\n{self.log_tail()}")


@contextmanager
def running_graph(specs: Sequence[NodeSpec], *, env: Mapping[str, str], log: Union[Path, TextIO],
                  monitor, **runner_options) -> Iterator[RunningGraph]:
    """Start `specs` with `env` (see lrm_ros.ros.env.ros_environment), their output to `log`
    (a path: written afresh and closed on leaving; an open file: appended to, left open);
    yield a RunningGraph; stop the nodes and close `monitor` on leaving. `runner_options` go
    to GraphRunner (e.g. shutdown_timeout_s)."""
    wanted = env.get("ROS_DOMAIN_ID")
    if wanted is not None and int(wanted) != monitor.domain_id:
        monitor.close()
        # it would watch another graph (or none) and wait_up would be told about the wrong one
        raise ValueError(f"the monitor is on ROS_DOMAIN_ID {monitor.domain_id}, the nodes on {wanted}: "
                         f"build it with GraphMonitor(..., domain_id={wanted})")
    owned = isinstance(log, (str, Path))
    if owned:
        log = open(log, "w")
    try:
        runner = GraphRunner(specs, env=env, output=log, **runner_options)
        graph = RunningGraph(monitor, runner, log)
        try:
            runner.start()
            yield graph
        finally:
            graph.codes = runner.stop()
    finally:
        monitor.close()
        if owned:
            log.close()
