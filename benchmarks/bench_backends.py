"""Invoke time of the shipped models on each installed interpreter backend, side by side in one process.

The README's note on tflite-runtime (the fallback backend: numpy < 2, no XNNPACK int8) rests on this. Every backend
runs the same preprocessed pictures, one invoke each in turn, so machine load hits them alike; medians, and the
ratio to ai_edge_litert. tflite-runtime needs numpy 1.x: run this in a venv with both, e.g.

    python -m venv v && v/bin/pip install -c <(echo 'numpy<2') tflite-runtime -e .
    v/bin/python benchmarks/bench_backends.py [--threads 1] [--runs 30]
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
MODELS = ["mobilenet_v2_1.0_224_int8.tflite", "efficientnet_lite0_int8.tflite", "dlib_face_resnet_v1_int8.tflite"]


def _invoke_s(emb, tensor) -> float:
    it = emb.interpreter
    it.set_tensor(emb._input["index"], tensor[None])  # noqa: SLF001 - bare invoke timing
    t = time.perf_counter()
    it.invoke()
    return time.perf_counter() - t


def bench_model(path: Path, backends: list[str], threads: int, runs: int, images: list[Path]) -> dict:
    from edgeembed import Embedder

    embs = {b: Embedder.create_from_model_path(path, backend=b, num_threads=threads) for b in backends}
    try:
        tensors = next(iter(embs.values())).preprocessor(images)
        times: dict[str, list[float]] = {b: [] for b in backends}
        for e in embs.values():  # warm up
            _invoke_s(e, tensors[0])
        for i in range(runs):
            for b, e in embs.items():
                times[b].append(_invoke_s(e, tensors[i % len(tensors)]))
    finally:
        for e in embs.values():
            e.close()
    ms = {b: statistics.median(t) * 1e3 for b, t in times.items()}
    base = ms.get("ai_edge_litert")
    return {"model": path.name, "threads": threads, "runs": runs, "ms": {b: round(v, 2) for b, v in ms.items()},
            "ratio_to_ai_edge_litert": {b: round(v / base, 2) for b, v in ms.items()} if base else None}


def main(argv=None) -> int:
    from edgeembed.backends import BACKENDS, load_backend
    from edgeembed.errors import BackendError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args(argv)
    backends = []
    for b in BACKENDS:
        try:
            load_backend(b)
            backends.append(b)
        except BackendError as exc:
            print(f"skipped {b}: {exc}", file=sys.stderr)
    images = sorted((SHARED / "data/imagenet-sample").glob("*.jpg"))[:10]
    for name in MODELS:
        print(json.dumps(bench_model(ROOT / "models" / name, backends, args.threads, args.runs, images)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
