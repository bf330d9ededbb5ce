"""Any graph description: `ros2 launch lrm_ros graph.launch.py graph:=sim num_envs:=2`.

`graph` is a name under config/graphs or the path of a graph YAML file; the graph's own
arguments are given as name:=value as well (they are not declared here, so --show-args lists
only `graph`; the per-graph launch files such as sim.launch.py declare them).
"""
from lrm_ros.bringup.launch_support import any_graph_launch_description


def generate_launch_description():
    return any_graph_launch_description()
