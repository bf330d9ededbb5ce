"""ROS-free core (numpy/OpenCV only; never imports rclpy or *_msgs)."""
