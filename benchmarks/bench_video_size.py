"""Size of an annotated video per hour, and whether a killed writer leaves a playable file, per container.

The same 640x480 pictures (10 imagenet-sample photos from ../shared, each held 3 s as a camera scene would be)
written at 15 fps with the codecs edgeembed's AnnotatedVideoSink uses per file name; then a writer is killed
with SIGKILL after 4 s and the frames readable from what it left are counted.

    python benchmarks/bench_video_size.py
"""
from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from edgeembed.outputs.video import FOURCC  # noqa: E402

PICTURES = sorted((ROOT.parent / "shared" / "data" / "imagenet-sample").iterdir())[:10]
KILLED = """
import sys, time, cv2, numpy as np
w = cv2.VideoWriter(sys.argv[1], cv2.VideoWriter_fourcc(*sys.argv[2]), 15, (640, 480))
imgs = [cv2.resize(cv2.imread(p), (640, 480)) for p in sys.argv[3:]]
i = 0
while True:
    w.write(imgs[(i // 45) % len(imgs)]); i += 1; time.sleep(1 / 60)
"""


def frames_in(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def main() -> None:
    imgs = [cv2.resize(cv2.imread(str(p)), (640, 480)) for p in PICTURES]
    print(f"# {platform.machine()}, OpenCV {cv2.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| name | codec | MB per hour | frames readable after SIGKILL at 4 s |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for ext in (".mkv", ".mp4", ".avi"):
            path = Path(tmp) / f"a{ext}"
            w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC[ext]), 15, (640, 480))
            for i in range(15 * 60):  # one minute
                w.write(imgs[(i // 45) % len(imgs)])
            w.release()
            killed = Path(tmp) / f"k{ext}"
            proc = subprocess.Popen([sys.executable, "-c", KILLED, str(killed), FOURCC[ext], *map(str, PICTURES)])
            time.sleep(4)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            print(f"| {ext} | {FOURCC[ext]} | {os.path.getsize(path) / 1e6 * 60:.0f} | {frames_in(killed)} |")


if __name__ == "__main__":
    main()
