"""The graph on hardware (ROS 2 install): `ros2 launch lrm_ros real_robot.launch.py robot_params:=robots/ur5e_servo.yaml`.

Everything (launch arguments with their defaults, nodes, namespaces, parameters, remappings)
comes from config/graphs/real_robot.yaml, the description `lrm-ros up real_robot` starts too; list the
arguments with `ros2 launch lrm_ros real_robot.launch.py --show-args`.
"""
from lrm_ros.bringup.launch_support import graph_launch_description


def generate_launch_description():
    return graph_launch_description("real_robot")
