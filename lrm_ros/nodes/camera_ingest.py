"""camera_ingest: raw camera images (Image or CompressedImage, any common encoding) ->
`camera/frame`, rgb8 at the model resolution, with the original header.

Malformed input is dropped with a counted, throttled error naming the problem; counters go
to /diagnostics. Conversion is a few hundred microseconds, so it runs in the callback.
"""
from functools import partial

from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from lrm_ros.nodes.runtime import run_node
from lrm_ros.ros.diagnostics import DiagnosticsPublisher
from lrm_ros.ros.image_msgs import compressed_msg_to_rgb, image_msg_to_rgb, rgb_to_image_msg
from lrm_ros.ros.params import declare_config
from lrm_ros.ros.qos import SENSOR
from lrm_ros.vision.image import ImageError
from lrm_ros.vision.ingest import FrameConverter, IngestConfig


class CameraIngest(Node):
    def __init__(self, **kwargs):
        super().__init__("camera_ingest", **kwargs)
        self.config = declare_config(self, IngestConfig)
        self.converter = FrameConverter(self.config.width, self.config.height)
        for source, target in zip(self.config.inputs, self.config.outputs):
            publisher = self.create_publisher(Image, target, SENSOR)
            if IngestConfig.is_compressed(source):
                self.create_subscription(
                    CompressedImage, source,
                    partial(self._on_image, publisher, compressed_msg_to_rgb), SENSOR)
            else:
                self.create_subscription(
                    Image, source, partial(self._on_image, publisher, image_msg_to_rgb), SENSOR)
            self.get_logger().info(f"{source} -> {target} ({self.config.width}x"
                                   f"{self.config.height} rgb8)")
        self.diagnostics = DiagnosticsPublisher(self, self._counters,
                                                self.config.diagnostics_period_s)

    def _on_image(self, publisher, to_rgb, msg) -> None:
        try:
            frame = self.converter.convert(lambda: to_rgb(msg))
        except ImageError as exc:
            self.get_logger().error(
                f"dropped image (frame_id '{msg.header.frame_id}'): {exc}",
                throttle_duration_sec=2.0)
            return
        publisher.publish(rgb_to_image_msg(frame, header=msg.header))

    def _counters(self) -> dict:
        out = {"converted": self.converter.converted, "dropped": self.converter.dropped_total}
        out.update({f"dropped_{k}": v for k, v in sorted(self.converter.dropped.items())})
        return out


def main(args=None) -> int:
    return run_node(CameraIngest, args)


if __name__ == "__main__":
    raise SystemExit(main())
