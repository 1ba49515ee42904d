"""OpenCV VideoCapture sources: USB cameras, /dev/video*, RTSP/HTTP streams, GStreamer pipelines, video files.

A file ends cleanly. A live source that stops delivering frames (network drop, camera
unplugged, server restarted) is reopened with exponential back-off; each drop and each retry
is reported once through ``on_status``, and after ``reconnect_timeout`` seconds without a
frame the source gives up with one SourceError line.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ..errors import SourceError, SourceUnavailableError
from ..preprocess import quiet_opencv_logs, to_rgb
from .base import FrameSource, StatusCallback

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
OPEN_TIMEOUT_MS = 5000
CUT_SHORT = 0.9  # a file that gives fewer than this share of the frames its header announces is called cut short
READ_TIMEOUT_MS = 5000


def classify(spec: str) -> str:
    """camera | stream | gstreamer | file, from the text the user gave."""
    s = spec.strip()
    if re.fullmatch(r"\d+", s) or re.fullmatch(r"/dev/video\d+", s):
        return "camera"
    if s.lower().startswith(URL_SCHEMES):
        return "stream"
    if "!" in s and not os.path.exists(s):
        return "gstreamer"
    return "file"


def _quiet_opencv() -> None:
    """OpenCV and FFmpeg print their own lines when a device or file is bad; the user gets ours instead.

    OPENCV_FFMPEG_LOGLEVEL=-8 (AV_LOG_QUIET) is read when FFmpeg is first used; set it yourself to debug.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    quiet_opencv_logs()


class OpenCVSource(FrameSource):
    """One cv2.VideoCapture, reopened with back-off when a live source drops."""

    def __init__(self, spec: str, resolution: tuple[int, int] | None = None, roi=None,
                 on_status: StatusCallback | None = None, reconnect_timeout: float = 60.0,
                 backoff_start: float = 0.5, backoff_max: float = 8.0):
        super().__init__(resolution, roi, on_status)
        self.spec = spec.strip()
        self.kind = classify(self.spec)
        self.live = self.kind != "file"
        self.name = {"camera": "camera", "stream": "stream", "gstreamer": "GStreamer pipeline", "file": "video"}[self.kind] \
            + f" {self.spec}"
        self.reconnect_timeout = reconnect_timeout
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.drops = 0
        self.retries = 0
        self._cap: cv2.VideoCapture | None = None
        self._stop = threading.Event()

    # -- connecting
    def _capture(self) -> cv2.VideoCapture:
        _quiet_opencv()
        s = self.spec
        if self.kind == "camera":
            index = int(s) if s.isdigit() else int(s[len("/dev/video"):])
            if sys.platform.startswith("linux") and not os.path.exists(f"/dev/video{index}"):
                return cv2.VideoCapture()  # not plugged in (or gone): OpenCV's V4L2 probe would only add its warnings
            cap = cv2.VideoCapture(index, cv2.CAP_V4L2 if os.name == "posix" else cv2.CAP_ANY)
            if cap.isOpened():
                cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
                if self.resolution:
                    cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.resolution[0])
                    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.resolution[1])
            return cap
        if self.kind == "stream":
            if s.lower().startswith(("rtsp://", "rtsps://")):
                # RTSP over TCP: UDP loses packets on Wi-Fi and smears frames; set the variable yourself to change it
                os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
            return cv2.VideoCapture(s, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                                                        cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS])
        if self.kind == "gstreamer":
            return cv2.VideoCapture(s, cv2.CAP_GSTREAMER)
        return cv2.VideoCapture(s, cv2.CAP_FFMPEG)

    def _open(self) -> None:
        if self.kind == "file":
            p = Path(self.spec)
            if not p.exists():
                raise SourceError(f"source not found: {self.spec} (expected a video file, a folder of images, a camera "
                                  "index like 0, /dev/videoN, an rtsp:// or http:// URL, a GStreamer pipeline, or picamera2)")
            if p.is_dir():
                raise SourceError(f"{self.spec} is a folder; open it as a folder source")
        self._stop.clear()
        cap = self._capture()
        if not cap.isOpened():
            cap.release()
            raise (SourceError if self.kind == "file" else SourceUnavailableError)(self._open_failure())
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.native_fps = float(fps) if fps and 0 < fps < 1000 else None
        if self.kind == "stream" and self.spec.lower().startswith(("http://", "https://")) \
                and cap.get(cv2.CAP_PROP_FRAME_COUNT) > 0:
            # a video file served over HTTP (it has a length; a camera's stream has none): read it as a
            # recording, every frame in turn, ending at its end, not as a camera that drops and reconnects
            self.live = False
            self.name = "video"

    def _open_failure(self) -> str:
        if self.kind == "camera":
            dev = self.spec if self.spec.startswith("/dev/") else f"/dev/video{self.spec}"
            there = "exists but cannot be opened (is another program using it? are you in the 'video' group?)" \
                if os.path.exists(dev) else "does not exist (is the camera plugged in? see: ls /dev/video*)"
            return f"cannot open camera {self.spec}: {dev} {there}"
        if self.kind == "stream":
            return (f"cannot open stream {self.spec} within {OPEN_TIMEOUT_MS // 1000} s (is the server up and the URL "
                    "right? try it with: ffplay URL)")
        if self.kind == "gstreamer":
            gst = "yes" if "GStreamer:                   YES" in cv2.getBuildInformation() else "no"
            return (f"cannot open GStreamer pipeline {self.spec!r} (this OpenCV has GStreamer support: {gst}; "
                    "pip's opencv-python has none: use the OS's python3-opencv)")
        if Path(self.spec).suffix.lower() in (".mp4", ".mov", ".m4v"):
            return (f"cannot open {self.spec}: not a video OpenCV's FFmpeg can decode, or an .mp4/.mov whose recording "
                    "was stopped before it finished (it has no index then, and nothing in it can be read; record to "
                    ".mkv, which stays readable)")
        return f"cannot open {self.spec}: not a video OpenCV's FFmpeg can decode (expected .mp4, .avi, .mkv, ...)"

    def _close(self) -> None:
        self._stop.set()
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def interrupt(self) -> None:
        """Stop a back-off wait from another thread (the pipeline calls this on shutdown)."""
        self._stop.set()

    # -- frames
    def _grab(self) -> np.ndarray | None:
        cap = self._cap
        if cap is None:
            return None
        ok, bgr = cap.read()
        if not ok or bgr is None or bgr.size == 0:
            return None
        return self._fit_resolution(to_rgb(bgr, "BGR"))

    def _read(self) -> np.ndarray | None:
        rgb = self._grab()
        if rgb is None and self.kind == "file" and not self._stop.is_set():
            self._note_cut_short()
        if rgb is not None or not self.live or self._stop.is_set():
            return rgb
        return self._reconnect()

    def _note_cut_short(self) -> None:
        """A video file that ends well before the length its header gives (a copy cut off, a recording killed) says
        so: it ended with exit 0 and no word, as if the whole file had been read."""
        expected = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)) if self._cap is not None else 0
        read = self._count
        if expected > 0 and read < CUT_SHORT * expected:  # the header's count is an estimate in some containers
            self.on_status("source_cut_short", f"{self.name}: the file ended after {read} of the {expected} frames "
                           "its header announces; it is cut short (copy it again, or check the recording)",
                           {"source": self.spec, "frames_read": read, "frames_announced": expected})

    def _reconnect(self) -> np.ndarray | None:
        """Reopen a dropped live source with exponential back-off; None if stopped meanwhile."""
        self.drops += 1
        self.on_status("source_dropped", f"{self.name}: no frame, the source dropped; reconnecting "
                       f"(back-off {self.backoff_start:g} s doubling to {self.backoff_max:g} s, giving up after "
                       f"{self.reconnect_timeout:g} s)", {"source": self.spec, "drops": self.drops})
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        start = time.monotonic()
        delay = self.backoff_start
        attempt = 0
        while not self._stop.is_set():
            left = self.reconnect_timeout - (time.monotonic() - start)
            if left <= 0:
                raise SourceUnavailableError(f"{self.name}: gave up after {self.reconnect_timeout:g} s and {attempt} reconnect "
                                  "attempts without a frame; check the camera or stream, then restart")
            waited = min(delay, left)
            if self._stop.wait(waited):
                return None
            attempt += 1
            self.retries += 1
            self.on_status("source_retry", f"{self.name}: reconnect attempt {attempt} after {waited:.1f} s",
                           {"source": self.spec, "attempt": attempt, "delay_s": waited})
            cap = self._capture()
            if cap.isOpened():
                self._cap = cap
                rgb = self._grab()
                if rgb is not None:
                    self.on_status("source_resumed", f"{self.name}: resumed after {time.monotonic() - start:.1f} s "
                                   f"({attempt} attempts)", {"source": self.spec, "attempts": attempt,
                                                             "down_s": round(time.monotonic() - start, 3)})
                    return rgb
                cap.release()
                self._cap = None
            else:
                cap.release()
            delay = min(delay * 2, self.backoff_max)
        return None

    def describe(self) -> dict:
        d = super().describe()
        d.update(kind=self.kind, fps=self.native_fps)
        return d
