"""What following other processes' commits costs per search, side by side with the search without it.

Before each search a gallery asks SQLite whether another connection has committed (``PRAGMA data_version``) and
reloads if so: a person enrolled or removed while ``recognize`` runs counts from the next frame. Baseline: the
same ``Gallery.recognize`` with that check switched off (the search as it was before), in the same process,
alternating, on one synthetic gallery of ``--entries`` unit vectors of ``--dim`` dimensions (the shipped
MobileNetV2 gives 1280), and for scale the shipped model's ``invoke`` time that every frame pays anyway.

    python benchmarks/bench_gallery_search.py [--entries 1000] [--dim 1280] [--calls 2000]
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

import numpy as np  # noqa: E402

from edgeembed.gallery import Gallery, ModelBinding  # noqa: E402


def per_call_us(fn, calls: int) -> float:
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1000)
    ap.add_argument("--labels", type=int, default=100)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    v = rng.standard_normal((a.entries, a.dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        g = Gallery.create(Path(tmp) / "g", ModelBinding(model_path="/m.tflite", fingerprint="bench", dim=a.dim,
                                                         preprocessing={}))
        g.add([f"label_{i % a.labels}" for i in range(a.entries)], v)
        q = v[a.entries // 2]
        g.recognize(q)  # load the matrix once
        checked = g._refresh
        times: dict[str, list[float]] = {"with check": [], "baseline": []}
        for _ in range(a.rounds):
            g._refresh = checked
            times["with check"].append(per_call_us(lambda: g.recognize(q), a.calls))
            g._refresh = lambda: None  # the search as it was: no look at other connections
            times["baseline"].append(per_call_us(lambda: g.recognize(q), a.calls))
        g.close()
    from edgeembed import Embedder  # noqa: E402

    with Embedder.create_from_model_path(ROOT / "models" / "mobilenet_v2_1.0_224_int8.tflite", num_threads=1) as emb:
        tensor = emb.preprocessor(np.zeros((224, 224, 3), np.uint8))
        emb.embed_tensor(tensor)
        invoke_us = statistics.median(per_call_us(lambda: emb.embed_tensor(tensor), 50) for _ in range(3))
    med = {k: statistics.median(x) for k, x in times.items()}
    print(json.dumps({"entries": a.entries, "dim": a.dim, "calls": a.calls, "rounds": a.rounds,
                      "recognize_us_with_check": round(med["with check"], 1),
                      "recognize_us_baseline": round(med["baseline"], 1),
                      "ratio": round(med["with check"] / med["baseline"], 2),
                      "check_us": round(med["with check"] - med["baseline"], 1),
                      "mobilenet_v2_embed_us_1_thread": round(invoke_us, 0),
                      "check_share_of_a_frame": round((med["with check"] - med["baseline"]) / (invoke_us + med["with check"]), 4),
                      "machine": platform.machine(), "python": platform.python_version()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
