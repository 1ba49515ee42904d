"""Warp a detected face onto the face embedder's canonical template (one similarity transform).

Face embedders are trained on crops whose eyes, nose and mouth sit at fixed pixels. A model
says where through its spec: ``extra["face_alignment"] = {"keypoints": [...], "template":
[[x, y], ...]}`` in its input pixels, keypoint names from BlazeFace's order. Without it the
ArcFace 112x112 5-point template is used, reduced to BlazeFace's 4 central points (the mouth
centre is the mean of the mouth corners) and scaled to the model's input size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from ..errors import InputError, ModelError
from .detector import KEYPOINT_NAMES

ARCFACE_SIZE = 112
DEFAULT_KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center")
DEFAULT_TEMPLATE_112 = np.array([
    [38.2946, 51.6963],  # right eye (image left)
    [73.5318, 51.5014],  # left eye
    [56.0252, 71.7366],  # nose tip
    [(41.5493 + 70.7299) / 2, (92.3655 + 92.2041) / 2],  # mouth centre
], np.float32)


@dataclass(frozen=True)
class AlignmentTemplate:
    """Where the named keypoints must land in the embedder's (height, width) input."""

    keypoints: tuple[str, ...]
    points: np.ndarray  # (K, 2) x, y in input pixels
    size: tuple[int, int]  # (height, width)

    @property
    def indices(self) -> list[int]:
        return [KEYPOINT_NAMES.index(k) for k in self.keypoints]

    def source_points(self, keypoints: np.ndarray) -> np.ndarray:
        """The template's keypoints picked out of a face's 6 BlazeFace keypoints."""
        return np.asarray(keypoints, np.float32)[self.indices]


def default_template(size: int | Sequence[int] = ARCFACE_SIZE) -> AlignmentTemplate:
    """The ArcFace template (4 points) scaled to ``size`` (an int, or (height, width))."""
    h, w = _hw(size)
    pts = DEFAULT_TEMPLATE_112 * np.array([w / ARCFACE_SIZE, h / ARCFACE_SIZE], np.float32)
    return AlignmentTemplate(DEFAULT_KEYPOINTS, pts, (h, w))


def template_for(spec_extra: dict[str, Any] | None, size: int | Sequence[int]) -> AlignmentTemplate:
    """The template a face embedder asks for in its spec's ``extra``, else the default one at ``size``."""
    h, w = _hw(size)
    info = (spec_extra or {}).get("face_alignment")
    if not info:
        return default_template((h, w))
    try:
        names = tuple(str(k) for k in info["keypoints"])
        pts = np.asarray(info["template"], np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"the model's face_alignment metadata is malformed ({exc}); expected "
                         "{'keypoints': [names], 'template': [[x, y], ...]}") from None
    unknown = [k for k in names if k not in KEYPOINT_NAMES]
    if unknown:
        raise ModelError(f"the model's face_alignment names unknown keypoints {unknown}; expected some of {list(KEYPOINT_NAMES)}")
    if pts.shape != (len(names), 2) or len(names) < 2:
        raise ModelError(f"the model's face_alignment template must be {len(names)} [x, y] pairs (at least 2), got shape {pts.shape}")
    return AlignmentTemplate(names, pts, (h, w))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping ``src`` onto ``dst`` (Umeyama), 2x3."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    if var_s < 1e-12:
        raise InputError("face keypoints coincide; cannot align the face")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var_s
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align_face(rgb: np.ndarray, keypoints: np.ndarray, template: AlignmentTemplate | np.ndarray,
               size: int | Sequence[int] | None = None) -> np.ndarray:
    """The aligned face crop (height, width, 3) uint8.

    ``keypoints``: the face's 6 BlazeFace keypoints (or exactly the template's points, in its
    order); ``template``: an AlignmentTemplate, or a (K, 2) array of target points (then
    ``size`` = int or (height, width) is required).
    """
    if not isinstance(template, AlignmentTemplate):
        if size is None:
            raise InputError("align_face needs size when template is a plain array of points")
        pts = np.asarray(template, np.float32)
        names = DEFAULT_KEYPOINTS if len(pts) == 4 else KEYPOINT_NAMES[: len(pts)]
        template = AlignmentTemplate(tuple(names), pts, _hw(size))
    h, w = template.size if size is None else _hw(size)
    kp = np.asarray(keypoints, np.float32)
    n = len(template.points)
    if kp.ndim != 2 or kp.shape[1] != 2 or len(kp) not in (n, len(KEYPOINT_NAMES)):
        raise InputError(f"keypoints must be ({len(KEYPOINT_NAMES)}, 2) BlazeFace points or ({n}, 2) template points, "
                         f"got {kp.shape}")
    if not np.isfinite(kp).all():
        raise InputError("keypoints hold NaN or infinite values")
    src = kp if len(kp) == n else template.source_points(kp)
    m = similarity_transform(src, template.points)
    return cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = (int(v) for v in size)
    return h, w
