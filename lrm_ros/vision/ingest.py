"""ROS-free logic of camera ingest: any common camera image -> rgb8 at model resolution."""
from collections import Counter
from dataclasses import dataclass, field
from typing import Tuple

import numpy as np

from lrm_ros.vision.image import ImageError, resize_center_crop


@dataclass(frozen=True)
class IngestConfig:
    """Parameters of the camera_ingest node."""
    inputs: Tuple[str, ...] = field(default=("camera/image_raw",), metadata={"help": (
        "camera topics to subscribe; a name ending in '/compressed' is a "
        "sensor_msgs/CompressedImage (jpeg/png), any other a sensor_msgs/Image")})
    outputs: Tuple[str, ...] = field(default=("camera/frame",), metadata={"help": (
        "output topic for each input, same order and length as inputs")})
    width: int = field(default=224, metadata={"help": "output width (model resolution)"})
    height: int = field(default=224, metadata={"help": "output height (model resolution)"})
    diagnostics_period_s: float = field(default=1.0, metadata={"help": "period of /diagnostics"})

    def __post_init__(self):
        if not self.inputs:
            raise ValueError("inputs is empty: name at least one camera topic, "
                             "e.g. inputs:=['camera/image_raw']")
        if len(self.outputs) != len(self.inputs):
            raise ValueError(f"outputs must have one topic per input: {len(self.inputs)} inputs "
                             f"{list(self.inputs)} but {len(self.outputs)} outputs {list(self.outputs)}")
        if len(set(self.outputs)) != len(self.outputs):
            raise ValueError(f"outputs must be distinct, got {list(self.outputs)}")
        if self.width < 8 or self.height < 8:
            raise ValueError(f"output size must be at least 8x8, got {self.width}x{self.height}")

    @staticmethod
    def is_compressed(topic: str) -> bool:
        return topic.rstrip("/").endswith("/compressed") or topic == "compressed"


class FrameConverter:
    """Converts decoded images to the model resolution and counts what it drops, by reason."""

    def __init__(self, width: int, height: int):
        self.width = width
        self.height = height
        self.converted = 0
        self.dropped: Counter = Counter()

    def convert(self, decode) -> np.ndarray:
        """`decode()` returns an (H, W, 3) uint8 RGB array or raises ImageError.
        Returns the frame at model resolution; re-raises ImageError after counting it."""
        try:
            rgb = decode()
        except ImageError as exc:
            self.dropped[exc.reason] += 1
            raise
        frame = resize_center_crop(rgb, self.width, self.height)
        self.converted += 1
        return np.ascontiguousarray(frame)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())
