"""What another camera would have seen: per-episode image augmentation of recorded episodes.

A real robot's camera differs from the simulator's in pose, field of view, exposure, white
balance, noise and focus. `augment_episode` draws ONE such "camera" per episode and applies
it to every frame, so an episode stays a consistent video (its first and last frames are
seen by the same camera) and labels built from it stay valid:

  view        zoom (crop of `scale` of the image side, i.e. a narrower field of view), pan
              (crop centre moved by up to `shift` of the side) and roll (`rotate_deg`);
  light       brightness (x `brightness`), contrast (x `contrast`) and per-channel gains
              (`color`: white balance / object and table tints);
  sensor      Gaussian noise (std up to `noise` grey levels) and Gaussian blur (sigma up to
              `blur` px).

ROS-free, numpy + OpenCV. Used by `lrm-ros train-lite --augment N` (N augmented copies of every
episode next to the original).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Tuple

import cv2
import numpy as np

__all__ = ["AugmentConfig", "CameraDraw", "CameraView", "draw_camera", "apply_camera", "augment_episode"]


@dataclass(frozen=True)
class AugmentConfig:
    scale: Tuple[float, float] = (0.75, 1.0)      # crop side / image side
    shift: float = 0.08                           # max crop-centre offset, fraction of the side
    rotate_deg: float = 5.0
    brightness: Tuple[float, float] = (0.75, 1.25)
    contrast: Tuple[float, float] = (0.75, 1.25)
    color: float = 0.12                           # per-channel gain in [1 - color, 1 + color]
    noise: float = 6.0                            # max noise std, grey levels
    blur: float = 1.2                             # max blur sigma, px

    def __post_init__(self):
        lo, hi = self.scale
        if not 0.2 <= lo <= hi <= 1.0:
            raise ValueError(f"AugmentConfig.scale must satisfy 0.2 <= lo <= hi <= 1, got {self.scale}")
        for name in ("shift", "rotate_deg", "color", "noise", "blur"):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentConfig.{name} must be >= 0")
        for name in ("brightness", "contrast"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"AugmentConfig.{name} must be (lo, hi) with 0 < lo <= hi")


@dataclass(frozen=True)
class CameraDraw:
    """One drawn camera: the parameters applied to every frame of an episode."""
    scale: float
    dx: float
    dy: float
    angle: float
    brightness: float
    contrast: float
    gains: Tuple[float, float, float]
    noise: float
    blur: float
    noise_seed: int


def draw_camera(rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> CameraDraw:
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    return CameraDraw(scale=u(*cfg.scale), dx=u(-cfg.shift, cfg.shift), dy=u(-cfg.shift, cfg.shift),
                      angle=u(-cfg.rotate_deg, cfg.rotate_deg), brightness=u(*cfg.brightness),
                      contrast=u(*cfg.contrast),
                      gains=tuple(u(1 - cfg.color, 1 + cfg.color) for _ in range(3)),
                      noise=u(0, cfg.noise), blur=u(0, cfg.blur), noise_seed=int(rng.integers(2**31)))


def _affine(cam: CameraDraw, H: int, W: int) -> np.ndarray:
    """Zoom about the (shifted) centre, with roll; the output keeps the input size."""
    m = cv2.getRotationMatrix2D((W / 2 + cam.dx * W, H / 2 + cam.dy * H), cam.angle, 1.0 / cam.scale)
    m[0, 2] -= cam.dx * W
    m[1, 2] -= cam.dy * H
    return m


class CameraView:
    """The frames of an episode as `cam` sees them, computed when indexed (a labeller reads
    only some ticks): `view[t]` is frame t, `len(view)` the number of frames. Contrast is
    taken about the mean colour of the episode's first frame; the noise of frame t is
    seeded by (cam.noise_seed, t), so a frame reads the same every time."""

    def __init__(self, frames: np.ndarray, cam: CameraDraw):
        frames = np.asarray(frames) if not isinstance(frames, CameraView) else frames
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        self.frames, self.cam = frames, cam
        T, H, W, _ = frames.shape
        self.shape, self.dtype, self.ndim = frames.shape, frames.dtype, 4
        self._m = _affine(cam, H, W)
        gains = np.asarray(cam.gains, np.float32) * cam.brightness
        mean = frames[0].reshape(-1, 3).mean(0) if T else np.zeros(3)
        self._a = (cam.contrast * gains).astype(np.float32)
        self._b = ((1.0 - cam.contrast) * mean * gains).astype(np.float32)

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, t):
        if not isinstance(t, (int, np.integer)):
            return np.stack([self[i] for i in range(len(self))[t]])
        cam, (_, H, W, _) = self.cam, self.shape
        img = cv2.warpAffine(self.frames[t], self._m, (W, H), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
        if cam.blur > 0.3:
            img = cv2.GaussianBlur(img, (0, 0), cam.blur)
        x = img.astype(np.float32)
        x *= self._a
        x += self._b
        if cam.noise > 0:
            t = int(t) % len(self)
            x += cam.noise * np.random.default_rng((cam.noise_seed, t)).standard_normal(x.shape, np.float32)
        np.clip(x, 0, 255, out=x)
        return x.astype(np.uint8)

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def apply_camera(frames: np.ndarray, cam: CameraDraw) -> np.ndarray:
    """(T, H, W, 3) uint8 -> the same frames as `cam` sees them (same shape and dtype)."""
    return np.asarray(CameraView(frames, cam))


def augment_episode(ep, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()):
    """A copy of episode `ep` (any dataclass with `frames`) seen by a randomly drawn camera;
    its frames are a CameraView (computed when read, the originals shared)."""
    return replace(ep, frames=CameraView(ep.frames, draw_camera(rng, cfg)))
