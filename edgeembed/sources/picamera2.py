"""Raspberry Pi cameras through picamera2: every fact about its buffer formats lives here.

picamera2 names formats by libcamera's DRM fourcc convention, which reads backwards to an
OpenCV user: ``RGB888`` is B,G,R in memory, ``BGR888`` is R,G,B, ``XRGB8888`` is B,G,R,X and
``XBGR8888`` is R,G,B,X. ``YUV420`` (the only lores format on a Pi 4) arrives as one
(height * 3/2, stride) array: the Y plane, then the U and V planes at half the stride, with
the stride's padding columns still on the right; it is BT.601 limited range, which is what
OpenCV's I420 conversion decodes. Sources are written ``picamera2``, ``picamera2:1`` (camera
number) and may carry options: ``picamera2?format=XRGB8888&lores=320x240``.

On a Pi, picamera2 comes from the OS (``sudo apt install python3-picamera2``), not from pip,
and is seen from a venv made with ``--system-site-packages``; a numpy installed by pip into
that venv can break the OS's compiled modules, which is reported with the fix.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import cv2
import numpy as np

from ..errors import InputError, SourceError, SourceUnavailableError
from ..preprocess import to_rgb
from .base import FrameSource, StatusCallback, parse_resolution

# picamera2 format -> the layout name to_rgb understands (channel order in memory)
PACKED_LAYOUT = {"RGB888": "BGR", "BGR888": "RGB", "XRGB8888": "BGRX", "XBGR8888": "RGBX"}
PLANAR_YUV = {"YUV420": cv2.COLOR_YUV2RGB_I420, "YVU420": cv2.COLOR_YUV2RGB_YV12}
FORMATS = tuple(PACKED_LAYOUT) + tuple(PLANAR_YUV)
DEFAULT_MAIN_FORMAT = "RGB888"
DEFAULT_LORES_FORMAT = "YUV420"  # the one lores format every Pi supports
DEFAULT_MAIN_SIZE = (1280, 720)
DEFAULT_LORES_SIZE = (320, 240)

MISSING_HELP = ("picamera2 is not installed here: on Raspberry Pi OS install it from the OS with "
                "`sudo apt install python3-picamera2` (not from pip) and create your venv with "
                "`python3 -m venv --system-site-packages VENV` so the venv can see it")


def picamera2_to_rgb(array: np.ndarray, fmt: str, size: tuple[int, int]) -> np.ndarray:
    """One array from ``Picamera2.capture_array`` in format ``fmt`` -> RGB uint8 (height, width, 3).

    ``size`` is the stream's configured (width, height); it trims the stride padding that
    YUV420 arrays keep on their right-hand side.
    """
    w, h = size
    if fmt in PACKED_LAYOUT:
        if array.ndim != 3 or array.shape[2] != len(PACKED_LAYOUT[fmt]):
            raise SourceError(f"picamera2 {fmt} frame should be (H, W, {len(PACKED_LAYOUT[fmt])}), got {array.shape}")
        return to_rgb(array[:h, :w], PACKED_LAYOUT[fmt])
    if fmt in PLANAR_YUV:
        if array.ndim != 2 or array.shape[0] != h * 3 // 2 or array.shape[1] < w or h % 2:
            raise SourceError(f"picamera2 {fmt} frame of a {w}x{h} stream should be ({h * 3 // 2}, stride >= {w}), "
                              f"got {array.shape}")
        rgb = cv2.cvtColor(np.ascontiguousarray(array), PLANAR_YUV[fmt])
        return np.ascontiguousarray(rgb[:, :w])
    raise SourceError(f"picamera2 format {fmt} is not supported; use one of {', '.join(FORMATS)}")


def import_picamera2() -> Any:
    """The Picamera2 class, or one SourceError line saying how to install it or fix its numpy."""
    try:
        from picamera2 import Picamera2  # noqa: PLC0415 - only on a Pi
    except Exception as exc:  # ImportError, or ValueError/RuntimeError from a numpy ABI mismatch
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "numpy" in str(exc).lower() or "_ARRAY_API" in str(exc):
            raise SourceError(
                f"picamera2 failed to import over a numpy mismatch ({text}): the OS's picamera2 and simplejpeg are "
                f"built for the OS's numpy, but this environment imports numpy {np.__version__}; in your venv run "
                "`pip uninstall -y numpy` so the OS's python3-numpy is used (or `pip install 'numpy<2'` if the OS "
                "numpy is 1.x), then retry") from None
        if isinstance(exc, ImportError):
            raise SourceError(f"{MISSING_HELP} ({text})") from None
        raise SourceError(f"picamera2 failed to import: {text}") from None
    return Picamera2


def parse_spec(spec: str, stream: str) -> dict[str, Any]:
    """'picamera2:1?format=XRGB8888&lores=320x240' -> camera, format, lores size."""
    head, _, query = spec.partition("?")
    camera = 0
    if ":" in head:
        num = head.split(":", 1)[1]
        if not num.isdigit():
            raise InputError(f"picamera2 source must be picamera2 or picamera2:N (camera number), got {spec!r}")
        camera = int(num)
    opts = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(opts) - {"format", "lores"}
    if unknown:
        raise InputError(f"unknown picamera2 option(s) {', '.join(sorted(unknown))}; known: format, lores")
    fmt = opts.get("format", DEFAULT_LORES_FORMAT if stream == "lores" else DEFAULT_MAIN_FORMAT).upper()
    if fmt not in FORMATS:
        raise InputError(f"picamera2 format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return {"camera": camera, "format": fmt, "lores": parse_resolution(opts.get("lores"))}


class Picamera2Source(FrameSource):
    """A Raspberry Pi camera: the main or lores stream, converted to RGB with the right channel order."""

    live = True

    def __init__(self, spec: str = "picamera2", stream: str = "main", resolution: tuple[int, int] | None = None,
                 roi=None, fps: float | None = None, on_status: StatusCallback | None = None):
        super().__init__(resolution, roi, on_status)
        if stream not in ("main", "lores"):
            raise InputError(f"picamera2 stream must be main or lores, got {stream!r}")
        self.stream = stream
        self.opts = parse_spec(spec, stream)
        self.fps = fps
        self.name = f"picamera2 camera {self.opts['camera']} ({stream}, {self.opts['format']})"
        self._cam: Any = None
        self.size: tuple[int, int] | None = None

    def configuration(self, cam: Any) -> dict:
        """The picamera2 configuration: main always; lores when it is the stream read."""
        fmt = self.opts["format"]
        controls = {"FrameRate": float(self.fps)} if self.fps else {}
        if self.stream == "main":
            main = {"size": self.resolution or DEFAULT_MAIN_SIZE, "format": fmt}
            return cam.create_video_configuration(main=main, controls=controls, buffer_count=4)
        lores_size = self.resolution or self.opts["lores"] or DEFAULT_LORES_SIZE
        main_size = (max(DEFAULT_MAIN_SIZE[0], lores_size[0]), max(DEFAULT_MAIN_SIZE[1], lores_size[1]))
        return cam.create_video_configuration(main={"size": main_size, "format": "YUV420"},
                                              lores={"size": lores_size, "format": fmt},
                                              controls=controls, buffer_count=4)

    def _open(self) -> None:
        Picamera2 = import_picamera2()
        try:
            cam = Picamera2(self.opts["camera"])
        except (IndexError, RuntimeError) as exc:  # not detected (yet), or held by another program: may come back
            raise SourceUnavailableError(f"no Raspberry Pi camera {self.opts['camera']} ({exc}): check the ribbon cable and "
                              "`rpicam-hello --list-cameras`, and that no other program holds the camera") from None
        try:
            cam.configure(self.configuration(cam))
            cam.start()
        except Exception as exc:
            cam.close()
            raise SourceError(f"{self.name} cannot be configured ({exc}); on a Pi 4 the lores stream must be YUV420") \
                from None
        self._cam = cam
        cfg = cam.camera_configuration()[self.stream]
        self.size = tuple(cfg["size"])
        self.opts["format"] = cfg.get("format", self.opts["format"])
        self.native_fps = self.fps

    def _read(self) -> np.ndarray | None:
        try:
            array = self._cam.capture_array(self.stream)
        except Exception as exc:
            raise SourceUnavailableError(f"{self.name} stopped delivering frames ({exc}); check the camera connection") from None
        return picamera2_to_rgb(array, self.opts["format"], self.size)

    def _close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
            finally:
                self._cam.close()
                self._cam = None
