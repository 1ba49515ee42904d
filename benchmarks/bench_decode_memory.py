"""Peak memory of decoding one large picture, as a multiple of the decoded picture (edgeembed.memory.DECODE_PEAK).

Each picture is read, then decoded by ``decode_image`` (as ``read_image`` does) in a fresh process; the peak
resident size over the decode (VmHWM), less the process's size once the file is read (VmRSS), is divided by the
decoded array's size. Both the full decode (face
mode) and the reduced decode of a whole-image model (``keep_side`` 672, a 224-pixel input) are measured for JPEG;
every other format OpenCV decodes here is decoded in full. "counted" is what ``edgeembed.memory.decode_need``
reserves for that file, in decoded pictures: it must stay above the measured peak.

    python benchmarks/bench_decode_memory.py [--size 9000x12000] [--formats jpg,png,...]
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
from pathlib import Path
from edgeembed.image_header import image_kind, image_size, jpeg_coefficient_bytes, sample_planes
from edgeembed.memory import decode_need
from edgeembed.preprocess import _opencv, decode_image, jpeg_reduction

def status(key):  # kB, from the kernel's own accounting of this process (ru_maxrss would carry the parent's over fork)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))

_opencv()
data = Path(sys.argv[1]).read_bytes()  # read before: the memory check runs on what is left once the file is read
before = status("VmRSS")
rgb = decode_image(data, sys.argv[1], int(sys.argv[2]) or None)
peak = status("VmHWM")
kind, (h, w) = image_kind(data[:32]), image_size(data)
r = jpeg_reduction(data, int(sys.argv[2])) if kind == "JPEG" and int(sys.argv[2]) else 1
need = decode_need(w, h, r, jpeg_coefficient_bytes(data) if kind == "JPEG" else 0, kind, sample_planes(data, kind))
print(json.dumps({"shape": rgb.shape, "decoded_mb": rgb.nbytes / 2**20, "peak_mb": (peak - before) / 1024,
                  "counted": need / rgb.nbytes}))
"""

FORMATS = {  # name: (extension, channels, imwrite parameters)
    "jpg": (".jpg", 3, []), "png": (".png", 3, []), "bmp": (".bmp", 3, []), "webp": (".webp", 3, []),
    "webp-alpha": (".webp", 4, []),
    "tif": (".tif", 3, []), "ppm": (".ppm", 3, []), "gif": (".gif", 3, []), "jp2": (".jp2", 3, []),
    "jp2-alpha": (".jp2", 4, []), "jp2-grey": (".jp2", 1, []), "avif": (".avif", 3, []), "avif-alpha": (".avif", 4, []),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="9000x12000", help="HEIGHTxWIDTH of the test picture (default 9000x12000, 108 MP)")
    ap.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated, of {', '.join(FORMATS)}")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    img = np.empty((h, w, 4), np.uint8)
    img[..., 0] = (np.arange(w) % 251).astype(np.uint8)[None, :]
    img[..., 1] = (np.arange(h) % 241).astype(np.uint8)[:, None]
    img[..., 2] = 90
    img[..., 3] = 200
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name in args.formats.split(","):
            ext, channels, params = FORMATS[name]
            path = Path(tmp) / f"big-{name}{ext}"
            if not cv2.imwrite(str(path), img[..., 0] if channels == 1 else img[..., :channels], params):
                print(f"{name}: OpenCV cannot write it here; skipped", file=sys.stderr)
                continue
            for keep in (0, 672) if ext == ".jpg" else (0,):  # only JPEGs are decoded at a reduction
                out = subprocess.run([sys.executable, "-c", PROBE, str(path), str(keep)], capture_output=True, text=True,
                                     check=True)
                r = json.loads(out.stdout)
                rows.append({"file": name, "decode": "reduced" if keep else "full", "bytes_mb": path.stat().st_size / 2**20,
                             **r, "peak_over_decoded": r["peak_mb"] / r["decoded_mb"]})
    print(f"picture {h}x{w}")
    print("| file | decode | file MB | decoded | decoded MB | peak MB over the decode | peak / decoded | counted |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['file']} | {r['decode']} | {r['bytes_mb']:.1f} | {r['shape'][0]}x{r['shape'][1]} | {r['decoded_mb']:.0f} | "
              f"{r['peak_mb']:.0f} | {r['peak_over_decoded']:.2f} | {r['counted']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
