"""The one interface every frame source has: open, iterate RGB frames, close.

A source yields ``Frame`` objects (RGB uint8, H x W x 3, after the region of interest) and
says whether it is *live* (a camera or stream: the pipeline keeps only the newest frame) or
a recording (a file or folder: every frame is processed). Problems while running (a dropped
stream, a retry, an unreadable image in a folder) go to ``on_status`` so the pipeline can
print one line and emit one JSON event for each, instead of the source printing itself.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from ..errors import InputError

StatusCallback = Callable[[str, str, dict], None]  # (kind, one-line message, details)


@dataclass
class Frame:
    """One picture from a source. ``time`` is media time for recordings, monotonic seconds for live sources."""

    index: int
    time: float
    rgb: np.ndarray
    capture_ms: float = 0.0
    origin: str | None = None  # the file a folder source read it from
    prepared: Any = None  # the processor's prepare() output, when the capture thread ran it
    prepare_ms: float = 0.0


MAX_SIDE = 8192  # 8K: larger captures only exhaust a small device's memory


def parse_resolution(text: str | None) -> tuple[int, int] | None:
    """'640x480' -> (640, 480)."""
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().replace("*", "x").split("x"))
    except ValueError:
        raise InputError(f"--resolution must be WIDTHxHEIGHT like 640x480, got {text!r}") from None
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
        raise InputError(f"--resolution must be WIDTHxHEIGHT with each side from 1 to {MAX_SIDE}, got {text!r}")
    return w, h


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    """'x,y,w,h' -> (x, y, w, h) in frame pixels."""
    if not text:
        return None
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--roi must be x,y,w,h in pixels like 100,50,320,240, got {text!r}") from None
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise InputError(f"--roi needs x,y >= 0 and w,h > 0, got {text!r}")
    return x, y, w, h


def crop_roi(rgb: np.ndarray, roi: tuple[int, int, int, int] | None) -> np.ndarray:
    """The region of interest of a frame; an ROI outside the frame is an InputError naming both sizes."""
    if roi is None:
        return rgb
    x, y, w, h = roi
    fh, fw = rgb.shape[:2]
    if x >= fw or y >= fh:
        raise InputError(f"--roi {x},{y},{w},{h} lies outside the {fw}x{fh} frame")
    return rgb[y : min(y + h, fh), x : min(x + w, fw)]


def _print_status(kind: str, message: str, details: dict) -> None:
    import sys

    print(f"edgeembed: {message}", file=sys.stderr, flush=True)


class FrameSource:
    """Base of every source. Subclasses implement ``_open``, ``_read`` and ``_close``.

    ``_read`` returns an RGB frame, or None when a recording has ended. Live sources handle
    their own reconnection inside ``_read`` and raise SourceError when they give up.
    """

    live: bool = False
    name: str = "source"

    def __init__(self, resolution: tuple[int, int] | None = None, roi: tuple[int, int, int, int] | None = None,
                 on_status: StatusCallback | None = None):
        self.resolution = resolution
        self.roi = roi
        self.on_status = on_status or _print_status
        self.native_fps: float | None = None
        self._opened = False
        self._count = 0

    # -- lifetime
    def open(self) -> "FrameSource":
        """Open the device, stream, file or folder (``read`` and iteration do it when needed); opened again after
        ``close``, a recording starts over from frame 0."""
        if not self._opened:
            self._open()
            self._opened = True
            self._count = 0
        return self

    def close(self) -> None:
        if self._opened:
            self._opened = False
            self._close()

    def __enter__(self) -> "FrameSource":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- frames
    def read(self) -> Frame | None:
        """The next frame (ROI applied), or None at the end of a recording. Opens the source first if needed (a
        camera that does not exist is then a SourceError, not a dropped camera waited for)."""
        self.open()
        t0 = time.perf_counter()
        rgb = self._read()
        if rgb is None:
            return None
        rgb = crop_roi(rgb, self.roi)
        ms = (time.perf_counter() - t0) * 1000
        i = self._count
        self._count += 1
        if self.live or not self.native_fps:
            t = time.monotonic()
        else:
            t = i / self.native_fps
        return Frame(i, t, rgb, ms, self._origin())

    def __iter__(self) -> Iterator[Frame]:
        self.open()
        while True:
            f = self.read()
            if f is None:
                return
            yield f

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "live": self.live}

    # -- for subclasses
    def _open(self) -> None:
        raise NotImplementedError

    def _read(self) -> np.ndarray | None:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _origin(self) -> str | None:
        return None

    def _fit_resolution(self, rgb: np.ndarray) -> np.ndarray:
        """Recordings are scaled to the requested resolution (cameras are asked for it instead)."""
        if self.resolution is None:
            return rgb
        w, h = self.resolution
        if rgb.shape[1] == w and rgb.shape[0] == h:
            return rgb
        return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if w < rgb.shape[1] else cv2.INTER_LINEAR)
