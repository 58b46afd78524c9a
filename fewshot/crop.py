"""Cropping a face out of a photo without aliasing: the one affine resampling every stage shares.

``cv2.warpAffine`` has no area filter (its INTER_AREA falls back to bilinear), so a 1350 px photo
sampled into a 112 or 256 px crop aliases. :func:`warp_crop` first area-downscales the photo
(:func:`prescale`) and then applies the affine, pixel-centre exact. The generator renders, the AU
models' aligned crops and the stage-3 checks all crop real photos this way, so real and synthetic crops
have the same sharpness.
"""

from __future__ import annotations

import cv2
import numpy as np


def transform_scale(m: np.ndarray) -> float:
    """How much a 2x3 affine scales areas, as a length factor."""
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


def area_resize(image: np.ndarray, f: float) -> tuple[np.ndarray, float]:
    """``image`` resized by ``f`` <= 1 with an area filter; returns it and the factor actually applied
    (whole pixels: new width / old width). ``f`` >= 1 returns the image itself and 1."""
    if f >= 1.0:
        return image, 1.0
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, int(round(w * f))), max(1, int(round(h * f)))), interpolation=cv2.INTER_AREA)
    return small, small.shape[1] / w


def prescale(image: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """Downscale an RGB image (INTER_AREA) when it will be sampled at ``scale`` < 0.8 of its
    resolution, so a bilinear remap does not alias; returns the image and the factor applied."""
    if scale >= 0.8:
        return image, 1.0
    return area_resize(image, scale * 1.25)


def warp_crop(image: np.ndarray, m: np.ndarray, size: int | tuple[int, int], border: int = cv2.BORDER_REFLECT) -> np.ndarray:
    """``image`` warped by the 2x3 affine ``m`` into a size x size (or (h, w)) output, without aliasing:
    ``cv2.warpAffine`` has no area filter (INTER_AREA falls back to bilinear), so a strong downscale
    first goes through :func:`prescale`. Real photos cropped this way match the generator's crops."""
    h, w = (size, size) if np.isscalar(size) else size
    ms = np.asarray(m, np.float64).copy()
    small, f = prescale(image, transform_scale(ms))
    if f != 1.0:  # compose with the area resize's pixel-centre map, per axis: x = (x_small + 0.5) / f - 0.5
        fxy = np.array([small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]])
        ms[:, 2] += ms[:, :2] @ (0.5 / fxy - 0.5)
        ms[:, :2] /= fxy
    return cv2.warpAffine(small, ms, (int(w), int(h)), flags=cv2.INTER_LINEAR, borderMode=border)
