"""What the lossless integer input saves per picture on the device path, side by side in one run.

Two int8 models of one architecture: BEFORE takes (pixel - mean_c) / std_c, which the runtime turns
into int8 with float arithmetic; AFTER has that normalisation folded into its first convolution
(converters/input_fold.py), so its int8 input is pixel - 128 and the runtime fills it with one XOR.
Measured: ``Embedder.embed(frame)`` on decoded RGB frames (resize, input, invoke, output), and the
input step alone (``Preprocessor.normalize`` on the resized picture), alternating picture by picture.

    python benchmarks/bench_input_fold.py BEFORE.tflite AFTER.tflite [--threads 1] [--images 200] [--rounds 3]

BEFORE: e.g. the shipped file before the change, ``git show e9ea4eb:models/mobilenet_v2_1.0_224_int8.tflite > /tmp/before.tflite``.
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
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))  # run from a checkout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--images", type=int, default=200, help="imagenet-sample images to use")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    from edgeembed import Embedder, read_image

    files = sorted((SHARED / "data/imagenet-sample").glob("*.jpg"))[: args.images]
    frames = [read_image(f) for f in files]
    models = {"before": Embedder.create_from_model_path(args.before, num_threads=args.threads),
              "after": Embedder.create_from_model_path(args.after, num_threads=args.threads)}
    resized = {k: [e.preprocessor.resized(f)[None] for f in frames] for k, e in models.items()}
    for e in models.values():  # warm-up
        for f in frames[:10]:
            e.embed(f)
    embed = {k: [] for k in models}
    norm = {k: [] for k in models}
    for _ in range(args.rounds):
        for i, f in enumerate(frames):
            for k, e in models.items():
                t0 = time.perf_counter()
                e.embed(f)
                t1 = time.perf_counter()
                e.preprocessor.normalize(resized[k][i])
                t2 = time.perf_counter()
                embed[k].append(t1 - t0)
                norm[k].append(t2 - t1)
    med = {f"{k}_embed_ms": round(statistics.median(v) * 1e3, 3) for k, v in embed.items()}
    med.update({f"{k}_input_ms": round(statistics.median(v) * 1e3, 4) for k, v in norm.items()})
    result = {"before": Path(args.before).name, "after": args.after, "threads": args.threads, "images": len(frames),
              "rounds": args.rounds, **med, "embed_ratio_after_before": round(med["after_embed_ms"] / med["before_embed_ms"], 3),
              "input": {k: str(e.describe()["input"]["quantization"]) for k, e in models.items()},
              "machine": f"{platform.machine()} python {platform.python_version()}", "date": time.strftime("%Y-%m-%d")}
    for e in models.values():
        e.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
