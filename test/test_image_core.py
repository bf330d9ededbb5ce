"""Tests for lrm_ros.vision.image (pure numpy/OpenCV, no ROS)."""

import array
import sys

import numpy as np
import pytest

from lrm_ros.vision.image import (
    RAW_ENCODINGS,
    ImageError,
    decode_compressed,
    decode_raw,
    encode_compressed,
    encode_raw,
    resize_center_crop,
)

SIZES = [(1, 1), (5, 7), (7, 5), (224, 224), (480, 640)]  # (height, width)
PADS = [0, 1, 3, 64]
GRAY_ENCODINGS = {"mono8", "8uc1", "mono16", "16uc1"}
BPP = {"rgb8": 3, "bgr8": 3, "8uc3": 3, "rgba8": 4, "bgra8": 4, "8uc4": 4,
       "mono8": 1, "8uc1": 1, "mono16": 2, "16uc1": 2}


def _random_rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth_rgb(h, w):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)),
                     ((x + y) * 127 // max(h + w - 2, 1))], axis=-1).astype(np.uint8)


def _is_gray(enc):
    return enc.lower() in GRAY_ENCODINGS


# --------------------------------------------------------------------------- raw round trips

@pytest.mark.parametrize("encoding", RAW_ENCODINGS)
@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("pad", PADS)
def test_raw_round_trip(encoding, hw, pad):
    h, w = hw
    rgb = _random_rgb(h, w)
    row = w * BPP[encoding.lower()]
    data, step = encode_raw(rgb, encoding, step=row + pad)
    assert step == row + pad
    assert isinstance(data, bytes) and len(data) == step * h
    out = decode_raw(encoding, h, w, step, data)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    assert out.flags.c_contiguous and out.flags.writeable
    if _is_gray(encoding):
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
        # a gray input (R=G=B) round-trips exactly, also through 16 bit
        gray = np.repeat(rgb[..., :1], 3, axis=2)
        data, step = encode_raw(gray, encoding, step=row + pad)
        np.testing.assert_array_equal(decode_raw(encoding, h, w, step, data), gray)
    else:
        np.testing.assert_array_equal(out, rgb)


def test_default_step_is_unpadded():
    rgb = _random_rgb(5, 7)
    for enc in RAW_ENCODINGS:
        data, step = encode_raw(rgb, enc)
        assert step == 7 * BPP[enc.lower()]
        assert len(data) == 5 * step


@pytest.mark.parametrize("container", [bytes, bytearray, memoryview,
                                       lambda b: array.array("B", b),
                                       lambda b: np.frombuffer(b, np.uint8),
                                       list])
def test_raw_accepts_data_containers(container):
    rgb = _random_rgb(6, 9, seed=3)
    data, step = encode_raw(rgb, "bgr8", step=30)
    np.testing.assert_array_equal(decode_raw("bgr8", 6, 9, step, container(data)), rgb)


def test_output_does_not_alias_input():
    rgb = _random_rgb(4, 4)
    buf = bytearray(encode_raw(rgb, "rgb8")[0])
    out = decode_raw("rgb8", 4, 4, 12, buf)
    buf[:] = bytes(len(buf))
    np.testing.assert_array_equal(out, rgb)


def test_channel_order_known_pixel():
    # one pure red pixel, as each encoding lays it out in memory
    h, w = 2, 3
    cases = {
        "rgb8": [255, 0, 0], "bgr8": [0, 0, 255], "8UC3": [0, 0, 255],
        "rgba8": [255, 0, 0, 7], "bgra8": [0, 0, 255, 7], "8UC4": [0, 0, 255, 7],
    }
    for enc, px in cases.items():
        data = np.zeros((h, w, len(px)), np.uint8)
        data[1, 2] = px
        out = decode_raw(enc, h, w, w * len(px), data.tobytes())
        assert out[1, 2].tolist() == [255, 0, 0], enc
        assert out[0, 0].tolist() == [0, 0, 0], enc
    # and the encoder writes the same layouts
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[1, 2] = [255, 0, 0]
    assert np.frombuffer(encode_raw(rgb, "bgr8")[0], np.uint8).reshape(h, w, 3)[1, 2].tolist() \
        == [0, 0, 255]
    assert np.frombuffer(encode_raw(rgb, "bgra8")[0], np.uint8).reshape(h, w, 4)[1, 2].tolist() \
        == [0, 0, 255, 255]


def test_mono8_gives_equal_channels():
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 12
    out = decode_raw("mono8", 4, 5, 5, gray.tobytes())
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_scaled_by_high_byte(bigendian):
    v = np.array([[0, 255, 256, 1000], [32768, 65280, 65535, 511]], dtype=np.uint16)
    data = v.astype(">u2" if bigendian else "<u2").tobytes()
    for enc in ("mono16", "16UC1"):
        out = decode_raw(enc, 2, 4, 8, data, is_bigendian=bigendian)
        np.testing.assert_array_equal(out[..., 0], (v >> 8).astype(np.uint8))
        assert (out[..., 0] == out[..., 2]).all()
    # padded rows and the encoder's endianness option
    rgb = np.repeat(np.arange(12, dtype=np.uint8).reshape(3, 4, 1) * 20, 3, axis=2)
    data, step = encode_raw(rgb, "mono16", step=11, is_bigendian=bigendian)
    np.testing.assert_array_equal(decode_raw("mono16", 3, 4, step, data, bigendian), rgb)


def test_encoding_names_case_insensitive():
    rgb = _random_rgb(3, 3)
    data, step = encode_raw(rgb, "BGR8")
    np.testing.assert_array_equal(decode_raw("bgr8", 3, 3, step, data), rgb)
    np.testing.assert_array_equal(decode_raw("8uc3", 3, 3, step, data), rgb)


# --------------------------------------------------------------------------- raw errors

def _err(fn, *args, **kw):
    with pytest.raises(ImageError) as ei:
        fn(*args, **kw)
    assert isinstance(ei.value, ValueError)
    return ei.value


def test_error_size_mismatch():
    e = _err(decode_raw, "rgb8", 10, 4, 12, bytes(1000))
    assert e.reason == "size_mismatch"
    msg = str(e)
    assert "1000 bytes" in msg and "step*height = 12*10 = 120" in msg
    assert "step=12" in msg  # says what a correct message would look like
    e = _err(decode_raw, "rgb8", 10, 4, 12, bytes(119))
    assert e.reason == "size_mismatch" and "119 bytes" in str(e)


def test_error_bad_step():
    e = _err(decode_raw, "rgb8", 10, 4, 11, bytes(110))
    assert e.reason == "bad_step"
    assert "step=11" in str(e) and "4*3 = 12" in str(e) and "at least 12" in str(e)
    e = _err(decode_raw, "mono16", 2, 4, 4, bytes(8))
    assert e.reason == "bad_step" and "4*2 = 8" in str(e)
    e = _err(encode_raw, _random_rgb(2, 4), "rgb8", step=5)
    assert e.reason == "bad_step"


def test_error_zero_step_reported_as_bad_step():
    e = _err(decode_raw, "mono8", 3, 3, 0, b"")
    assert e.reason == "bad_step"


@pytest.mark.parametrize("h,w", [(0, 4), (4, 0), (0, 0), (-1, 3)])
def test_error_empty(h, w):
    e = _err(decode_raw, "rgb8", h, w, 12, b"")
    assert e.reason == "empty"
    assert f"height={h}" in str(e) and f"width={w}" in str(e)


@pytest.mark.parametrize("enc", ["yuv422", "bayer_rggb8", "32FC1", "", "rgb16"])
def test_error_unknown_encoding(enc):
    e = _err(decode_raw, enc, 2, 2, 6, bytes(12))
    assert e.reason == "unknown_encoding"
    assert repr(enc) in str(e) and "rgb8" in str(e) and "bgr8" in str(e)
    assert _err(encode_raw, _random_rgb(2, 2), enc).reason == "unknown_encoding"


def test_error_bad_data():
    e = _err(decode_raw, "rgb8", 1, 1, 3, np.zeros(3, np.float32))
    assert e.reason == "bad_data" and "float32" in str(e)
    e = _err(decode_raw, "rgb8", 1, 1, 3, [1, 2, 300])
    assert e.reason == "bad_data"


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((4, 4, 3), np.float32), [[0, 0, 0]]])
def test_error_encode_bad_array(bad):
    e = _err(encode_raw, bad, "rgb8")
    assert e.reason == "bad_array" and "(H, W, 3) uint8" in str(e)
    assert _err(encode_compressed, bad, "png").reason == "bad_array"


def test_error_encode_empty():
    assert _err(encode_raw, np.zeros((0, 3, 3), np.uint8), "rgb8").reason == "empty"


# --------------------------------------------------------------------------- compressed

@pytest.mark.parametrize("hw", [(1, 1), (5, 7), (224, 224), (480, 640)])
def test_png_round_trip_exact(hw):
    rgb = _random_rgb(*hw, seed=5)
    data = encode_compressed(rgb, "png")
    assert data[:4] == b"\x89PNG"
    for fmt in ("png", "bgr8; png compressed bgr8", "rgb8; png compressed bgr8", "PNG"):
        np.testing.assert_array_equal(decode_compressed(fmt, data), rgb)


@pytest.mark.parametrize("hw", [(1, 1), (7, 5), (64, 48), (224, 224), (480, 640)])
def test_jpeg_round_trip_close(hw):
    # smooth content (JPEG is lossy; tiny images are flat colour to dodge chroma subsampling)
    rgb = _smooth_rgb(*hw) if min(hw) >= 32 else np.full(hw + (3,), (200, 60, 30), np.uint8)
    data = encode_compressed(rgb, "jpeg", quality=95)
    assert data[:3] == b"\xff\xd8\xff"
    for fmt in ("jpeg", "rgb8; jpeg compressed bgr8", "jpg", ""):
        out = decode_compressed(fmt, data)
        assert out.shape == rgb.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - rgb).mean() < 3.0


def test_jpeg_channel_order_and_quality():
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 230  # red
    out = decode_compressed("jpeg", encode_compressed(rgb, "jpeg"))
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 25 and out[..., 2].mean() < 25
    img = _smooth_rgb(64, 64)
    assert len(encode_compressed(img, "jpeg", 20)) < len(encode_compressed(img, "jpeg", 95))


def test_png_gray_alpha_and_16bit():
    import cv2

    gray = (np.arange(48, dtype=np.uint8) * 5).reshape(6, 8)
    ok, png = cv2.imencode(".png", gray)
    out = decode_compressed("mono8; png compressed mono8", png.tobytes())
    assert out.shape == (6, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)

    rgb = _random_rgb(6, 8)
    bgra = np.dstack([rgb[..., ::-1], np.full((6, 8), 17, np.uint8)])
    ok, png = cv2.imencode(".png", bgra)
    np.testing.assert_array_equal(decode_compressed("png", png.tobytes()), rgb)

    g16 = (np.arange(48, dtype=np.uint16) * 1361).reshape(6, 8)
    ok, png = cv2.imencode(".png", g16)
    out = decode_compressed("png", png.tobytes())
    np.testing.assert_array_equal(out[..., 1], (g16 >> 8).astype(np.uint8))


@pytest.mark.parametrize("container", [bytes, bytearray, lambda b: array.array("B", b),
                                       lambda b: np.frombuffer(b, np.uint8)])
def test_compressed_accepts_data_containers(container):
    rgb = _random_rgb(5, 6)
    data = encode_compressed(rgb, "png")
    np.testing.assert_array_equal(decode_compressed("png", container(data)), rgb)


def test_compressed_errors():
    e = _err(decode_compressed, "jpeg", b"this is not a jpeg at all")
    assert e.reason == "decode_failed"
    assert "25 bytes" in str(e) and "74 68 69 73" in str(e) and "JPEG" in str(e)

    good = encode_compressed(_smooth_rgb(64, 64), "jpeg")
    e = _err(decode_compressed, "jpeg", good[:20])  # truncated header
    assert e.reason == "decode_failed"

    e = _err(decode_compressed, "png", b"")
    assert e.reason == "empty"

    e = _err(decode_compressed, "tiff", good)
    assert e.reason == "unknown_encoding" and "'tiff'" in str(e) and "jpeg" in str(e)

    e = _err(decode_compressed, "16UC1; compressedDepth png", good)
    assert e.reason == "unknown_encoding" and "compressedDepth" in str(e)

    assert _err(encode_compressed, _random_rgb(2, 2), "webp").reason == "unknown_encoding"


# --------------------------------------------------------------------------- resize

def test_resize_center_crop_drops_side_borders():
    # 300 wide x 200 high: red 20 px border left, blue 20 px right, gray middle
    img = np.full((200, 300, 3), 128, np.uint8)
    img[:, :20] = [255, 0, 0]
    img[:, -20:] = [0, 0, 255]
    out = resize_center_crop(img, 224, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    # scale 224/200 = 1.12, crop keeps source columns 50..250: both borders gone
    assert (out == 128).all()


def test_resize_center_crop_drops_top_bottom_borders():
    img = np.full((400, 200, 3), 50, np.uint8)  # tall: crop rows
    img[:30] = 255
    img[-30:] = 0
    out = resize_center_crop(img, 100, 100)  # shrink by 2, keep rows 100..300
    assert out.shape == (100, 100, 3)
    assert (out == 50).all()


def test_resize_center_crop_keeps_aspect_and_centre():
    # a centred square of side 100 in a 640x480 frame stays a square
    img = np.zeros((480, 640, 3), np.uint8)
    img[190:290, 270:370] = 255
    out = resize_center_crop(img, 224, 224)
    ys, xs = np.nonzero(out[..., 0] > 127)
    hgt, wid = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    assert abs(hgt - wid) <= 1
    assert abs(hgt - 100 * 224 / 480) <= 1.5
    assert abs((ys.min() + ys.max()) / 2 - 111.5) <= 1 and abs((xs.min() + xs.max()) / 2 - 111.5) <= 1


def test_resize_center_crop_noop_and_shapes():
    img = _random_rgb(224, 224)
    assert resize_center_crop(img, 224, 224) is img
    assert resize_center_crop(_random_rgb(480, 640), 320, 240).shape == (240, 320, 3)
    assert resize_center_crop(_random_rgb(5, 7), 224, 224).shape == (224, 224, 3)
    assert resize_center_crop(_random_rgb(1, 1), 3, 2).shape == (2, 3, 3)
    assert resize_center_crop(np.zeros((10, 20), np.uint8), 4, 4).shape == (4, 4)
    # same aspect, only scaling: uniform image stays uniform
    out = resize_center_crop(np.full((448, 448, 3), 77, np.uint8), 224, 224)
    assert (out == 77).all()
    # pure crop (no scaling needed) returns a contiguous copy
    src = _random_rgb(224, 300)
    out = resize_center_crop(src, 224, 224)
    np.testing.assert_array_equal(out, src[:, 38:262])
    assert out.flags.c_contiguous


def test_resize_center_crop_errors():
    assert _err(resize_center_crop, _random_rgb(4, 4), 0, 4).reason == "bad_size"
    assert _err(resize_center_crop, np.zeros((0, 4, 3), np.uint8), 4, 4).reason == "empty"
    assert _err(resize_center_crop, np.zeros((2, 2, 2, 2), np.uint8), 4, 4).reason == "bad_array"


# --------------------------------------------------------------------------- hygiene

def test_core_does_not_import_ros():
    import importlib
    import subprocess

    code = ("import sys, lrm_ros.vision.image; "
            "bad=[m for m in sys.modules if m.startswith('rclpy') or m.endswith('_msgs') "
            "or '_msgs.' in m]; print(bad); assert not bad")
    import os
    from pathlib import Path

    root = Path(importlib.import_module("lrm_ros").__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
