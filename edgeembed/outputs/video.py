"""An annotated copy of what the camera saw, written with cv2.VideoWriter."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import InputError
from .annotate import annotate

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class AnnotatedVideoSink:
    """Opens the writer on the first frame (its size is known only then); frames of another size are scaled."""

    def __init__(self, path: str, fps: float | None = None):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC:
            raise InputError(f"--output {path}: expected a video file name ending in {', '.join(FOURCC)}")
        if not self.path.parent.exists():
            raise InputError(f"--output {path}: folder {self.path.parent} does not exist")
        self.fourcc = FOURCC[suffix]
        self.fps = fps if fps and fps > 0 else 15.0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def on_frame(self, record: Any, rgb: np.ndarray) -> None:
        img = annotate(rgb, record)
        if self._writer is None:
            self._size = (img.shape[1], img.shape[0])
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self._size)
            if not self._writer.isOpened():
                self._writer = None
                raise InputError(f"cannot write video {self.path} with codec {self.fourcc} (try a .avi name)")
        if (img.shape[1], img.shape[0]) != self._size:
            img = cv2.resize(img, self._size)
        self._writer.write(img)
        self.frames += 1

    def on_event(self, event: dict) -> None:
        pass

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
