"""Thin rclpy nodes: parameters -> config dataclass -> domain object -> publish."""
