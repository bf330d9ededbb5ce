"""ROS-side helpers: message conversions, QoS profiles, parameters, process environment."""
