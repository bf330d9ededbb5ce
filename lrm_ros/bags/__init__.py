"""rosbag2 (mcap) writing and reading without ROS (rosbags library)."""
