"""Faces found in group pictures, and what it costs: the still-picture multi-scale search against one pass.

Ten people (scikit-image's astronaut, head and shoulders 233x250, face ~100 px) on a brick wall at 1280x720,
and the same picture scaled to 1920x1080 and 4000x2250 (a phone photo's size). For each BlazeFace detector:
faces found and milliseconds per picture with ``multiscale`` off (one pass at the detector's input, as a live
source runs it) and on (the default for still pictures), alternating, ``--rounds`` times, medians.

    python benchmarks/bench_face_groups.py [--rounds 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
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


def group_picture() -> np.ndarray:
    head = cv2.resize(skimage.data.astronaut()[20:320, 100:380], (233, 250), interpolation=cv2.INTER_AREA)
    canvas = np.stack([cv2.resize(skimage.data.brick(), (1280, 720))] * 3, -1).copy()
    for k in range(10):
        row, col = divmod(k, 5)
        canvas[20 + row * 270: 270 + row * 270, 20 + col * 256: 253 + col * 256] = head
    return canvas


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
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
