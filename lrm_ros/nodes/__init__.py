"""Thin rclpy nodes: parameters -> core config -> core object -> publish."""
