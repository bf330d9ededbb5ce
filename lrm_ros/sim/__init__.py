"""ManiSkill3 simulation and demonstrations (ROS-free)."""
