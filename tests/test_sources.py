"""Frame sources: picamera2's buffer formats (through a fake of its API with real layouts), video files,
folders, region of interest, resolution, and the one-line errors of a missing camera or picamera2."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from conftest import DATA, REPO, V1_EMBED, run_cli
from test_live_support import coil_view, write_clip

FAKE = REPO / "tests" / "fake_picamera2"


@pytest.fixture()
def fake_picamera2(monkeypatch):
    """The fake picamera2 package on sys.path (and in PYTHONPATH for the CLI), fresh for each test."""
    monkeypatch.syspath_prepend(str(FAKE))
    monkeypatch.setenv("PYTHONPATH", str(FAKE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    sys.modules.pop("picamera2", None)
    yield
    sys.modules.pop("picamera2", None)


def _png(tmp_path: Path, rgb: np.ndarray, size: tuple[int, int], name: str = "scene.png") -> Path:
    """A real PNG the fake camera sees, at the stream size (so no scaling differs between the two paths)."""
    p = tmp_path / name
    cv2.imwrite(str(p), cv2.resize(rgb[:, :, ::-1], size, interpolation=cv2.INTER_AREA))
    return p


PARROT = cv2.imread(str(DATA / "coral-images" / "parrot.jpg"))[:, :, ::-1]


@pytest.mark.parametrize("fmt", ["RGB888", "BGR888", "XRGB8888", "XBGR8888"])
@pytest.mark.parametrize("stream", ["main", "lores"])
def test_picamera2_packed_formats_match_the_png(fake_picamera2, monkeypatch, tmp_path, v1_embedder, fmt, stream):
    from edgeembed.embedder import cosine_similarity
    from edgeembed.sources.picamera2 import Picamera2Source

    size = (300, 200)  # 300 px rows are padded to a 64-byte stride in every packed format
    png = _png(tmp_path, PARROT, size)
    monkeypatch.setenv("FAKE_PICAMERA2_IMAGE", str(png))
    with Picamera2Source(f"picamera2?format={fmt}", stream=stream, resolution=size) as src:
        cfg = src._cam.camera_configuration()[stream]
        assert cfg["stride"] > size[0] * (4 if fmt.startswith("X") else 3), "the test must exercise stride padding"
        frame = src.read()
    assert frame.rgb.shape == (200, 300, 3) and frame.rgb.dtype == np.uint8
    direct = cv2.imread(str(png))[:, :, ::-1]
    assert np.array_equal(frame.rgb, direct), f"{fmt}: channel order or padding wrong"
    cos = cosine_similarity(v1_embedder.embed(frame.rgb), v1_embedder.embed(png))
    assert cos >= 0.999, f"{fmt} {stream}: cosine {cos:.5f}"
    assert src._cam is None, "the camera must be released on leaving the with block"


def _i420_reference(rgb: np.ndarray) -> np.ndarray:
    """What a perfect I420 decoder gives: BT.601 limited range, chroma 2x2-averaged then repeated (float math)."""
    f = rgb.astype(np.float64) / 255
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    h, w = y.shape

    def sub(c):
        return np.repeat(np.repeat(np.rint(c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))), 2, 0), 2, 1)

    cb = sub(128 - 37.797 * r - 74.203 * g + 112.0 * b) - 128
    cr = sub(128 + 112.0 * r - 93.786 * g - 18.214 * b) - 128
    yy = (np.rint(y) - 16) * 255 / 219
    out = np.stack([yy + 1.402 * 255 / 224 * cr, yy - 0.344136 * 255 / 224 * cb - 0.714136 * 255 / 224 * cr,
                    yy + 1.772 * 255 / 224 * cb], -1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["YUV420", "YVU420"])
@pytest.mark.parametrize("stream", ["lores", "main"])
def test_picamera2_yuv420_is_decoded_exactly_and_embeds_like_the_png(fake_picamera2, monkeypatch, tmp_path,
                                                                    v1_embedder, fmt, stream):
    from edgeembed.embedder import cosine_similarity
    from edgeembed.sources.picamera2 import Picamera2Source

    monkeypatch.setenv("FAKE_PICAMERA2_MODEL", "pi4")
    # 1. the conversion itself (planes, strides, chroma order, BT.601 range) on a padded odd-width stream
    size = (300, 200)
    png = _png(tmp_path, PARROT, size)
    monkeypatch.setenv("FAKE_PICAMERA2_IMAGE", str(png))
    with Picamera2Source(f"picamera2?format={fmt}", stream=stream, resolution=size) as src:
        raw = src._cam.capture_array(stream)
        assert raw.shape == (300, 320), "picamera2 hands I420 over as (h*3/2, stride) with the padding"
        frame = src.read()
    ref = _i420_reference(cv2.imread(str(png))[:, :, ::-1])
    err = np.abs(frame.rgb.astype(int) - ref.astype(int))
    assert err.max() <= 3 and err.mean() < 0.6, f"I420 decoding off: max {err.max()}, mean {err.mean():.2f}"
    # 2. the embedding of a camera-sized frame matches the PNG (4:2:0 keeps half the colour resolution)
    size = (640, 480)
    png = _png(tmp_path, skimage.data.coffee(), size, "coffee.png")
    monkeypatch.setenv("FAKE_PICAMERA2_IMAGE", str(png))
    with Picamera2Source(f"picamera2?format={fmt}", stream=stream, resolution=size) as src:
        cos = cosine_similarity(v1_embedder.embed(src.read().rgb), v1_embedder.embed(png))
    assert cos >= 0.999, f"{fmt} {stream}: cosine {cos:.5f}"


def test_picamera2_pi4_refuses_rgb_lores_with_one_line(fake_picamera2, monkeypatch, tmp_path):
    from edgeembed.errors import SourceError
    from edgeembed.sources.picamera2 import Picamera2Source

    monkeypatch.setenv("FAKE_PICAMERA2_MODEL", "pi4")
    monkeypatch.setenv("FAKE_PICAMERA2_IMAGE", str(_png(tmp_path, PARROT, (320, 240))))
    with pytest.raises(SourceError, match="lores stream must be YUV420"):
        Picamera2Source("picamera2?format=RGB888", stream="lores").open()


def test_picamera2_through_the_cli(fake_picamera2, monkeypatch, tmp_path):
    """recognize --source picamera2 end to end: the gallery recognises what the (fake) camera sees."""
    scene = tmp_path / "scene"
    (scene / "parrot").mkdir(parents=True)
    png = _png(tmp_path, PARROT, (320, 240))
    cv2.imwrite(str(scene / "parrot" / "a.png"), cv2.imread(str(png)))
    (scene / "coffee").mkdir()
    cv2.imwrite(str(scene / "coffee" / "a.png"), cv2.resize(skimage.data.coffee()[:, :, ::-1], (320, 240)))
    run_cli("enroll", scene, "--gallery", tmp_path / "g", "--model", V1_EMBED, "--quiet", check=True)
    p = run_cli("recognize", "--gallery", tmp_path / "g", "--source", "picamera2", "--stream", "lores",
                "--resolution", "320x240", "--max-frames", "6", "--json", env={"FAKE_PICAMERA2_IMAGE": str(png)})
    assert p.returncode == 0, p.stderr
    import json

    frames = [json.loads(line) for line in p.stdout.splitlines() if '"event"' not in line]
    assert len(frames) == 6 and frames[-1]["label"] == "parrot"
    # options in the source, as the README shows them (the '?' was taken for a file pattern: "matches no images")
    p = run_cli("recognize", "--gallery", tmp_path / "g", "--source", "picamera2?format=XRGB8888&lores=320x240",
                "--resolution", "320x240", "--max-frames", "4", "--json", env={"FAKE_PICAMERA2_IMAGE": str(png)})
    assert p.returncode == 0, p.stderr
    frames = [json.loads(line) for line in p.stdout.splitlines() if '"event"' not in line]
    assert len(frames) == 4 and frames[-1]["label"] == "parrot"
    p = run_cli("recognize", "--gallery", tmp_path / "g", "--source", "picamera2", "--max-frames", "2",
                env={"FAKE_PICAMERA2_IMAGE": str(png), "FAKE_PICAMERA2_CAMERAS": "0"})
    assert p.returncode == 75, "a camera not detected (or held by another program) may come back: restarted on"
    assert p.stderr.count("\n") == 1 and "no Raspberry Pi camera 0" in p.stderr and "rpicam-hello" in p.stderr


def test_missing_picamera2_says_apt_and_system_site_packages(tmp_path):
    run_cli("enroll", DATA / "coil20" / "obj01", "--label", "obj01", "--gallery", tmp_path / "g", "--model", V1_EMBED,
            "--quiet", check=True)
    p = run_cli("recognize", "--gallery", tmp_path / "g", "--source", "picamera2")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "sudo apt install python3-picamera2" in lines[0] and "--system-site-packages" in lines[0]


def test_picamera2_numpy_mismatch_says_what_to_do(tmp_path):
    """The import error a pip numpy 2 gives an OS picamera2/simplejpeg built for numpy 1."""
    pkg = tmp_path / "sys" / "picamera2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "raise ImportError('numpy.core.multiarray failed to import')  # as simplejpeg built for numpy 1 raises\n")
    run_cli("enroll", DATA / "coil20" / "obj01", "--label", "obj01", "--gallery", tmp_path / "g", "--model", V1_EMBED,
            "--quiet", check=True)
    p = run_cli("recognize", "--gallery", tmp_path / "g", "--source", "picamera2",
                env={"PYTHONPATH": str(tmp_path / "sys")})
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "numpy mismatch" in lines[0] and "pip uninstall -y numpy" in lines[0]


def test_video_file_every_frame_roi_resolution_and_release(tmp_path):
    from edgeembed.sources import OpenCVSource, open_source

    frames = [coil_view("obj01", v) for v in range(0, 40, 2)] + [coil_view("obj02", v) for v in range(0, 40, 2)]
    write_clip(tmp_path / "c.avi", [("x", frames)])
    with open_source(str(tmp_path / "c.avi")) as src:
        assert isinstance(src, OpenCVSource) and not src.live and src.native_fps == 15.0
        got = list(src)
    assert len(got) == 40 and [f.index for f in got] == list(range(40))
    assert got[3].time == pytest.approx(3 / 15.0)  # recordings carry media time
    first = cv2.imdecode(cv2.imencode(".jpg", frames[0])[1], cv2.IMREAD_COLOR)[:, :, ::-1]
    assert np.abs(got[0].rgb.astype(int) - first.astype(int)).mean() < 3, "BGR->RGB order wrong"
    assert src._cap is None, "VideoCapture released"
    with open_source(str(tmp_path / "c.avi"), roi=(10, 20, 64, 48), resolution=(256, 256)) as src:
        f = src.read()
    assert f.rgb.shape == (48, 64, 3)  # resolution first (256x256), then the ROI in those pixels


def test_folder_and_glob_sources_skip_a_bad_image(tmp_path):
    from edgeembed.sources import FolderSource, open_source

    for v in range(3):
        cv2.imwrite(str(tmp_path / f"{v}.png"), coil_view("obj05", v))
    (tmp_path / "3.png").write_bytes(b"not a png")
    seen = []
    with open_source(str(tmp_path), on_status=lambda kind, msg, d: seen.append((kind, msg))) as src:
        assert isinstance(src, FolderSource)
        frames = list(src)
    assert len(frames) == 3 and seen and seen[0][0] == "source_skip" and "3.png" in seen[0][1]
    with open_source(str(tmp_path / "[01].png")) as src:
        assert len(list(src)) == 2


def test_bench_reads_a_folder_of_large_jpegs_as_recognize_does(tmp_path):
    """`bench` over a folder: a whole-image model's large JPEGs are decoded at a reduction, as `recognize` and
    `Embedder.embed(path)` read them, so the capture stage it reports is the one a user's run has."""
    from edgeembed import Embedder
    from edgeembed.sources import FolderSource

    h, w = 3024, 4032
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = (np.arange(w) % 256)[None, :], (np.arange(h) % 256)[:, None], 60
    cv2.imwrite(str(tmp_path / "phone.jpg"), img)
    with Embedder.create_from_model_path(V1_EMBED) as emb:
        keep = emb.preprocessor.keep_side
    with FolderSource(str(tmp_path)) as src:
        assert next(iter(src)).rgb.shape == (h, w, 3)  # nobody asked for less: the whole picture
    with FolderSource(str(tmp_path)) as src:
        src.keep_side = keep
        reduced = next(iter(src)).rgb
    assert min(reduced.shape[:2]) >= keep and reduced.shape[0] < h  # 1/2, 1/4 or 1/8, never below the kept side
    for k in (2, 3):
        (tmp_path / f"phone{k}.jpg").write_bytes((tmp_path / "phone.jpg").read_bytes())
    p = run_cli("bench", "--source", tmp_path, "--model", V1_EMBED, "--frames", "3", "--json", check=True)
    assert json.loads(p.stdout)["frames"] == 3


@pytest.mark.parametrize("source, expect, code", [
    ("/dev/video9", "cannot open camera /dev/video9: /dev/video9 does not exist", 75),
    ("7", "cannot open camera 7: /dev/video7 does not exist", 75),
    ("http://127.0.0.1:9/cam.mjpg", "cannot open stream http://127.0.0.1:9/cam.mjpg within 5 s", 75),
    ("nothing/here.mp4", "source not found: nothing/here.mp4", 2),
])
def test_camera_gone_or_missing_file_is_one_line(tmp_path, source, expect, code):
    """A camera or stream that is not there may come back (plugged in, booted later than the Pi): exit 75, which a
    service manager restarts on; a file that is not there is a mistake: exit 2, which it can be told to leave."""
    run_cli("enroll", DATA / "coil20" / "obj01", "--label", "obj01", "--gallery", tmp_path / "g", "--model", V1_EMBED,
            "--quiet", check=True)
    before = run_cli("gallery", "list", "--gallery", tmp_path / "g", "--json", check=True).stdout
    p = run_cli("recognize", "--gallery", tmp_path / "g", "--source", source)
    assert p.returncode == code
    assert p.stderr.startswith("edgeembed: error: ") and p.stderr.count("\n") == 1, p.stderr
    assert expect in p.stderr
    assert run_cli("gallery", "list", "--gallery", tmp_path / "g", "--json", check=True).stdout == before


def test_not_a_video_is_one_line(tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00" * 2000)
    run_cli("enroll", DATA / "coil20" / "obj01", "--label", "obj01", "--gallery", tmp_path / "g", "--model", V1_EMBED,
            "--quiet", check=True)
    p = run_cli("recognize", "--gallery", tmp_path / "g", "--source", bad)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "not a video" in p.stderr, p.stderr


def test_a_small_stream_is_asked_of_picamera2_only(tmp_path):
    """--stream lores on a video file was silently ignored: the full-size frames were read."""
    from edgeembed.errors import SourceError
    from edgeembed.sources import open_source

    with pytest.raises(SourceError, match="picamera2's second stream; clip.mp4 has one: drop --stream"):
        open_source("clip.mp4", stream="lores")


def test_a_video_file_cut_short_says_so(tmp_path):
    """A copy cut off (or a recording killed) ended with exit 0 and no word: 116 of 300 frames, read as the whole."""
    from edgeembed.sources import open_source

    clip = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(60):
        w.write(rng.integers(0, 255, (120, 160, 3), np.uint8))  # noise: every frame about the same size
    w.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size * 2 // 5])
    for path, short in ((clip, False), (cut, True)):
        seen = []
        with open_source(str(path), on_status=lambda kind, message, details: seen.append((kind, message, details))) as src:
            n = sum(1 for _ in src)
        assert (n == 60) != short
        if short:
            (kind, message, details), = seen
            assert kind == "source_cut_short" and details == {"source": str(cut), "frames_read": n, "frames_announced": 60}
            assert f"ended after {n} of the 60 frames" in message and "cut short" in message
        else:
            assert seen == []
    mp4 = tmp_path / "killed.mp4"
    mp4.write_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(2000))  # a recording killed before its index was written
    from edgeembed.errors import SourceError

    with pytest.raises(SourceError, match="stopped before it finished"):
        with open_source(str(mp4)) as src:
            next(iter(src))
