"""A live preview for a headless Pi: MJPEG over HTTP, viewable in any browser.

``/`` is a small HTML page showing ``/stream.mjpg`` (multipart/x-mixed-replace JPEGs);
``/snapshot.jpg`` is the latest annotated frame. The server binds 127.0.0.1 unless told
otherwise (--preview-host 0.0.0.0 exposes the camera to the network). Frames are annotated
and JPEG-encoded on the viewers' threads, only when someone is watching, so the pipeline
pays nothing for an idle preview.
"""
from __future__ import annotations

import errno
import html
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

from ..errors import InputError
from .annotate import annotate

BOUNDARY = "edgeembedframe"
JPEG_QUALITY = 80
MAX_STREAMS = 4  # viewers at once: each holds a thread and its JPEG buffers on a board with little memory
SEND_TIMEOUT_S = 15.0  # a viewer that stops reading (a phone gone off the Wi-Fi) is dropped after this
# The send timeout only starts once the socket's send buffer is full. Linux grows that buffer up to 4 MB, which a
# small preview (320x240, ~6 KB a frame) takes 45 s to fill: a stalled viewer held its place for 45-50 s. A fixed
# buffer (the kernel doubles it) fills in a few seconds and still carries a 1080p preview over Wi-Fi.
STREAM_SEND_BUFFER = 128 * 1024


class PreviewServer:
    """Serves the newest frame; ``on_frame`` only stores a reference to it."""

    def __init__(self, port: int, host: str = "127.0.0.1", title: str = "edgeembed"):
        self.host, self.title = host, title
        self._cond = threading.Condition()
        self._frame: tuple[np.ndarray, Any] | None = None
        self._seq = 0
        self._jpeg: tuple[int, bytes] | None = None
        self._closed = False
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)
        handler = type("Handler", (_Handler,), {"preview": self})
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            fix = ("choose another --preview PORT" if getattr(exc, "errno", None) in (errno.EADDRINUSE, errno.EACCES)
                   else "check --preview-host: an address of this machine, or 0.0.0.0 for all")
            raise InputError(f"cannot serve the preview on {host}:{port} ({exc.strerror or exc}); {fix}") from None
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="edgeembed-preview", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def on_frame(self, record: Any, rgb: np.ndarray) -> None:
        with self._cond:
            self._frame = (rgb, record)
            self._seq += 1
            self._cond.notify_all()

    def on_event(self, event: dict) -> None:
        pass

    def jpeg(self, after: int = -1, timeout: float = 10.0) -> tuple[int, bytes] | None:
        """(sequence, JPEG) of the newest frame newer than ``after``; None if closed or none came in time."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or (self._frame is not None and self._seq > after), timeout):
                return None
            if self._closed and (self._frame is None or self._seq <= after):
                return None
            seq, (rgb, record) = self._seq, self._frame
            cached = self._jpeg
        if cached and cached[0] == seq:
            return cached
        ok, buf = cv2.imencode(".jpg", annotate(rgb, record), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        out = (seq, buf.tobytes())
        with self._cond:
            self._jpeg = out
        return out

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    preview: PreviewServer
    protocol_version = "HTTP/1.0"
    timeout = SEND_TIMEOUT_S  # on the socket: a request or a write that stalls this long ends the connection

    def log_message(self, format: str, *args: Any) -> None:  # no access log on the user's terminal
        pass

    head = False  # a HEAD request: the same status and headers, no body (uptime checks, curl -I)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self.head = True
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            title = html.escape(self.preview.title)
            body = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
                    "<style>body{margin:0;background:#111;color:#eee;font-family:sans-serif}"
                    "img{display:block;max-width:100vw;max-height:100vh;margin:auto}</style></head>"
                    f"<body><img src='/stream.mjpg' alt='{title} live preview'></body></html>").encode()
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", body)
        elif path == "/snapshot.jpg":
            got = self.preview.jpeg(timeout=5.0)
            if got is None:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"no frame yet\n")
            else:
                self._send(HTTPStatus.OK, "image/jpeg", got[1])
        elif path == "/stream.mjpg":
            self._stream()
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found: try / or /stream.mjpg or /snapshot.jpg\n")

    def _send(self, status: HTTPStatus, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not self.head:
            self.wfile.write(body)

    def _stream(self) -> None:
        if self.head:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.end_headers()
            return
        if not self.preview._streams.acquire(blocking=False):
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain",
                       f"{MAX_STREAMS} viewers are watching already; close one, or use /snapshot.jpg\n".encode())
            return
        try:
            self._stream_frames()
        finally:
            self.preview._streams.release()

    def _stream_frames(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        seq = -1
        try:
            while True:
                got = self.preview.jpeg(after=seq, timeout=30.0)
                if got is None:
                    return
                seq, data = got
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                                 .encode() + data + b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):  # socket.timeout is TimeoutError
            return
