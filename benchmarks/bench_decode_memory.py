"""Peak memory of decoding one large picture, as a multiple of the decoded picture (edgeembed.memory.DECODE_PEAK).

Each picture is decoded by ``read_image`` in a fresh process; the peak resident size over the decode (VmHWM),
less the process's size before it (VmRSS), is divided by the decoded array's size. Both the full decode (face
mode) and the reduced decode of a whole-image model (``keep_side`` 672, a 224-pixel input) are measured.

    python benchmarks/bench_decode_memory.py [--size 9000x12000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

PROBE = """
import json, sys
from edgeembed.preprocess import _opencv, read_image

def status(key):  # kB, from the kernel's own accounting of this process (ru_maxrss would carry the parent's over fork)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))

_opencv()
before = status("VmRSS")
rgb = read_image(sys.argv[1], int(sys.argv[2]) or None)
peak = status("VmHWM")
print(json.dumps({"shape": rgb.shape, "decoded_mb": rgb.nbytes / 2**20, "peak_mb": (peak - before) / 1024}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="9000x12000", help="HEIGHTxWIDTH of the test picture (default 9000x12000, 108 MP)")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (np.arange(w) % 251).astype(np.uint8)[None, :]
    img[..., 1] = (np.arange(h) % 241).astype(np.uint8)[:, None]
    img[..., 2] = 90
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for ext in (".jpg", ".png"):
            path = Path(tmp) / f"big{ext}"
            cv2.imwrite(str(path), img)
            for keep in (0, 672):
                if ext == ".png" and keep:
                    continue  # only JPEGs are decoded at a reduction
                out = subprocess.run([sys.executable, "-c", PROBE, str(path), str(keep)], capture_output=True, text=True,
                                     check=True)
                r = json.loads(out.stdout)
                rows.append({"file": ext[1:].upper(), "decode": "reduced" if keep else "full", "bytes_mb": path.stat().st_size / 2**20,
                             **r, "peak_over_decoded": r["peak_mb"] / r["decoded_mb"]})
    print(f"picture {h}x{w}")
    print("| file | decode | file MB | decoded | decoded MB | peak MB over the decode | peak / decoded |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['file']} | {r['decode']} | {r['bytes_mb']:.1f} | {r['shape'][0]}x{r['shape'][1]} | {r['decoded_mb']:.0f} | "
              f"{r['peak_mb']:.0f} | {r['peak_over_decoded']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
