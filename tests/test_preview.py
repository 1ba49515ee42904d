"""The MJPEG preview: fetched by a real HTTP client, and once by headless Chromium with a screenshot check.

Chromium comes from Debian's `chromium` package (installed by .ci/run); only that test skips
when the binary is absent.
"""
from __future__ import annotations

import http.client
import shutil
import signal
import subprocess
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from conftest import DATA, V1_EMBED, run_cli
from test_live_support import MjpegServer, Running, free_port

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def _scene() -> list[np.ndarray]:
    """A colour camera view: the parrot photo, slightly moving (BGR, 320x240)."""
    img = cv2.resize(cv2.imread(str(DATA / "coral-images" / "parrot.jpg")), (340, 255), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(img[y : y + 240, x : x + 320]) for x, y in ((0, 0), (10, 5), (20, 10), (10, 15))]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """recognize --preview on a live MJPEG camera, running for the module's tests."""
    work = tmp_path_factory.mktemp("preview")
    frames = _scene()
    (work / "enroll" / "parrot").mkdir(parents=True)
    cv2.imwrite(str(work / "enroll" / "parrot" / "0.png"), frames[0])
    (work / "enroll" / "owl").mkdir(parents=True)
    cv2.imwrite(str(work / "enroll" / "owl" / "0.png"), cv2.imread(str(DATA / "coral-images" / "owl.jpg")))
    run_cli("enroll", work / "enroll", "--gallery", work / "g", "--model", V1_EMBED, "--quiet", check=True)
    camera = MjpegServer(frames, fps=10).start()
    port = free_port()
    run = Running("recognize", "--gallery", work / "g", "--source", camera.url, "--json", "--preview", str(port),
                  "--camera-name", "garden")
    try:
        run.wait_for(lambda: run.frames() >= 10)
        yield {"port": port, "run": run, "frames": frames, "work": work}
    finally:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
            run.proc.wait(timeout=20)
        camera.stop()


def _best_match(shot_bgr: np.ndarray, frames: list[np.ndarray]) -> float:
    """Normalised correlation of the frame's lower part (no label banner) found anywhere in the picture."""
    return max(float(cv2.matchTemplate(shot_bgr, f[60:], cv2.TM_CCOEFF_NORMED).max()) for f in frames)


def test_page_snapshot_and_stream_over_http(live):
    base = f"http://127.0.0.1:{live['port']}"
    assert any(f"preview at {base}/" in line for line in live["run"].err), "".join(live["run"].err)
    page = urllib.request.urlopen(base + "/", timeout=10)
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<img src='/stream.mjpg'" in page.read().decode()
    snap = urllib.request.urlopen(base + "/snapshot.jpg", timeout=10)
    assert snap.headers["Content-Type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(snap.read(), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (240, 320, 3)
    # the very picture the camera sent, in the right colour order, under the label banner
    assert _best_match(img, live["frames"]) > 0.95
    assert _best_match(img[:, :, ::-1].copy(), live["frames"]) < _best_match(img, live["frames"])
    conn = http.client.HTTPConnection("127.0.0.1", live["port"], timeout=10)
    conn.request("GET", "/stream.mjpg")
    resp = conn.getresponse()
    ctype = resp.getheader("Content-Type")
    assert ctype.startswith("multipart/x-mixed-replace; boundary=")
    boundary = ctype.split("boundary=")[1].encode()
    jpegs = []
    while len(jpegs) < 3:  # read three parts as a browser does
        line = resp.fp.readline()
        if line.strip() == b"--" + boundary:
            headers = {}
            while (h := resp.fp.readline().strip()):
                k, v = h.decode().split(":", 1)
                headers[k.lower()] = v.strip()
            assert headers["content-type"] == "image/jpeg"
            jpegs.append(resp.fp.read(int(headers["content-length"])))
    conn.close()
    decoded = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
    assert all(d is not None and d.shape == (240, 320, 3) for d in decoded)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(base + "/nothing", timeout=10)
    assert e.value.code == 404
    for path, ctype in (("/", "text/html"), ("/snapshot.jpg", "image/jpeg"), ("/stream.mjpg", "multipart/")):
        # HEAD (uptime checks, curl -I) answered like GET without the body (it was 501)
        head = urllib.request.urlopen(urllib.request.Request(base + path, method="HEAD"), timeout=10)
        assert head.status == 200 and head.headers["Content-Type"].startswith(ctype) and head.read() == b""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_headless_chromium_shows_the_frame(live, tmp_path):
    shot = tmp_path / "shot.png"
    p = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=480,360",
                        f"--screenshot={shot}", f"http://127.0.0.1:{live['port']}/"],
                       capture_output=True, text=True, timeout=120)
    assert shot.exists(), p.stderr[-2000:]
    img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert img is not None and float(img.std()) > 20, "the screenshot is blank"
    score = _best_match(img, live["frames"])
    assert score > 0.9, f"the screenshot does not show the camera frame (correlation {score:.3f})"


def _get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, first bytes of the body) of one request with exactly these headers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read(4096 if "mjpg" in path else -1)
    finally:
        conn.close()


def test_a_page_opened_through_another_name_is_refused(live):
    """DNS rebinding: a web page from rebind.attacker.example whose name then points at 127.0.0.1 read the camera
    (200 whatever the Host). Only this machine's addresses and names are answered."""
    import socket

    port = live["port"]
    for host in ("rebind.attacker.example", f"rebind.attacker.example:{port}", "evil.localhost.example.", "[::1].evil"):
        for path in ("/", "/snapshot.jpg", "/stream.mjpg"):
            status, headers, body = _get(port, path, {"Host": host})
            assert status == 403, (host, path, status)
            assert headers["content-type"] == "text/plain" and body.count(b"\n") == 1
            assert b"by this machine's address or name" in body
    for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LocalHost.", f"[::1]:{port}", "192.168.1.20",
                 f"{socket.gethostname()}:{port}", f"{socket.gethostname().upper()}.local:{port}", socket.getfqdn() + "."):
        status, headers, body = _get(port, "/snapshot.jpg", {"Host": host})
        assert status == 200 and headers["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8", (host, status)
    status, headers, body = _get(port, "/stream.mjpg", {"Host": f"localhost:{port}"})
    assert status == 200 and body.startswith(b"--")
    # HTTP/1.0 without a Host header is answered
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /snapshot.jpg HTTP/1.0\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.0 200")
    assert not any("note:" in line for line in live["run"].err), "a loopback preview needs no note"


def test_sigterm_stops_cleanly_and_closes_the_preview(live):
    run = live["run"]
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish(timeout=20) == 0, "".join(run.err)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{live['port']}/", timeout=5)


@pytest.mark.parametrize("size", [(1280, 960), (160, 120)])
def test_viewers_are_capped_and_a_stalled_one_is_dropped(monkeypatch, size):
    """Each viewer holds a thread and its buffers on a small board: 30 viewers that never read took 36 threads
    and 293 MB. Beyond MAX_STREAMS a viewer gets one 503 line; one that stops reading is dropped after the send
    timeout, and its place is free again. A small preview (320x240, a few KB a frame) too: its stalled viewers
    held their place 45-50 s against a 15 s timeout while Linux grew the send buffer to 4 MB."""
    import socket
    import threading
    import time

    from edgeembed.outputs import preview
    from edgeembed.pipeline import FrameRecord

    monkeypatch.setattr(preview._Handler, "timeout", 1.0)
    big = cv2.resize(cv2.imread(str(DATA / "coral-images" / "parrot.jpg")), size)  # 1280x960: ~0.3 MB a JPEG
    server = preview.PreviewServer(0)
    stop = threading.Event()

    def camera():
        i = 0
        while not stop.is_set():
            server.on_frame(FrameRecord(i, i / 10, [], {}), cv2.cvtColor(np.roll(big, i, axis=1), cv2.COLOR_BGR2RGB))
            i += 1
            time.sleep(0.05)

    feeder = threading.Thread(target=camera, daemon=True)
    feeder.start()
    stalled = []
    try:
        for _ in range(preview.MAX_STREAMS):  # viewers that ask for the stream and never read it
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", server.port))
            s.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
            stalled.append(s)
        time.sleep(0.5)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/stream.mjpg", timeout=5)
        assert err.value.code == 503 and b"viewers are watching already" in err.value.read()
        deadline = time.monotonic() + 10  # the 1 s timeout, after the fixed send buffer has filled
        while True:  # the stalled viewers are dropped once their writes stall past the timeout
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/stream.mjpg", timeout=5) as r:
                    assert r.status == 200 and r.read(2) == b"--"
                break
            except urllib.error.HTTPError as exc:
                assert exc.code == 503 and time.monotonic() < deadline, "a viewer that never reads kept its place"
                time.sleep(0.5)
    finally:
        stop.set()
        feeder.join()
        for s in stalled:
            s.close()
        server.close()


def _camera_run(tmp_path, *extra: str, env: dict | None = None):
    """recognize on a live MJPEG camera with a preview on a free port; returns (camera, run, port)."""
    frames = _scene()
    (tmp_path / "enroll" / "parrot").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "enroll" / "parrot" / "0.png"), frames[0])
    run_cli("enroll", tmp_path / "enroll", "--gallery", tmp_path / "g", "--model", V1_EMBED, "--quiet", check=True)
    camera = MjpegServer(frames, fps=10).start()
    port = free_port()
    run = Running("recognize", "--gallery", tmp_path / "g", "--source", camera.url, "--json", "--preview", str(port),
                  *extra, env=env)
    return camera, run, port


def _stop(camera, run) -> None:
    if run.proc.poll() is None:
        run.proc.send_signal(signal.SIGTERM)
        run.proc.wait(timeout=20)
    camera.stop()


def test_a_password_from_the_environment_guards_every_page(tmp_path):
    """--preview-host 0.0.0.0 showed the camera to everyone who reached the machine. EDGEEMBED_PREVIEW_PASSWORD
    (never argv, which ps shows to every user) makes every path ask for it by HTTP Basic, any user name."""
    import base64

    camera, run, port = _camera_run(tmp_path, "--preview-host", "0.0.0.0",
                                    env={"EDGEEMBED_PREVIEW_PASSWORD": "s3cret pässword"})
    try:
        run.wait_for(lambda: run.frames() >= 5)
        assert not any("note:" in line for line in run.err), "".join(run.err)  # a password is set: nothing to say
        basic = lambda user, pw: {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}  # noqa: E731
        for path in ("/", "/snapshot.jpg", "/stream.mjpg"):
            for headers in ({}, basic("admin", "wrong"), basic("admin", "s3cret"), {"Authorization": "Bearer s3cret pässword"},
                            {"Authorization": "Basic !!notbase64"}):
                status, got, body = _get(port, path, headers)
                assert status == 401, (path, headers, status)
                assert got["www-authenticate"].startswith('Basic realm="edgeembed"') and body.count(b"\n") == 1
        for user in ("admin", "", "pi"):
            status, got, body = _get(port, "/snapshot.jpg", basic(user, "s3cret pässword"))
            assert status == 200 and got["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
            status, got, body = _get(port, "/stream.mjpg", basic(user, "s3cret pässword"))
            assert status == 200 and got["content-type"].startswith("multipart/x-mixed-replace") and body.startswith(b"--")
        # with a password any name may be used (a router's NAME.lan, a reverse proxy's): the browser sends no
        # credentials to a rebinding attacker's name, and the attacker's page does not know them
        assert _get(port, "/snapshot.jpg", {**basic("a", "s3cret pässword"), "Host": "pi.fritz.box"})[0] == 200
        assert _get(port, "/snapshot.jpg", {"Host": "rebind.attacker.example"})[0] == 401
    finally:
        _stop(camera, run)


def test_an_open_preview_on_the_network_is_said_at_the_start(tmp_path):
    """Without a password, a preview bound beyond loopback says once that anyone who reaches the machine can watch,
    and how to set one; its start-up line names an address a browser can open instead of 0.0.0.0."""
    camera, run, port = _camera_run(tmp_path, "--preview-host", "0.0.0.0", env={"EDGEEMBED_PREVIEW_PASSWORD": ""})
    try:
        run.wait_for(lambda: run.frames() >= 3)
        notes = [line for line in run.err if "note:" in line]
        assert len(notes) == 1 and "open to every machine that can reach this one" in notes[0], "".join(run.err)
        assert "no password" in notes[0] and "EDGEEMBED_PREVIEW_PASSWORD" in notes[0]
        start = [line for line in run.err if "preview at http://" in line]
        assert len(start) == 1 and "0.0.0.0" not in start[0] and f":{port}/" in start[0], start
        assert _get(port, "/snapshot.jpg")[0] == 200  # open, as it says
    finally:
        _stop(camera, run)


def test_more_names_of_this_machine_can_be_allowed_without_a_password(tmp_path):
    """A router names the Pi NAME.lan or NAME.fritz.box, Avahi NAME-2.local, a reverse proxy passes its own name:
    each got 403 with no way to allow it. EDGEEMBED_PREVIEW_HOSTS lists them; other names stay refused."""
    camera, run, port = _camera_run(tmp_path, env={"EDGEEMBED_PREVIEW_HOSTS": "pi.fritz.box, Cam.Example.COM."})
    try:
        run.wait_for(lambda: run.frames() >= 5)
        for host in ("pi.fritz.box", f"PI.fritz.box:{port}", "cam.example.com", "cam.example.com."):
            assert _get(port, "/snapshot.jpg", {"Host": host})[0] == 200, host
        status, _, body = _get(port, "/snapshot.jpg", {"Host": "other.fritz.box"})
        assert status == 403 and b"EDGEEMBED_PREVIEW_HOSTS" in body and b"EDGEEMBED_PREVIEW_PASSWORD" in body
    finally:
        _stop(camera, run)
