"""Faces found in group pictures, and what it costs: the still-picture multi-scale search against one pass.

Ten people (scikit-image's astronaut, head and shoulders 233x250, face ~100 px) on a brick wall at 1280x720,
and the same picture scaled to 1920x1080 and 4000x2250 (a phone photo's size). For each BlazeFace detector:
faces found and milliseconds per picture with ``multiscale`` off (one pass at the detector's input, as a live
source runs it) and on (the default for still pictures), alternating, ``--rounds`` times, medians.

``--small-faces``: the smallest faces the still-picture search finds. Ten real faces (nine ORL people and the
astronaut) pasted at one face size (50-250 px) on a 4000x3000 (12 MP) and a 1920x1080 picture, brick wall and
coffee backgrounds (20 faces per size); faces found and ms per picture for the search at the default
``TILE_MAX_SIDE`` against pictures first reduced to 1920 px (the setting before 2026-11-27), alternating.

    python benchmarks/bench_face_groups.py [--rounds 5] [--threads 1] [--small-faces]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import skimage.data  # noqa: E402

from edgeembed.face import FaceDetector  # noqa: E402
from edgeembed.preprocess import read_image  # noqa: E402

SHARED = Path(os.environ.get("EDGEEMBED_SHARED", ROOT.parent / "shared"))
ORL = SHARED / "data" / "orl-faces"


def group_picture() -> np.ndarray:
    head = cv2.resize(skimage.data.astronaut()[20:320, 100:380], (233, 250), interpolation=cv2.INTER_AREA)
    canvas = np.stack([cv2.resize(skimage.data.brick(), (1280, 720))] * 3, -1).copy()
    for k in range(10):
        row, col = divmod(k, 5)
        canvas[20 + row * 270: 270 + row * 270, 20 + col * 256: 253 + col * 256] = head
    return canvas


def faces_picture(background: str, w: int, h: int, face_px: int, seed: int) -> tuple[np.ndarray, list[tuple]]:
    """Ten real faces of about ``face_px`` (box side) in a 5x2 grid of cells, jittered; the pasted rectangles."""
    faces = [(read_image(ORL / f"s{p}" / "1.pgm"), 70.0) for p in (1, 5, 9, 12, 17, 23, 28, 35, 40)]  # face ~70 px
    faces.append((skimage.data.astronaut()[55:225, 155:295], 94.0))  # face ~94 px
    if background == "brick":
        tile = np.stack([skimage.data.brick()] * 3, -1)
        bg = cv2.resize(np.tile(tile, (h // 512 + 1, w // 512 + 1, 1)), (w, h), interpolation=cv2.INTER_AREA)
    else:
        bg = cv2.resize(getattr(skimage.data, background)(), (w, h), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(seed)
    cw, ch = w // 5, h // 2
    truth = []
    for i, (face, native) in enumerate(faces):
        s = face_px / native
        im = cv2.resize(face, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
        ih, iw = im.shape[:2]
        x = i % 5 * cw + int(rng.integers(0, max(1, cw - iw)))
        y = i // 5 * ch + int(rng.integers(0, max(1, ch - ih)))
        bg[y:y + ih, x:x + iw] = im
        truth.append((x, y, iw, ih))
    return bg, truth


def found_in(dets, truth) -> tuple[int, int]:
    """Pasted faces with a detection centred on them, and detections elsewhere."""
    hit, other = set(), 0
    for f in dets.faces:
        cx, cy = f.box[0] + f.box[2] / 2, f.box[1] + f.box[3] / 2
        inside = [i for i, (x, y, w, h) in enumerate(truth) if x <= cx <= x + w and y <= cy <= y + h]
        hit.update(inside[:1])
        other += not inside
    return len(hit), other


def small_faces(a) -> int:
    sizes = {(4000, 3000): (50, 60, 70, 80, 90, 100, 125, 150, 200, 250),
             (1920, 1080): (25, 30, 40, 50, 60, 70, 80, 100, 150, 250)}
    settings = {"max side 1920": 1920, "default": FaceDetector.TILE_MAX_SIDE}
    for name in ("short", "full"):
        det = FaceDetector(name, num_threads=a.threads)
        for (w, h), face_sizes in sizes.items():
            found = {s: {} for s in settings}
            other = {s: 0 for s in settings}
            ms = {s: [] for s in settings}
            for px in face_sizes:
                for s in settings:
                    found[s][px] = 0
                for bg in ("brick", "coffee"):
                    pic, truth = faces_picture(bg, w, h, px, seed=px)
                    for s, side in settings.items():
                        det.TILE_MAX_SIDE = side
                        t = time.perf_counter()
                        dets = det.detect(pic)
                        ms[s].append((time.perf_counter() - t) * 1000)
                        n, o = found_in(dets, truth)
                        found[s][px] += n
                        other[s] += o
            for s in settings:
                print(json.dumps({"detector": name, "picture": f"{w}x{h}", "search": s, "faces_per_size": 20,
                                  "found_by_face_px": found[s], "other_detections": other[s],
                                  "ms_per_picture": round(statistics.median(ms[s]), 1)}))
        det.close()
    print(json.dumps({"threads": a.threads, "machine": platform.machine(), "python": platform.python_version()}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--small-faces", action="store_true", help="faces found per face size, 12 MP and 1920x1080")
    a = ap.parse_args()
    if a.small_faces:
        return small_faces(a)
    base = group_picture()
    pictures = {f"{w}x{h}": cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC) if w != 1280 else base
                for w, h in ((1280, 720), (1920, 1080), (4000, 2250))}
    rows = []
    for name in ("short", "full"):
        det = FaceDetector(name, num_threads=a.threads)
        for size, pic in pictures.items():
            found, ms = {}, {False: [], True: []}
            for _ in range(a.rounds):
                for multiscale in (False, True):
                    det.multiscale = multiscale
                    t = time.perf_counter()
                    found[multiscale] = len(det.detect(pic))
                    ms[multiscale].append((time.perf_counter() - t) * 1000)
            rows.append({"detector": name, "picture": size, "faces": 10, "found_one_pass": found[False],
                         "found_multiscale": found[True], "ms_one_pass": round(statistics.median(ms[False]), 1),
                         "ms_multiscale": round(statistics.median(ms[True]), 1)})
        det.close()
    for r in rows:
        print(json.dumps(r))
    print(json.dumps({"threads": a.threads, "rounds": a.rounds, "machine": platform.machine(),
                      "python": platform.python_version()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
