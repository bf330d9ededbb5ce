"""Pixels (ROS-free): image conversion, camera ingest and the frozen pretrained encoders that
the `lite` reward model and the tiny VLA policy share.

  image     raw / compressed image buffers <-> (H, W, 3) uint8 RGB, validation
  ingest    any common camera image -> rgb8 at the model's resolution (camera_ingest's logic)
  features  frozen pretrained image / text encoders (EfficientNet-Lite0, hashed text)
"""
