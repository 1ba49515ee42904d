"""Reading phone-sized JPEGs for a 224x224 model: decoded at a reduction (1/2, 1/4, 1/8) vs in full, side by side.

``Preprocessor.resized(path)`` decodes a JPEG whose shorter side is at least 2, 4 or 8 times three times the model
side at that reduction (``edgeembed.preprocess.decode_keep_side`` / ``jpeg_reduction``). Baseline: the same picture
decoded in full and resized by the same code (``resize(read_image(path), ...)``, what every path did before),
in the same process, alternating picture by picture. Pictures: ``--count`` imagenet-sample pictures (../shared)
enlarged to ``--size`` (default 4032x3024, a 12 MP phone photo), with sensor-like noise (``--noise``, sd in grey
levels, default 8: the files are then as large as a phone's) at JPEG quality 92, written to a temporary folder.
Reported: time to read + resize, time for a whole ``embed``, the decoded picture's size, and the embeddings' cosine to each other and to the ideal input (an exact area average of
the fully decoded picture, ``cv2.INTER_AREA``).

    python benchmarks/bench_large_photos.py [--model models/mobilenet_v2_1.0_224_int8.tflite] [--count 40] [--noise 8]
        [--size 4032x3024]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from edgeembed import Embedder  # noqa: E402
from edgeembed.preprocess import jpeg_reduction, read_image, resize  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "imagenet-sample"


def make_photos(folder: Path, count: int, noise: float, size: tuple[int, int]) -> list[Path]:
    rng = np.random.default_rng(0)
    sources = sorted(SHARED.glob("*.jpg"))[1::2][:count]
    out = []
    for i, src in enumerate(sources):
        im = cv2.imread(str(src))
        big = cv2.resize(im, size, interpolation=cv2.INTER_CUBIC).astype(np.int16)
        if noise:
            big += rng.normal(0, noise, big.shape).astype(np.int16)
        path = folder / f"photo{i:03d}.jpg"
        cv2.imwrite(str(path), np.clip(big, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 92])
        out.append(path)
    return out


def ms(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "mobilenet_v2_1.0_224_int8.tflite"))
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--noise", type=float, default=8.0)
    ap.add_argument("--size", default="4032x3024", help="WIDTHxHEIGHT of the enlarged pictures")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Embedder.create_from_model_path(args.model, num_threads=1) as emb:
        pre = emb.preprocessor
        photos = make_photos(Path(tmp), args.count, args.noise, tuple(int(v) for v in args.size.split("x")))
        old_read, new_read, old_embed, new_embed = [], [], [], []
        cos_new_old, cos_new_ideal, cos_old_ideal, reductions, decoded_mb = [], [], [], [], []
        for i, p in enumerate(photos):
            reductions.append(jpeg_reduction(p.read_bytes(), pre.keep_side))
            def old(p=p):
                return resize(read_image(p), pre.size, pre.pre)
            def new(p=p):
                return pre.resized(p)
            pairs = [(old, old_read), (new, new_read)]
            for fn, times in (pairs if i % 2 else pairs[::-1]):
                fn()  # page cache warm for both
                times.append(ms(fn))
            embeds = [(lambda p=p: emb.embed(read_image(p)), old_embed), (lambda p=p: emb.embed(p), new_embed)]
            for fn, times in (embeds if i % 2 else embeds[::-1]):
                times.append(ms(fn))
            full = read_image(p)
            decoded_mb.append((full.nbytes / 1e6, read_image(p, pre.keep_side).nbytes / 1e6))
            v_old, v_new = emb.embed(full).vector, emb.embed(p).vector
            v_ideal = emb.embed(cv2.resize(full, (pre.size[1], pre.size[0]), interpolation=cv2.INTER_AREA)).vector
            cos_new_old.append(float(v_new @ v_old))
            cos_new_ideal.append(float(v_new @ v_ideal))
            cos_old_ideal.append(float(v_old @ v_ideal))
        med = statistics.median
        result = {
            "machine": f"{platform.machine()}, {platform.processor() or '?'}, python {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "model": Path(args.model).name, "pictures": len(photos), "size": args.size, "noise_sd": args.noise,
            "file_mb_median": round(med(p.stat().st_size for p in photos) / 1e6, 2),
            "reductions": {str(r): reductions.count(r) for r in sorted(set(reductions))},
            "decoded_mb_full_vs_reduced": [round(med(a for a, _ in decoded_mb), 1), round(med(b for _, b in decoded_mb), 2)],
            "read_resize_ms_full": round(med(old_read), 1), "read_resize_ms_reduced": round(med(new_read), 1),
            "read_resize_ratio": round(med(new_read) / med(old_read), 2),
            "embed_ms_full": round(med(old_embed), 1), "embed_ms_reduced": round(med(new_embed), 1),
            "embed_ratio": round(med(new_embed) / med(old_embed), 2),
            "cosine_reduced_vs_full": [round(float(np.mean(cos_new_old)), 4), round(float(np.min(cos_new_old)), 4)],
            "cosine_to_ideal_reduced": [round(float(np.mean(cos_new_ideal)), 4), round(float(np.min(cos_new_ideal)), 4)],
            "cosine_to_ideal_full": [round(float(np.mean(cos_old_ideal)), 4), round(float(np.min(cos_old_ideal)), 4)],
        }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
