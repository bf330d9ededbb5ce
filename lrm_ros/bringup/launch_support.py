"""Glue between graph descriptions (config/graphs/*.yaml) and the ROS 2 launch framework.

The launch files in launch/ are thin: they call `graph_launch_description('sim')` (or
`any_graph_launch_description()`), so every node, topic and parameter comes from the graph
YAML through `lrm_ros.bringup.graph.resolve`, exactly as for the pip-only `lrm-ros up`.

`launch` and `launch_ros` are imported inside the functions only: this module imports (and
its pure helpers can be tested) where no ROS 2 install is present.
"""
from typing import Dict, List, Mapping, Optional, Sequence

from lrm_ros.bringup.graph import (GraphError, NodeSpec, argument_choices, argument_defaults,
                                   load_graph, resolve)

GRAPH_ARGUMENT = "graph"


def node_kwargs(spec: NodeSpec) -> dict:
    """Keyword arguments of `launch_ros.actions.Node` for one resolved node.

    Parameter files come first and the graph's own values last, so the latter win (the same
    order `NodeSpec.ros_args()` gives `lrm-ros up`).
    """
    parameters: List[object] = list(spec.param_files)
    if spec.parameters:
        parameters.append(dict(spec.parameters))
    extra = {"prefix": spec.prefix} if spec.prefix else {}
    if spec.respawn:        # launch restarts the process when it exits, as lrm-ros up does
        extra.update(respawn=True, respawn_delay=float(spec.respawn_delay_s))
    return {
        **extra,
        "package": spec.package,
        "executable": spec.executable,
        "name": spec.name,
        "namespace": spec.namespace or None,
        "parameters": parameters,
        "remappings": [tuple(pair) for pair in spec.remappings],
        "output": "screen",
        # Like the pip-only runner: Python nodes' output unbuffered, so it shows as it comes.
        "additional_env": {"PYTHONUNBUFFERED": "1"},
    }


def node_actions(specs: Sequence[NodeSpec]) -> list:
    """One `launch_ros.actions.Node` per resolved node."""
    from launch_ros.actions import Node
    return [Node(**node_kwargs(spec)) for spec in specs]


def declare_graph_arguments(graph: dict) -> list:
    """One `DeclareLaunchArgument` per entry of the graph's `arguments` (default and
    description taken from the YAML)."""
    from launch.actions import DeclareLaunchArgument
    defaults, choices = argument_defaults(graph), argument_choices(graph)
    out = []
    for name, entry in (graph.get("arguments") or {}).items():
        description = str((entry or {}).get("description", "")) or f"graph argument '{name}'"
        out.append(DeclareLaunchArgument(name, default_value=defaults[name],
                                         description=description, choices=choices.get(name)))
    return out


def graph_argument_values(context, graph: dict) -> Dict[str, str]:
    """The graph arguments' values as resolved by the launch context.

    Declared arguments always have a value (their default at least); arguments a parent
    launch file or `ros2 launch` set without declaring them are taken as well.
    """
    from launch.substitutions import LaunchConfiguration
    values = {}
    for name in argument_defaults(graph):
        if name in context.launch_configurations:
            values[name] = LaunchConfiguration(name).perform(context)
    return values


def _nodes_of_graph(context, graph: dict):
    return node_actions(resolve(graph, graph_argument_values(context, graph)))


def graph_launch_description(graph_name: str):
    """The launch description of one graph: its arguments, declared, and its nodes, created
    once the arguments' values are known."""
    from launch import LaunchDescription
    from launch.actions import OpaqueFunction
    graph = load_graph(graph_name)
    return LaunchDescription([
        *declare_graph_arguments(graph),
        OpaqueFunction(function=_nodes_of_graph, kwargs={"graph": graph}),
    ])


def _nodes_of_named_graph(context):
    from launch.substitutions import LaunchConfiguration
    graph = load_graph(LaunchConfiguration(GRAPH_ARGUMENT).perform(context))
    return _nodes_of_graph(context, graph)


def any_graph_launch_description(default_graph: str = "sim"):
    """Launch description taking `graph:=<name or YAML path>`; the graph's own arguments are
    passed as undeclared launch arguments (`ros2 launch lrm_ros graph.launch.py graph:=sim
    num_envs:=2`). Prefer the per-graph launch file, which declares them (--show-args)."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    return LaunchDescription([
        DeclareLaunchArgument(GRAPH_ARGUMENT, default_value=default_graph,
                              description="graph under config/graphs (name) or a graph "
                                          "YAML file (path)"),
        OpaqueFunction(function=_nodes_of_named_graph),
    ])


def resolve_for_launch(graph_name: str, overrides: Optional[Mapping[str, str]] = None) -> List[dict]:
    """The `Node` keyword arguments a launch of `graph_name` would use (launch-free; for
    tests and `--show`-style inspection)."""
    return [node_kwargs(spec) for spec in resolve(load_graph(graph_name), overrides)]


__all__ = ["GraphError", "any_graph_launch_description", "declare_graph_arguments",
           "graph_argument_values", "graph_launch_description", "node_actions", "node_kwargs",
           "resolve_for_launch"]
