"""A live preview for a headless Pi: MJPEG over HTTP, viewable in any browser.

``/`` is a small HTML page showing ``/stream.mjpg`` (multipart/x-mixed-replace JPEGs);
``/snapshot.jpg`` is the latest annotated frame. The server binds 127.0.0.1 unless told
otherwise (--preview-host 0.0.0.0 exposes the camera to the network). Frames are annotated
and JPEG-encoded on the viewers' threads, only when someone is watching, so the pipeline
pays nothing for an idle preview.

Who may watch: when EDGEEMBED_PREVIEW_PASSWORD is set, every page asks for it (HTTP Basic, any user name). Without
one, a request must name this machine in its Host header (an IP address, localhost, this machine's names, or a name
listed in EDGEEMBED_PREVIEW_HOSTS: a router's NAME.lan, a reverse proxy's), so a web page in a browser on the Pi or
the LAN cannot read the camera through DNS rebinding. A password already keeps such a page out (the browser sends
no credentials to the attacker's name, and the page does not know them), so then any name may be used.
"""
from __future__ import annotations

import base64
import binascii
import errno
import hmac
import html
import ipaddress
import os
import socket
import sys
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
PASSWORD_ENV = "EDGEEMBED_PREVIEW_PASSWORD"  # never a command-line option: ps shows argv to every user
HOSTS_ENV = "EDGEEMBED_PREVIEW_HOSTS"  # more names this machine is browsed by, comma-separated
REALM = "edgeembed"


class PreviewServer:
    """Serves the newest frame; ``on_frame`` only stores a reference to it."""

    def __init__(self, port: int, host: str = "127.0.0.1", title: str = "edgeembed", password: str | None = None):
        """``password``: what HTTP Basic auth must give (any user name); None takes $EDGEEMBED_PREVIEW_PASSWORD, and
        "" or an unset variable means none."""
        self.host, self.title = host, title
        if password is None:
            password = os.environ.get(PASSWORD_ENV)
        self.password = password.encode("utf-8") if password else None
        extra = {n.strip().lower().rstrip(".") for n in os.environ.get(HOSTS_ENV, "").split(",") if n.strip()}
        self.host_names = own_host_names() | frozenset(extra)
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
        if self.password is None and not is_loopback(host):
            print(f"edgeembed: note: the preview on {host or 'every address'} is open to every machine that can reach "
                  f"this one, with no password; to ask for one, set {PASSWORD_ENV} in the environment (browsers then "
                  "prompt once, any user name)", file=sys.stderr, flush=True)

    @property
    def url(self) -> str:
        host = self.host
        if host in ("", "0.0.0.0"):  # every address: name one a browser can open
            host = _lan_address() or socket.gethostname()
        return f"http://{host}:{self.port}/"

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
        if not self._allowed():
            return
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

    def _allowed(self) -> bool:
        """The password, if one is set, else the Host check (DNS rebinding); answers 401 / 403 when not allowed."""
        want = self.preview.password
        host = self.headers.get("Host")
        if want is None and host is not None and not host_is_ours(host, self.preview.host_names):
            self._send(HTTPStatus.FORBIDDEN, "text/plain",
                       f"forbidden: open the preview by this machine's address or name (e.g. {self.preview.url}); "
                       f"another name it has (NAME.lan, a reverse proxy's) goes in {HOSTS_ENV}=NAME,... or set "
                       f"{PASSWORD_ENV}, after which any name may be used\n".encode())
            return False
        if want is not None and not hmac.compare_digest(_basic_password(self.headers.get("Authorization")), want):
            self._send(HTTPStatus.UNAUTHORIZED, "text/plain",
                       f"this preview asks for a password (the one in {PASSWORD_ENV}; any user name)\n".encode(),
                       {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
            return False
        return True

    def _send(self, status: HTTPStatus, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
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


def _basic_password(header: str | None) -> bytes:
    """The password of an ``Authorization: Basic`` header (user name ignored); b"" when there is none."""
    if not header:
        return b""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return b""
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b""
    return decoded.partition(b":")[2]


def own_host_names() -> frozenset[str]:
    """The names a browser may use for this machine: localhost, its host name, that + .local (mDNS: how a Pi is
    browsed, raspberrypi.local) and its fully qualified name."""
    names = {"localhost"}
    try:
        host = socket.gethostname()
        if host:
            names |= {host, host + ".local"}
        names.add(socket.getfqdn())
    except OSError:
        pass
    return frozenset(n.lower().rstrip(".") for n in names if n)


def host_is_ours(header: str, names: frozenset[str]) -> bool:
    """Whether a Host header names this machine: an IP literal, or one of ``names`` (port stripped, IPv6 brackets
    handled, any case, a trailing dot tolerated). A page fetched through an attacker's name (DNS rebinding) is not."""
    h = header.strip().lower()
    if h.startswith("["):  # [v6]:port
        end = h.find("]")
        if end < 0:
            return False
        rest = h[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return False
        h = h[1:end]
    elif h.count(":") == 1:  # name:port or v4:port
        h, _, port = h.partition(":")
        if not port.isdigit():
            return False
    if h.endswith("."):  # the fully qualified form of a name
        h = h[:-1]
    if not h:
        return False
    try:
        ipaddress.ip_address(h.split("%", 1)[0])
        return True
    except ValueError:
        return h in names


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the preview on this machine."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addrs = {a[4][0] for a in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addrs)


def _lan_address() -> str | None:
    """This machine's address on its default route (a UDP socket's source address: nothing is sent), if any."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the route
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith(("0.", "127.")) else addr
