"""Calibration data for face embedders: aligned face crops, exactly as the runtime makes them.

A face model sees only aligned crops on the device, so it must be calibrated on aligned
crops: each picture goes through the runtime's own detector and alignment
(edgeembed.face), never a re-implementation, and pictures without a face are skipped.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeembed.errors import ImageError, InputError
from edgeembed.face.align import AlignmentTemplate, align_face, default_template
from edgeembed.face.detector import FaceDetector
from edgeembed.preprocess import list_images, read_image
from edgeembed.progress import progress


def aligned_face_crops(folder: str | os.PathLike | Sequence[str | os.PathLike], size: int | Sequence[int] = 112,
                       template: AlignmentTemplate | None = None, limit: int | None = None,
                       detector: str = "short", show_progress: bool = True, name: str | None = None) -> np.ndarray:
    """(N, H, W, 3) RGB uint8: the largest face of each image under ``folder`` (recursively), aligned.

    ``folder`` may also be a list of image files or folders (``name`` then says what they are, in errors).
    ``limit`` caps N, picking images evenly across the sorted list so every person is represented.
    """
    files = _image_files(folder)
    if limit is not None and len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    tpl = template if template is not None else default_template(size)
    if isinstance(size, int):
        size = (size, size)
    crops = []
    with FaceDetector(detector) as det:
        for f in progress(files, desc="aligning faces", enabled=show_progress):
            try:
                rgb = read_image(f)
            except ImageError:
                continue
            face = det.detect(rgb).pick("largest")
            if face is not None:
                crops.append(align_face(rgb, face.keypoints, tpl, size))
    if not crops:
        raise InputError(f"no face found in the {len(files)} image(s) of {name or folder}; calibration and its fidelity "
                         "check need photos of faces")
    return np.stack(crops)


def _image_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files += list_images(p, recursive=True)
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"calibration faces not found: {p} (expected a folder of face photos or image files)")
    if not files:
        raise InputError(f"no images in {source} (expected face photos: .jpg, .png, .pgm, ...)")
    return files
