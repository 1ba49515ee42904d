"""int8 vs float32 latency of the converted models, side by side in one run (ai-edge-litert).

Both models of a pair come from the same converter run options (see bench_convert_full.py, which
writes the float32 twins); they alternate invoke by invoke on the same preprocessed pictures so
machine load hits both alike; medians are compared. Bar (issue 3): int8 <= 0.8x float32.

    python benchmarks/bench_convert_latency.py --pair models/mobilenet_v2_1.0_224_int8.tflite /tmp/edgeembed_full/mobilenet_v2_float32.tflite \
        [--pair INT8 FLOAT ...] [--threads 1] [--runs 60]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def _median_ms(emb, tensors, runs):
    it, idx = emb.interpreter, emb._input["index"]  # noqa: SLF001 - bare invoke timing
    times = []
    for i in range(runs):
        it.set_tensor(idx, tensors[i % len(tensors)][None])
        t = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t)
    return times


def bench_pair(int8_path: str, float_path: str, threads: int, runs: int, images: list[Path]) -> dict:
    from edgeembed import Embedder

    with Embedder.create_from_model_path(int8_path, num_threads=threads) as q, \
            Embedder.create_from_model_path(float_path, num_threads=threads) as f:
        tq, tf = q.preprocessor(images), f.preprocessor(images)
        for e, t in ((q, tq), (f, tf)):  # warm up
            _median_ms(e, t, 5)
        a, b = [], []
        for i in range(runs):  # alternate one invoke each
            a += _median_ms(q, tq[i % len(tq):][:1], 1)
            b += _median_ms(f, tf[i % len(tf):][:1], 1)
    mq, mf = statistics.median(a) * 1e3, statistics.median(b) * 1e3
    return {"int8": int8_path, "float32": float_path, "threads": threads, "runs": runs,
            "int8_ms": round(mq, 2), "float32_ms": round(mf, 2), "ratio": round(mq / mf, 3),
            "int8_bytes": Path(int8_path).stat().st_size, "float32_bytes": Path(float_path).stat().st_size}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", nargs=2, action="append", metavar=("INT8", "FLOAT32"), required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=60)
    args = ap.parse_args(argv)
    images = sorted((SHARED / "data/imagenet-sample").glob("*.jpg"))[:10]
    rows = [bench_pair(q, f, args.threads, args.runs, images) for q, f in args.pair]
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
