"""Shared helpers of the live tests (no tests here): clips from real images, a real MJPEG-over-HTTP server.

Clips are written with cv2.VideoWriter from COIL-20's turntable views (each object turning
through its views), from the never-seen photo dataset of tests/unseen.py, or from ORL's faces
(a door camera: an enrolled person, then a stranger).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from conftest import DATA, REPO, V1_EMBED, run_cli

COIL = DATA / "coil20"
GALLERY_VIEWS = (0, 18, 36, 54)  # 4 views per object, 90 degrees apart


def coil_view(obj: str, view: int) -> np.ndarray:
    """One COIL-20 view as BGR (the files are grayscale PNGs)."""
    return cv2.imread(str(COIL / obj / f"{view:03d}.png"), cv2.IMREAD_COLOR)


def write_clip(path: Path, segments: Sequence[tuple[str | None, Sequence[np.ndarray]]], fps: float = 15.0) -> list:
    """Write BGR frames segment by segment; returns the expected label of every frame."""
    first = segments[0][1][0]
    size = (first.shape[1], first.shape[0])
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert w.isOpened(), f"cv2.VideoWriter cannot write {path}"
    truth = []
    for label, frames in segments:
        for f in frames:
            w.write(cv2.resize(f, size) if (f.shape[1], f.shape[0]) != size else f)
            truth.append(label)
    w.release()
    return truth


def coil_segments(objects: Sequence[str], step: int = 2, labels: dict | None = None):
    """Each object through its 72 views (every ``step``-th): a turntable seen by a camera."""
    return [((labels or {}).get(o, o), [coil_view(o, v) for v in range(0, 72, step)]) for o in objects]


def enroll_coil(gallery: Path, objects: Sequence[str], work: Path, model: Path = V1_EMBED) -> None:
    """A gallery of 4 views per object, enrolled with the real CLI."""
    for o in objects:
        d = work / "enroll" / o
        d.mkdir(parents=True, exist_ok=True)
        for v in GALLERY_VIEWS:
            cv2.imwrite(str(d / f"{v:03d}.png"), coil_view(o, v))
    run_cli("enroll", work / "enroll", "--gallery", gallery, "--model", model, "--quiet", check=True)


DOOR = [("s1", 30), (None, 15), ("stranger", 30), (None, 10)]  # (who, frames): a front door's afternoon


def door_clip(work: Path) -> tuple[Path, Path, list]:
    """A face gallery of ORL's s1..s5 (3 photos each, the shipped face model) and a door camera's clip: s1, nobody,
    s30 (never enrolled), nobody, faces drifting a pixel a frame. Returns (gallery, clip, who is in each frame)."""
    orl = DATA / "orl-faces"
    for p in range(1, 6):
        (work / "people" / f"s{p}").mkdir(parents=True, exist_ok=True)
        for k in (1, 2, 3):
            (work / "people" / f"s{p}" / f"{k}.pgm").symlink_to(orl / f"s{p}" / f"{k}.pgm")
    run_cli("enroll", work / "people", "--gallery", work / "g", "--model", REPO / "models" /
            "dlib_face_resnet_v1_int8.tflite", "--mode", "face", "--quiet", check=True)
    photos = {"s1": (1, (4, 5, 6)), "stranger": (30, (1, 2, 3))}
    clip = work / "door.mkv"
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"FFV1"), 10, (640, 480))  # lossless
    assert out.isOpened()
    truth = []
    for who, n in DOOR:
        for t in range(n):
            frame = np.full((480, 640, 3), 100, np.uint8)
            if who is not None:
                person, ks = photos[who]
                face = cv2.imread(str(orl / f"s{person}" / f"{ks[(t // 10) % 3]}.pgm"))
                frame[150:329, 230 + t:377 + t] = cv2.resize(face, (147, 179))
            out.write(frame)
            truth.append(who)
    out.release()
    return work / "g", clip, truth


def parse_jsonl(text: str) -> tuple[list[dict], list[dict]]:
    """(frame objects, event objects) of `recognize --json` output."""
    frames, events = [], []
    for line in text.splitlines():
        if line.strip():
            obj = json.loads(line)
            (events if "event" in obj else frames).append(obj)
    return frames, events


def segments_of(truth: Sequence) -> list[tuple[int, int, object]]:
    """(start, end, label) runs of equal labels."""
    out, start = [], 0
    for i in range(1, len(truth) + 1):
        if i == len(truth) or truth[i] != truth[start]:
            out.append((start, i, truth[start]))
            start = i
    return out


def smoothed_accuracy(frames: list[dict], truth: Sequence, settle: int = 5) -> tuple[float, int]:
    """Share of frames whose smoothed label is right, the first ``settle`` frames after each change not counted."""
    by_frame = {f["frame"]: f["label"] for f in frames}
    right = counted = 0
    for start, end, label in segments_of(truth):
        for i in range(start + settle, end):
            counted += 1
            right += by_frame.get(i, "<missing>") == label
    return right / counted, counted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MjpegServer:
    """A real HTTP server streaming JPEG frames as multipart/x-mixed-replace, like an IP camera.

    ``stop()`` closes the listening socket and every open stream (a camera going away);
    ``start()`` brings it back on the same port.
    """

    def __init__(self, frames_bgr: Sequence[np.ndarray], port: int | None = None, fps: float = 25.0):
        self.jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for f in frames_bgr]
        self.port = port or free_port()
        self.fps = fps
        self.sent = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._alive = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> "MjpegServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=camframe")
                self.end_headers()
                i = 0
                try:
                    while server._alive.is_set():
                        d = server.jpegs[i % len(server.jpegs)]
                        i += 1
                        self.wfile.write(b"--camframe\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(d) + d + b"\r\n")
                        server.sent += 1
                        time.sleep(1.0 / server.fps)
                except OSError:
                    pass
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self._alive.set()
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._alive.clear()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


class Running:
    """`edgeembed recognize` as a user runs it, with stdout/stderr read as they come."""

    def __init__(self, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "edgeembed.cli", *map(str, args)], cwd=REPO, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=lambda s=stream, k=sink: [k.append(line) for line in s], daemon=True).start()

    def wait_for(self, predicate, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"timed out; stderr so far: {''.join(self.err)}")

    def frames(self) -> int:
        return sum(1 for line in list(self.out) if line.startswith('{"frame"'))

    def finish(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout=timeout)
        time.sleep(0.2)  # let the reader threads drain
        return rc
