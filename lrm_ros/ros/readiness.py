"""Observing the nodes a tick source waits for (lrm_ros.common.readiness decides).

Per required node (fully qualified name): is it in the ROS graph, does it subscribe this
tick source's `control/tick`, and, when it is a lifecycle node (it offers `<name>/get_state`),
is it active. `poll()` never blocks: `get_state` requests go out asynchronously and their
answers, delivered by the node's executor, are used at the next poll.
"""
from typing import Dict, Sequence

from lifecycle_msgs.srv import GetState
from rclpy.node import Node

from lrm_ros.common.readiness import node_problem


def _split(fqn: str):
    ns, _, name = fqn.rstrip("/").rpartition("/")
    return (ns or "/"), name


class NodeReadinessProbe:
    def __init__(self, node: Node, names: Sequence[str], tick_topic: str):
        self.node = node
        self.names = [n for n in names if n]
        self.tick_topic = tick_topic
        self._clients = {}
        self._pending = {}
        self.states: Dict[str, str] = {}        # last lifecycle state label per node

    def _lifecycle_state(self, fqn: str):
        """The last known lifecycle state, asking again (asynchronously) when no request is
        out; None while the node offers no get_state service (not a lifecycle node)."""
        service = f"{fqn}/get_state"
        client = self._clients.get(fqn)
        if client is None:
            ns, name = _split(fqn)
            try:
                services = {s for s, _ in self.node.get_service_names_and_types_by_node(name, ns)}
            except Exception:                   # the node left the graph meanwhile
                return None
            if service not in services:
                return None
            client = self._clients[fqn] = self.node.create_client(GetState, service)
        future = self._pending.get(fqn)
        if future is not None and future.done():
            try:
                self.states[fqn] = future.result().current_state.label
            except Exception:                   # the request failed: ask again
                pass
            future = self._pending[fqn] = None
        if future is None and client.service_is_ready():
            self._pending[fqn] = client.call_async(GetState.Request())
        return self.states.get(fqn)

    def poll(self) -> Dict[str, str]:
        """{name: what is missing ("" = ready)} for every required node."""
        present = {(ns.rstrip("/") + "/" + name) if ns != "/" else "/" + name
                   for name, ns in self.node.get_node_names_and_namespaces()}
        subscribers = {(i.node_namespace.rstrip("/") + "/" + i.node_name)
                       for i in self.node.get_subscriptions_info_by_topic(self.tick_topic)}
        out = {}
        for fqn in self.names:
            discovered = fqn in present
            state = self._lifecycle_state(fqn) if discovered else None
            if not discovered:
                self.states.pop(fqn, None)      # a restarted node starts over
            out[fqn] = node_problem(discovered, fqn in subscribers, state, self.tick_topic)
        return out
