"""Thin adapter between ``sensor_msgs`` image messages and (H, W, 3) uint8 RGB arrays.

All pixel work is done by :mod:`lrm_ros.vision.image`; this module only moves fields.

Notes on rclpy message data (measured with the Kilted wheels, rclpy 9.1.2):

* ``Image.data`` / ``CompressedImage.data`` are ``array.array('B')`` -- both on a fresh
  message and on messages delivered by a subscription / ``deserialize_message``.  We read
  them with ``np.frombuffer`` (zero copy, ~0.5 us) instead of ``bytes(msg.data)``
  (a copy, ~26 us at 640x480).  Other containers (bytes, numpy arrays from rosbags,
  plain lists) are accepted too.
* The ``data`` setter turns anything that is not an ``array.array`` into one with
  ``array.array('B', value)``: one C-level copy for ``bytes``, but an element-by-element
  Python loop for a numpy array (~9 ms for 224x224x3!), and with
  ``ROS_PYTHON_CHECK_FIELDS=1`` a Python-level validation over every byte of a
  ``bytes``/``list``.  An ``array.array('B')`` is stored as is, unchecked.  So we build
  one ``array.array('B')`` with ``frombytes`` directly from the numpy buffer (a single
  copy) and assign it.  Do not pass ``data=`` to the constructor: it copies again.
"""

from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from lrm_ros.vision.image import (
    decode_compressed,
    decode_raw,
    encode_compressed,
    encode_raw_array,
    parse_compressed_format,
)

__all__ = [
    "image_msg_to_rgb",
    "compressed_msg_to_rgb",
    "rgb_to_image_msg",
    "rgb_to_compressed_msg",
]


def _to_byte_array(buf) -> array.array:
    """One copy of a C-contiguous buffer (numpy array, bytes, ...) into ``array('B')``."""
    out = array.array("B")
    out.frombytes(buf)
    return out


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """``sensor_msgs/Image`` -> (H, W, 3) uint8 RGB (fresh array; raises ``ImageError``)."""
    return decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                      is_bigendian=bool(msg.is_bigendian))


def compressed_msg_to_rgb(msg: CompressedImage) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg/png) -> (H, W, 3) uint8 RGB."""
    return decode_compressed(msg.format, msg.data)


def rgb_to_image_msg(rgb: np.ndarray, header=None, encoding: str = "rgb8") -> Image:
    """(H, W, 3) uint8 RGB -> ``sensor_msgs/Image`` in ``encoding`` (unpadded rows).

    ``header`` (a ``std_msgs/Header``) is assigned as is, not copied.
    """
    pixels, step = encode_raw_array(rgb, encoding)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height = int(rgb.shape[0])
    msg.width = int(rgb.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(step)
    msg.data = _to_byte_array(pixels)
    return msg


def rgb_to_compressed_msg(rgb: np.ndarray, fmt: str = "jpeg", header=None,
                          quality: int = 90) -> CompressedImage:
    """(H, W, 3) uint8 RGB -> ``sensor_msgs/CompressedImage`` (``format`` = "jpeg"/"png")."""
    codec = parse_compressed_format(fmt) or "jpeg"
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = codec
    msg.data = _to_byte_array(encode_compressed(rgb, codec, quality))
    return msg
