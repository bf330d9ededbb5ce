"""The simulated graph on a ROS 2 install: `ros2 launch lrm_ros sim.launch.py num_envs:=2`.

Everything (launch arguments with their defaults, nodes, namespaces, parameters, remappings)
comes from config/graphs/sim.yaml, the description `lrm-ros up sim` starts too; list the
arguments with `ros2 launch lrm_ros sim.launch.py --show-args`.
"""
from lrm_ros.bringup.launch_support import graph_launch_description


def generate_launch_description():
    return graph_launch_description("sim")
