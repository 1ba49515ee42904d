"""A live HTTP MJPEG camera (a real HTTP server on 127.0.0.1) that goes away mid-stream and comes back.

The pipeline must say the stream dropped, retry with growing back-off, resume, recognise
again, and leave the gallery as it was; a stream that never returns ends in one error line.
"""
from __future__ import annotations

import json

import time

import pytest

from conftest import run_cli
from test_live_support import MjpegServer, Running, coil_view, enroll_coil, parse_jsonl


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    work = tmp_path_factory.mktemp("stream")
    enroll_coil(work / "g", ["obj01", "obj02", "obj04"], work)
    return work / "g"


def test_stream_drop_back_off_resume(gallery):
    before = run_cli("gallery", "list", "--gallery", gallery, "--json", check=True).stdout
    server = MjpegServer([coil_view("obj01", v) for v in range(0, 72, 2)], fps=25).start()
    run = Running("recognize", "--gallery", gallery, "--source", server.url, "--json", "--max-frames", "140")
    try:
        run.wait_for(lambda: run.frames() >= 30)
        server.stop()  # the camera goes away mid-stream ...
        run.wait_for(lambda: any("reconnect attempt 3" in line for line in run.err), timeout=30)
        # the drop and the retries go out while the camera is away, not when it comes back
        run.wait_for(lambda: '"source_retry"' in "".join(run.out) and '"source_dropped"' in "".join(run.out), timeout=5)
        server.start()  # ... and comes back on the same address
        rc = run.finish()
    finally:
        server.stop()
        if run.proc.poll() is None:
            run.proc.kill()
    assert rc == 0, "".join(run.err)
    err = "".join(run.err)
    assert err.count("the source dropped") == 1 and "resumed after" in err
    frames, events = parse_jsonl("".join(run.out))
    kinds = [e["event"] for e in events]
    assert kinds.count("source_dropped") == 1 and kinds.count("source_resumed") == 1
    retries = [e for e in events if e["event"] == "source_retry"]
    assert len(retries) >= 3 and err.count("reconnect attempt") == len(retries)
    delays = [e["delay_s"] for e in retries]
    assert delays[:3] == [0.5, 1.0, 2.0], f"back-off must double: {delays}"
    i_drop, i_resume = kinds.index("source_dropped"), kinds.index("source_resumed")
    assert i_drop < kinds.index("source_retry") < i_resume
    assert len(frames) == 140, "the run went on to --max-frames after the stream came back"
    resumed_at = events[i_resume]["frame"]
    after = [f for f in frames if f["frame"] > resumed_at + 5]
    assert after and all(f["label"] == "obj01" for f in after), "recognition resumed on the new frames"
    # the latest-frame policy: frame numbers are the source's; none is processed twice
    numbers = [f["frame"] for f in frames]
    assert numbers == sorted(set(numbers))
    assert run_cli("gallery", "list", "--gallery", gallery, "--json", check=True).stdout == before


def test_stream_that_never_returns_gives_up_with_one_line(gallery):
    server = MjpegServer([coil_view("obj02", v) for v in range(0, 72, 4)], fps=25).start()
    run = Running("recognize", "--gallery", gallery, "--source", server.url, "--json",
                  env={"EDGEEMBED_RECONNECT_TIMEOUT": "2"})
    try:
        run.wait_for(lambda: run.frames() >= 10)
        server.stop()
        rc = run.finish(timeout=30)
    finally:
        server.stop()
        if run.proc.poll() is None:
            run.proc.kill()
    assert rc == 75, "EX_TEMPFAIL: the camera may come back, a service manager starts the run again (a mistake is 2)"
    errors = [line for line in run.err if line.startswith("edgeembed: error:")]
    assert len(errors) == 1 and "gave up after 2 s" in errors[0], "".join(run.err)
    assert run.err[-1] == errors[0], "the error is the last word"
    left = [json.loads(line) for line in run.out if '"event": "left"' in line]  # for automations: lost, not ended
    assert left and left[-1]["reason"] == "source_lost", run.out[-3:]
    # frame numbers never go back: 'left' came after 'source_dropped' one frame below it
    numbers = [json.loads(line)["frame"] for line in run.out if line.strip()]
    assert numbers == sorted(numbers), numbers[-6:]


def test_latest_frame_policy_skips_stale_frames(gallery):
    """A slow device on a 25 fps camera: it processes the newest frame, never a backlog."""
    from edgeembed.gallery import Gallery
    from edgeembed.pipeline import ImageProcessor, Pipeline
    from edgeembed.recognizer import open_gallery_embedder
    from edgeembed.smoothing import TrackSmoother
    from edgeembed.sources import open_source

    class SlowDevice(ImageProcessor):
        def process(self, rgb):
            time.sleep(0.12)  # a device 3x slower than the camera
            return super().process(rgb)

    server = MjpegServer([coil_view("obj04", v) for v in range(0, 72, 2)], fps=25).start()
    try:
        with Gallery.open(gallery) as g, open_gallery_embedder(g, num_threads=1) as emb, \
                open_source(server.url) as src:
            assert src.live
            stats = Pipeline(src, SlowDevice(emb, g), TrackSmoother(3), max_frames=12).run()
    finally:
        server.stop()
    assert stats.frames == 12
    assert stats.skipped_stale >= 12, f"stale frames must be dropped, not queued ({stats.skipped_stale} dropped)"


def test_annotated_video_of_a_live_stream_plays_at_the_speed_things_happened(gallery, tmp_path):
    """A 10 fps camera processed for 3 s gives about 3 s of video, whatever rate FFmpeg assumes for the stream
    (25 fps for MJPEG over HTTP: the 30 frames played in 1.2 s before) and however fast the board processes."""
    import cv2

    server = MjpegServer([coil_view("obj01", v) for v in range(0, 72, 2)], fps=10).start()
    out = tmp_path / "live.avi"
    try:
        t0 = time.monotonic()
        p = run_cli("recognize", "--gallery", gallery, "--source", server.url, "--json", "--max-frames", "30",
                    "--output", out)
        seconds = time.monotonic() - t0
    finally:
        server.stop()
    assert p.returncode == 0, p.stderr
    cap = cv2.VideoCapture(str(out))
    n, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    # 30 processed frames of a 10 fps camera: 2.9 s from the first to the last, written at fps frames a second
    assert 2.4 <= n / fps <= min(seconds, 4.0), (n, fps, seconds)


def test_annotated_video_in_mkv_survives_a_kill(gallery, tmp_path):
    """A Pi recording for days loses power: the .mkv written so far still plays (an .mp4's index is written at
    the end, so a killed run left an unreadable file); an .mp4 name on a camera gets a note saying so."""
    import cv2

    from conftest import DATA

    # 640x480 street-camera-sized pictures: FFmpeg writes in 256 KB blocks, so what a kill loses is seconds
    pictures = [cv2.resize(cv2.imread(str(p)), (640, 480)) for p in sorted((DATA / "imagenet-sample").iterdir())[:30]]
    server = MjpegServer(pictures, fps=25).start()
    try:
        for name in ("live.mkv", "live.mp4"):
            run = Running("recognize", "--gallery", gallery, "--source", server.url, "--json", "--output",
                          tmp_path / name)
            try:
                run.wait_for(lambda: run.frames() >= 60)
            finally:
                run.proc.kill()  # SIGKILL: no clean-up runs, as with a power cut
                run.proc.wait()
            note = any("readable only if the run ends normally" in line for line in run.err)
            assert note == (name == "live.mp4"), "".join(run.err)
    finally:
        server.stop()
    cap = cv2.VideoCapture(str(tmp_path / "live.mkv"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n >= 10, f"{n} frames readable in the killed run's .mkv"


def test_output_that_is_the_source_video_is_refused(gallery, tmp_path):
    """--output naming the video being read would overwrite it while it is read."""
    from test_live_support import coil_segments, write_clip

    clip = tmp_path / "clip.avi"
    write_clip(clip, coil_segments(["obj01"]))
    before = clip.read_bytes()
    p = run_cli("recognize", "--gallery", gallery, "--source", clip, "--output", tmp_path / "." / "clip.avi")
    assert p.returncode == 2 and "is the video being read" in p.stderr and clip.read_bytes() == before


def test_a_video_file_served_over_http_is_read_once_to_its_end(tmp_path):
    """http://.../clip.avi has a length: it is a recording (every frame, then the end), not a camera stream
    that 'drops' at the end of the file and is replayed from the start for ever."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from test_live_support import coil_segments, enroll_coil, free_port, write_clip

    enroll_coil(tmp_path / "g", ["obj01", "obj02"], tmp_path)
    truth = write_clip(tmp_path / "clip.avi", coil_segments(["obj01", "obj02"]))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        p = run_cli("recognize", "--gallery", tmp_path / "g", "--source",
                    f"http://127.0.0.1:{httpd.server_port}/clip.avi", "--json", timeout=120)
    finally:
        httpd.shutdown()
    assert p.returncode == 0, p.stderr
    frames, events = parse_jsonl(p.stdout)
    assert [f["frame"] for f in frames] == list(range(len(truth))) and "dropped" not in p.stderr
    assert [e["label"] for e in events if e["event"] == "appeared"] == ["obj01", "obj02"]


def test_a_run_started_with_nohup_outlives_a_hangup(gallery):
    """SIGHUP ends a run like SIGTERM (the terminal closed), unless the run was started to ignore it: `nohup
    edgeembed recognize ... &` over ssh must go on after the logout's SIGHUP."""
    import signal
    import subprocess
    import sys

    from conftest import REPO

    server = MjpegServer([coil_view("obj01", v) for v in range(0, 72, 2)], fps=25).start()
    proc = subprocess.Popen([sys.executable, "-m", "edgeembed", "recognize", "--gallery", str(gallery), "--source",
                             server.url, "--json"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))  # what nohup does
    try:
        assert proc.stdout.readline().startswith('{"frame"'), "the run started"
        proc.send_signal(signal.SIGHUP)
        time.sleep(2)
        assert proc.poll() is None, "a hangup the run was started to ignore stopped it"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode in (0, 130) and '"reason": "end"' in out
    finally:
        server.stop()
        if proc.poll() is None:
            proc.kill()
