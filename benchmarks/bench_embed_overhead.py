"""Embedding overhead beyond a bare ``interpreter.invoke()``, at batch 1, side by side in one run.

Baseline: a plain ai-edge-litert Interpreter on the same model and thread count, its input tensor
already prepared: ``set_tensor`` + ``invoke`` + ``get_tensor``. Measured: ``Embedder.embed(frame)``
on a decoded RGB frame (what a camera hands over): resize/crop, quantize, invoke, dequantize,
L2-normalise. The two alternate image by image so machine load hits both alike; medians are compared.

    python benchmarks/bench_embed_overhead.py [--model M] [--threads 1] [--images 200] [--rounds 3]
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(SHARED / "models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"))
    ap.add_argument("--images", type=int, default=200, help="imagenet-sample images to use")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from ai_edge_litert.interpreter import Interpreter

    from edgeembed import Embedder, read_image

    files = sorted((SHARED / "data/imagenet-sample").glob("*.jpg"))[: args.images]
    frames = [read_image(f) for f in files]
    emb = Embedder.create_from_model_path(args.model, num_threads=args.threads)
    bare = Interpreter(model_path=args.model, num_threads=args.threads)
    bare.allocate_tensors()
    inp, out = bare.get_input_details()[0], bare.get_output_details()[0]
    tensors = [emb.preprocessor(f) for f in frames]  # the bare run gets its input for free

    for f, t in zip(frames[:10], tensors[:10]):  # warm-up both
        emb.embed(f)
        bare.set_tensor(inp["index"], t)
        bare.invoke()
    t_bare, t_embed = [], []
    for _ in range(args.rounds):
        for f, t in zip(frames, tensors):
            t0 = time.perf_counter()
            bare.set_tensor(inp["index"], t)
            bare.invoke()
            bare.get_tensor(out["index"])
            t1 = time.perf_counter()
            emb.embed(f)
            t2 = time.perf_counter()
            t_bare.append(t1 - t0)
            t_embed.append(t2 - t1)
    med_b, med_e = statistics.median(t_bare) * 1000, statistics.median(t_embed) * 1000
    result = {
        "model": Path(args.model).name, "threads": args.threads, "images": len(frames), "rounds": args.rounds,
        "bare_invoke_ms_median": round(med_b, 3), "embed_ms_median": round(med_e, 3),
        "overhead_ratio": round(med_e / med_b, 4),
        "bare_invoke_ms_mean": round(statistics.fmean(t_bare) * 1000, 3),
        "embed_ms_mean": round(statistics.fmean(t_embed) * 1000, 3),
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
