#!/usr/bin/env python3
"""Micro-benchmark for lrm_ros image conversion (median of N runs per case; no assertions).

Run:  PYTHONPATH=/work/main /work/main/.venv/bin/python bench/bench_image.py [--runs 200]

Cases: raw rgb8/bgr8 224x224 decode; 640x480 -> 224x224 decode + resize_center_crop;
JPEG decode at both sizes; message building/reading through sensor_msgs when installed.
"Naive" baselines are what one typically writes by hand: ``bytes(data)`` + a numpy
``[..., ::-1]`` channel-swap copy, ``np.array(list(msg.data))`` for messages, ``msg.data = rgb.ravel()`` (numpy array assigned to
an rclpy message), and resize-everything-then-crop with the default INTER_LINEAR (faster
than ours, but aliased when shrinking: it is a speed reference, not a quality peer).
"""

from __future__ import annotations

import argparse
import array

import cv2
import numpy as np
from timing import median_time

from lrm_ros.vision.image import (
    decode_compressed,
    decode_raw,
    encode_compressed,
    encode_raw,
    resize_center_crop,
)


def median_us(fn, runs: int) -> float:
    return median_time(fn, runs, warmup=1)[0] * 1e6


def naive_decode_bgr(data, h, w):
    # typical hand-written numpy version: bytes copy, reshape, reversed-channel copy
    a = np.frombuffer(bytes(data), dtype=np.uint8).reshape(h, w, 3)
    return np.ascontiguousarray(a[:, :, ::-1])


def naive_resize_center_crop(rgb, width, height):
    # resize whole image (INTER_LINEAR default), then crop
    h, w = rgb.shape[:2]
    s = max(width / w, height / h)
    nw, nh = max(width, round(w * s)), max(height, round(h * s))
    big = cv2.resize(rgb, (nw, nh))
    y0, x0 = (nh - height) // 2, (nw - width) // 2
    return big[y0:y0 + height, x0:x0 + width].copy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    n = args.runs
    rng = np.random.default_rng(0)
    rows = []

    def add(name, fn, naive=None):
        t = median_us(fn, n)
        tn = median_us(naive, max(5, n // 10)) if naive is not None else None
        rows.append((name, t, tn))

    # synthetic "scene": gradients + blurred checkerboard + mild noise (JPEG-realistic sizes)
    y, x = np.mgrid[0:480, 0:640]
    big = np.stack([x * 255 // 639, y * 255 // 479, ((x // 24 + y // 24) % 2) * 180], -1)
    big = cv2.GaussianBlur(big.astype(np.uint8), (5, 5), 1.2)
    big = cv2.add(big, rng.integers(0, 6, big.shape, dtype=np.uint8))
    small = np.ascontiguousarray(big[128:352, 208:432])

    for enc in ("rgb8", "bgr8"):
        data, step = encode_raw(small, enc)
        arr = array.array("B", data)  # what rclpy messages hold
        add(f"raw {enc} 224x224 decode (array.array data)",
            lambda enc=enc, arr=arr, step=step: decode_raw(enc, 224, 224, step, arr),
            (lambda arr=arr: naive_decode_bgr(arr, 224, 224)) if enc == "bgr8" else None)

    for enc in ("rgb8", "bgr8"):
        data, step = encode_raw(big, enc)
        arr = array.array("B", data)
        add(f"raw {enc} 640x480 -> 224x224 decode+resize_center_crop",
            lambda enc=enc, arr=arr, step=step: resize_center_crop(
                decode_raw(enc, 480, 640, step, arr), 224, 224),
            (lambda arr=arr: naive_resize_center_crop(naive_decode_bgr(arr, 480, 640), 224, 224))
            if enc == "bgr8" else None)

    rgb640 = decode_raw("rgb8", 480, 640, 640 * 3, encode_raw(big, "rgb8")[0])
    add("resize_center_crop only 640x480 -> 224x224",
        lambda: resize_center_crop(rgb640, 224, 224),
        lambda: naive_resize_center_crop(rgb640, 224, 224))
    add("  (exact_area=True: plain cv2.INTER_AREA)",
        lambda: resize_center_crop(rgb640, 224, 224, exact_area=True))

    for label, img in (("224x224", small), ("640x480", big)):
        jpg = array.array("B", encode_compressed(img, "jpeg", 90))
        add(f"jpeg decode {label} ({len(jpg)} B)",
            lambda jpg=jpg: decode_compressed("rgb8; jpeg compressed bgr8", jpg),
            lambda jpg=jpg: cv2.cvtColor(cv2.imdecode(np.array(list(jpg), np.uint8),
                                                      cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))

    try:
        from sensor_msgs.msg import Image

        from lrm_ros.ros.image_msgs import image_msg_to_rgb, rgb_to_image_msg
    except ImportError:
        Image = None
    if Image is not None:
        for label, img in (("224x224", small), ("640x480", big)):
            msg = rgb_to_image_msg(img)

            def naive_build(img=img):
                m = Image()
                m.height, m.width, m.encoding, m.step = img.shape[0], img.shape[1], "rgb8", \
                    img.shape[1] * 3
                m.data = img.ravel()  # numpy array -> array.array element by element
                return m

            def bytes_build(img=img):
                m = Image()
                m.data = img.tobytes()  # one copy to bytes + array('B', bytes) copy
                return m

            add(f"rgb_to_image_msg rgb8 {label}", lambda img=img: rgb_to_image_msg(img),
                naive_build)
            add(f"  (alt: msg.data = rgb.tobytes()) {label}", bytes_build)
            add(f"image_msg_to_rgb rgb8 {label}", lambda msg=msg: image_msg_to_rgb(msg),
                lambda msg=msg: np.array(list(msg.data), np.uint8).reshape(
                    msg.height, msg.width, 3))

    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'median':>10}  {'naive':>10}  {'speed-up':>8}   (runs={n})")
    for name, t, tn in rows:
        extra = f"{tn:8.1f} us  {tn / t:7.1f}x" if tn is not None else ""
        print(f"{name:<{width}}  {t:7.1f} us  {extra}")


if __name__ == "__main__":
    main()
