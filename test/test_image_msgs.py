"""Tests for lrm_ros.ros.image_msgs with real sensor_msgs objects (no node, no graph)."""

import array

import numpy as np
import pytest

sensor_msgs_msg = pytest.importorskip("sensor_msgs.msg")
Image = sensor_msgs_msg.Image
CompressedImage = sensor_msgs_msg.CompressedImage

from lrm_ros.ros.image_msgs import (  # noqa: E402
                                    compressed_msg_to_rgb,
                                    image_msg_to_rgb,
                                    rgb_to_compressed_msg,
                                    rgb_to_image_msg,
                                    )
from lrm_ros.vision.image import RAW_ENCODINGS, ImageError, encode_compressed, encode_raw  # noqa: E402

SIZES = [(1, 1), (5, 7), (224, 224), (480, 640)]
GRAY = {"mono8", "8uc1", "mono16", "16uc1"}


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", RAW_ENCODINGS)
@pytest.mark.parametrize("hw", SIZES)
def test_image_msg_round_trip(encoding, hw):
    rgb = _rgb(*hw)
    msg = rgb_to_image_msg(rgb, encoding=encoding)
    assert isinstance(msg, Image)
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (hw[0], hw[1], encoding, 0)
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    assert len(msg.data) == msg.step * msg.height
    out = image_msg_to_rgb(msg)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    if encoding.lower() in GRAY:
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
        gray = np.repeat(rgb[..., :1], 3, axis=2)
        np.testing.assert_array_equal(image_msg_to_rgb(rgb_to_image_msg(gray, encoding=encoding)),
                                      gray)
    else:
        np.testing.assert_array_equal(out, rgb)


def test_rgb8_message_bytes_are_row_major_rgb():
    rgb = _rgb(3, 4)
    msg = rgb_to_image_msg(rgb)
    assert msg.step == 12
    assert msg.data.tobytes() == rgb.tobytes()


@pytest.mark.parametrize("pad", [1, 4, 100])
def test_padded_message_with_array_data(pad):
    # built by hand the way a driver would, data as array.array('B')
    h, w = 7, 5
    rgb = _rgb(h, w, seed=2)
    data, step = encode_raw(rgb, "bgr8", step=w * 3 + pad)
    msg = Image()
    msg.height, msg.width, msg.encoding, msg.step = h, w, "bgr8", step
    msg.data = array.array("B", data)
    assert type(msg.data) is array.array
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


@pytest.mark.parametrize("container", [bytes, list, lambda b: array.array("B", b)])
def test_message_data_assigned_in_any_container(container):
    # rclpy's setter converts anything to array.array('B'); conversion must not care
    rgb = _rgb(4, 6, seed=4)
    data, step = encode_raw(rgb, "rgb8")
    msg = Image(height=4, width=6, encoding="rgb8", step=step)
    msg.data = container(data)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


def test_numpy_data_duck_typed_message():
    # e.g. rosbags-deserialised messages carry data as a numpy uint8 array
    class FakeImage:
        pass

    rgb = _rgb(6, 4, seed=6)
    data, step = encode_raw(rgb, "rgba8")
    m = FakeImage()
    m.height, m.width, m.encoding, m.step, m.is_bigendian = 6, 4, "rgba8", step, 0
    m.data = np.frombuffer(data, np.uint8)
    np.testing.assert_array_equal(image_msg_to_rgb(m), rgb)


def test_serialization_round_trip():
    from rclpy.serialization import deserialize_message, serialize_message

    rgb = _rgb(224, 224, seed=7)
    msg = rgb_to_image_msg(rgb, encoding="bgr8")
    back = deserialize_message(serialize_message(msg), Image)
    assert isinstance(back.data, array.array)  # what subscriptions deliver
    np.testing.assert_array_equal(image_msg_to_rgb(back), rgb)

    cmsg = rgb_to_compressed_msg(rgb, "png")
    cback = deserialize_message(serialize_message(cmsg), CompressedImage)
    np.testing.assert_array_equal(compressed_msg_to_rgb(cback), rgb)


def test_header_is_kept():
    from std_msgs.msg import Header

    hdr = Header(frame_id="camera_optical")
    hdr.stamp.sec, hdr.stamp.nanosec = 12, 345
    msg = rgb_to_image_msg(_rgb(2, 2), header=hdr)
    assert msg.header.frame_id == "camera_optical" and msg.header.stamp.nanosec == 345
    cmsg = rgb_to_compressed_msg(_rgb(2, 2), "jpeg", header=hdr)
    assert cmsg.header.frame_id == "camera_optical"
    assert rgb_to_image_msg(_rgb(2, 2)).header.frame_id == ""


@pytest.mark.parametrize("hw", SIZES)
def test_compressed_png_round_trip(hw):
    rgb = _rgb(*hw, seed=8)
    msg = rgb_to_compressed_msg(rgb, "png")
    assert isinstance(msg, CompressedImage) and msg.format == "png"
    assert isinstance(msg.data, array.array)
    np.testing.assert_array_equal(compressed_msg_to_rgb(msg), rgb)


def test_compressed_jpeg_round_trip_and_ros_format_strings():
    y, x = np.mgrid[0:120, 0:160]
    rgb = np.stack([x * 255 // 159, y * 255 // 119, np.full_like(x, 90)], -1).astype(np.uint8)
    msg = rgb_to_compressed_msg(rgb, "jpeg")
    assert msg.format == "jpeg"
    assert np.abs(compressed_msg_to_rgb(msg).astype(int) - rgb).mean() < 3.0
    # as image_transport publishes it
    m2 = CompressedImage(format="rgb8; jpeg compressed bgr8")
    m2.data = array.array("B", encode_compressed(rgb, "jpeg"))
    assert np.abs(compressed_msg_to_rgb(m2).astype(int) - rgb).mean() < 3.0


def test_malformed_messages_raise_image_error():
    msg = rgb_to_image_msg(_rgb(10, 4))
    msg.height = 11
    with pytest.raises(ImageError) as ei:
        image_msg_to_rgb(msg)
    assert ei.value.reason == "size_mismatch" and "step*height = 12*11 = 132" in str(ei.value)

    msg = rgb_to_image_msg(_rgb(2, 2))
    msg.encoding = "yuv422"
    with pytest.raises(ImageError) as ei:
        image_msg_to_rgb(msg)
    assert ei.value.reason == "unknown_encoding"

    with pytest.raises(ImageError) as ei:
        image_msg_to_rgb(Image())  # default-constructed: 0x0, no encoding: the encoding is named first
    assert ei.value.reason == "unknown_encoding" and "encoding ''" in str(ei.value)
    with pytest.raises(ImageError) as ei:
        image_msg_to_rgb(Image(encoding="rgb8"))  # 0x0 rgb8
    assert ei.value.reason == "empty"

    cmsg = CompressedImage(format="jpeg")
    cmsg.data = array.array("B", b"\x00" * 50)
    with pytest.raises(ImageError) as ei:
        compressed_msg_to_rgb(cmsg)
    assert ei.value.reason == "decode_failed"
