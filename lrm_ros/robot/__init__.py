"""A real robot in place of the simulator (ROS-free): `robot_bridge`'s logic.

  bridge  episode start/stop, command admission and tick timing on hardware
"""
