"""An annotated copy of what the camera saw, written with cv2.VideoWriter.

A recording is copied frame for frame at its own rate. A live source is written on the wall clock
(each processed frame repeated, or skipped, to fill the time it stood for), so the file plays at the
speed things happened however fast the board processed them. cv2.VideoWriter reports no write
errors, so the free space is checked as the file grows: a full disk stops the recording with one line, and
recognition and the other outputs go on. A camera's recording never writes over an existing file: a service
restarted after a power cut, a lost camera or a reboot would empty the recording it was meant to keep; the run
takes NAME-2.EXT, NAME-3.EXT, ... instead (a video file's annotated copy is made again in place).

A camera that runs for days can write segments instead of one file (``segment_s``): NAME-YYYYmmdd-HHMMSS.EXT,
each that many seconds of video; the oldest (earlier runs' segments of the same NAME included) are removed
beyond ``keep`` or when the disk fills (loop recording: the run goes on).
"""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import InputError
from .annotate import annotate

# .mkv: MPEG-4 in Matroska, as small as .mp4 and still readable after a kill or a power cut (an .mp4's index is
# written last); .avi: MJPEG, ~10x larger, but OpenCV writes it without FFmpeg
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


class AnnotatedVideoSink:
    """Opens the writer on the first frame (its size is known only then); frames of another size are scaled."""

    MAX_HOLD_S = 2  # a live frame stands for at most this long in the file
    MIN_FREE_BYTES = 4 << 20  # stop before the disk is full: the last frames and the file's index still fit
    # ... and leave the rest of the system room too (on a Pi the card is the root file system: the journal, apt,
    # the gallery): 5% of the file system, at most 1 GB
    FREE_FRACTION, MAX_FLOOR_BYTES = 0.05, 1 << 30

    def __init__(self, path: str, fps: float | None = None, live: bool = False, source: str | None = None,
                 segment_s: float | None = None, keep: int | None = None):
        self.path = Path(path)
        if segment_s is not None and not segment_s > 0:
            raise InputError(f"--output-segment must be a number of minutes above 0, got {segment_s / 60:g}")
        if keep is not None and keep < 1:
            raise InputError(f"--output-keep must be a number of segments >= 1, got {keep}")
        if keep is not None and segment_s is None:
            raise InputError("--output-keep needs --output-segment MINUTES (it keeps that many segments)")
        self.segment_s, self.keep = segment_s, keep
        # segment files on disk, oldest first: an earlier run's (same name, same pattern) count as older ones
        self.segments: list[Path] = self._earlier_segments() if segment_s is not None else []
        self._named: set[Path] = set()  # every name this run has used (a removed segment's is not used again)
        self._segment_start = 0
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC:
            raise InputError(f"--output {path}: expected a video file name ending in {', '.join(FOURCC)}")
        if not self.path.parent.exists():
            raise InputError(f"--output {path}: folder {self.path.parent} does not exist")
        if source is not None and Path(source).exists() and self.path.exists() and os.path.samefile(source, self.path):
            raise InputError(f"--output {path} is the video being read (--source); choose another file name")
        self.fourcc = FOURCC[suffix]
        self.live = live
        self.fps = fps if fps and fps > 0 else 15.0
        if live:
            self.fps = min(self.fps, 15.0)  # wall-clock frames: more would only repeat the same picture
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._t0: float | None = None
        self._last: np.ndarray | None = None
        self._checked_at = 0
        self.frames = 0  # processed frames written (a live frame repeated counts once)
        self.written = 0  # frames in the file
        self.closed = False
        self.stopped: str | None = None  # why the recording stopped while the run goes on (a full disk)
        self.log = lambda msg: print(f"edgeembed: {msg}", file=sys.stderr, flush=True)

    def on_frame(self, record: Any, rgb: np.ndarray) -> None:
        if self.closed:  # opening the writer again would start the finished file over
            raise InputError(f"the annotated video {self.path} is closed; make a new AnnotatedVideoSink for more frames")
        if self.stopped:
            return
        img = annotate(rgb, record)
        if self._writer is None:
            self._size = (img.shape[1], img.shape[0])
            self._open(self._segment_path() if self.segment_s else self._free_path())
        if (img.shape[1], img.shape[0]) != self._size:
            img = cv2.resize(img, self._size)
        if self.live:  # the previous picture fills the time until this one came, at self.fps
            if self._t0 is None:
                self._t0 = record.time
            pad = int((record.time - self._t0) * self.fps) - self.written
            if pad > self.MAX_HOLD_S * self.fps:  # a long gap (a camera reconnecting) is cut to a few seconds
                self._t0 += (pad - self.MAX_HOLD_S * self.fps) / self.fps
                pad = int(self.MAX_HOLD_S * self.fps)
            if pad < 0:  # processed faster than the file's rate: this slot is filled; show the picture next time
                self._last = img
                return
            for _ in range(pad if self._last is not None else 0):
                self._write(self._last)
                if self.stopped:
                    return
            self._last = img
        self._write(img)
        self.frames += 1

    def _open(self, path: Path) -> None:
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self._size)
        if not self._writer.isOpened():
            self._writer = None
            hint = "is the folder writable?" if self.path.suffix.lower() == ".avi" else "try a .avi name"
            raise InputError(f"cannot write video {path} with codec {self.fourcc} ({hint})")
        if self.segment_s:
            self.segments.append(path)
            self._named.add(path)
            self._segment_start = self.written
            while self.keep is not None and len(self.segments) > self.keep:
                self._drop_oldest()

    def _free_path(self) -> Path:
        """--output; for a camera, NAME-2.EXT, NAME-3.EXT, ... when it exists already (an earlier run's recording),
        each name taken with O_EXCL, so two runs started together do not write one file. A video file's annotated
        copy is made again in place, as a script re-running it expects."""
        if not self.live:
            return self.path
        path, n = self.path, 1
        while True:
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                break
            except FileExistsError:
                n += 1
                path = self.path.with_name(f"{self.path.stem}-{n}{self.path.suffix}")
        if path != self.path:
            self.log(f"{self.path} holds an earlier run's recording, which is kept: this run records to {path.name} "
                     "(remove the file, or give another --output, to use its name)")
        self.path = path
        return path

    def _drop_oldest(self) -> None:
        self.segments.pop(0).unlink(missing_ok=True)

    def _earlier_segments(self) -> list[Path]:
        pattern = re.compile(re.escape(self.path.stem) + r"-\d{8}-\d{6}(-\d+)?" + re.escape(self.path.suffix) + "$")
        found = [f for f in self.path.parent.glob(self.path.stem + "-*" + self.path.suffix) if pattern.match(f.name)]
        return sorted(found, key=lambda f: f.stat().st_mtime_ns)

    def _segment_path(self) -> Path:
        """NAME-YYYYmmdd-HHMMSS.EXT beside --output, from the local time the segment starts (-2, -3, ... if taken)."""
        stem = f"{self.path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = self.path.with_name(stem + self.path.suffix), 1
        while path.exists() or path in self._named:
            n += 1
            path = self.path.with_name(f"{stem}-{n}{self.path.suffix}")
        return path

    def _write(self, img: np.ndarray) -> None:
        if self.segment_s and self.written - self._segment_start >= self.segment_s * self.fps:
            self._writer.release()  # the segment is complete: the next one starts with this frame
            self._open(self._segment_path())
        self._writer.write(img)
        self.written += 1
        if self.written - self._checked_at >= 30 or self.written == 1:
            self._checked_at = self.written
            self._check_space()

    def _floor(self, st: os.statvfs_result) -> int:
        return max(self.MIN_FREE_BYTES, min(int(self.FREE_FRACTION * st.f_blocks * st.f_frsize), self.MAX_FLOOR_BYTES))

    def _check_space(self) -> None:
        try:
            st = os.statvfs(self.path.parent)
        except (OSError, AttributeError):  # no statvfs (Windows): nothing to check with
            return
        floor = self._floor(st)
        # loop recording: the oldest finished segments (earlier runs' included) make room before recording stops
        while st.f_bavail * st.f_frsize < floor and len(self.segments) > 1:
            self._drop_oldest()
            st = os.statvfs(self.path.parent)
        if st.f_bavail * st.f_frsize < floor:
            # the file is closed complete (readable, indexed); recognition, MQTT and the rest are not stopped for it
            where = self.segments[-1] if self.segments else self.path
            self.stopped = (f"the disk is (almost) full ({st.f_bavail * st.f_frsize >> 20} MB free, "
                            f"{floor >> 20} MB kept for the system)")
            self._writer.release()
            self._writer = None
            self.log(f"warning: recording stopped: {self.stopped}; {where} keeps its {self.frames} frames; "
                     "recognition and the other outputs go on. Free some space and restart to record again, or "
                     "record in a loop with --output-segment MINUTES (the oldest segments make room)")

    def on_event(self, event: dict) -> None:
        pass

    def close(self) -> None:
        self.closed = True
        if self._writer is not None:
            self._writer.release()
            self._writer = None
