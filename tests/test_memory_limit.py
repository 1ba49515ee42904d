"""A picture too large for the memory left is refused in one line, not killed by the kernel mid-decode.

Run for real: the commands go into a memory cgroup of their own (v1 or v2) with a 400 MB limit, as a
512 MB board or a container gives them. Needs root and a writable cgroup file system (CI here has both);
elsewhere the test is skipped, with the reason.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, REPO, run_cli

LIMIT_MB = 400


def _memory_cgroup() -> Path:
    """A new memory cgroup limited to LIMIT_MB, or a skip saying why there is none."""
    name = f"edgeembed-test-{uuid.uuid4().hex[:8]}"
    v1 = Path("/sys/fs/cgroup/memory")
    v2 = Path("/sys/fs/cgroup")
    try:
        if (v1 / "memory.limit_in_bytes").exists() or (v1 / "cgroup.procs").exists():
            group = v1 / name
            group.mkdir()
            (group / "memory.limit_in_bytes").write_text(str(LIMIT_MB << 20))
        elif "memory" in (v2 / "cgroup.subtree_control").read_text().split():
            group = v2 / name
            group.mkdir()
            (group / "memory.max").write_text(str(LIMIT_MB << 20))
            (group / "memory.swap.max").write_text("0") if (group / "memory.swap.max").exists() else None
        else:
            pytest.skip("no memory cgroup controller to limit a command with")
    except OSError as exc:
        pytest.skip(f"cannot create a memory cgroup here ({exc.strerror}); needs root and a writable /sys/fs/cgroup")
    return group


@pytest.fixture
def limited(tmp_path):
    group = _memory_cgroup()

    def run(*args: str) -> subprocess.CompletedProcess:
        def enter() -> None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

        return subprocess.run([sys.executable, "-m", "edgeembed.cli", *map(str, args)], capture_output=True, text=True,
                              cwd=REPO, preexec_fn=enter, timeout=600)

    yield run
    try:
        group.rmdir()
    except OSError:
        pass


@pytest.fixture(scope="module")
def panorama(tmp_path_factory) -> Path:
    """A 108-megapixel JPEG (12000 x 9000): 309 MB decoded, about 700 MB at the decoder's peak."""
    import cv2

    h, w = 9000, 12000
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (np.arange(w) % 251).astype(np.uint8)[None, :]
    img[..., 1] = (np.arange(h) % 241).astype(np.uint8)[:, None]
    img[..., 2] = 90
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    path = tmp_path_factory.mktemp("big") / "panorama.jpg"
    path.write_bytes(buf.tobytes())
    return path


def test_a_picture_too_large_for_memory_is_refused_in_one_line_and_the_gallery_kept(tmp_path, limited, panorama):
    gallery = tmp_path / "faces"
    run_cli("enroll", DATA / "orl-faces" / "s1" / "1.pgm", "--label", "s1", "--mode", "face", "--gallery", gallery,
            "--quiet", check=True)
    before = {p.name: p.read_bytes() for p in gallery.iterdir() if p.is_file()}

    # face mode decodes the whole picture (its chips are cut from it): 700 MB does not fit in 400
    p = limited("enroll", panorama, "--label", "big", "--gallery", gallery, "--quiet")
    assert p.returncode not in (-9, 137), "killed by the kernel instead of refused"
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "panorama.jpg is 12000x9000 pixels" in lines[0] and "resize it" in lines[0], p.stderr
    assert {p.name: p.read_bytes() for p in gallery.iterdir() if p.is_file()} == before

    # a whole-image model reads the same JPEG at 1/8 (its input is 224 pixels): it fits and embeds
    model = REPO / "models" / "mobilenet_v2_1.0_224_int8.tflite"
    p = limited("embed", model, panorama, "--json")
    assert p.returncode == 0, p.stderr[-1000:]
    assert len(json.loads(p.stdout)["embedding"]) == 1280

    # saved progressive 4:4:4, libjpeg keeps 6 bytes per pixel of coefficients (648 MB) even at 1/8: refused too
    import cv2

    rgb = cv2.imread(str(panorama))
    progressive = tmp_path / "panorama_progressive.jpg"
    cv2.imwrite(str(progressive), rgb, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1,
                                        cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
    scan = tmp_path / "scan.tif"  # a scanner's TIFF (LZW) is decoded in full whatever the model: its size is in its IFD
    cv2.imwrite(str(scan), rgb)
    del rgb
    p = limited("embed", model, scan, "--json")
    assert p.returncode not in (-9, 137), "killed by the kernel instead of refused"
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "scan.tif is 12000x9000 pixels" in lines[0], p.stderr
    p = limited("embed", model, progressive, "--json")
    assert p.returncode not in (-9, 137), "killed by the kernel instead of refused"
    assert p.returncode != 0 and "panorama_progressive.jpg is 12000x9000 pixels" in p.stderr, p.stderr
