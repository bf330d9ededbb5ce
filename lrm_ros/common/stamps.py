"""Message time stamps as integer nanoseconds, the one form the domain code, the bags and the nodes use.

`stamp_ns` reads any `std_msgs/Header` (an rclpy message or a `rosbags` one alike: only
`.stamp.sec` and `.stamp.nanosec` are read), so this module needs no ROS.
"""
NS_PER_S = 1_000_000_000


def stamp_ns(header) -> int:
    """The header's stamp (builtin_interfaces/Time) in nanoseconds."""
    return int(header.stamp.sec) * NS_PER_S + int(header.stamp.nanosec)
