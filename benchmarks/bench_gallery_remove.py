"""`gallery remove` of one label from a large gallery: the removal alone (as before stop 28, the vectors left in the
vector file until a `gallery compact`) against the removal followed by the compaction that erases them (what the
command does since), side by side in one process on two copies of the same gallery, alternating, medians.

    python benchmarks/bench_gallery_remove.py [--entries 20000] [--dim 1280] [--rounds 3]

Vectors: unit vectors around one centre per label (72 per label, as COIL-20's views), seeded. Both paths re-derive
the automatic threshold under the write lock (as the command does); the compaction adds the rewrite of the vectors.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeembed.gallery import Gallery, ModelBinding
from edgeembed.recognizer import threshold_values


def build(path: Path, entries: int, dim: int) -> list[str]:
    rng = np.random.default_rng(0)
    labels = [f"l{i:04d}" for i in range(max(1, entries // 72))]
    centres = rng.standard_normal((len(labels), dim)).astype(np.float32)
    names = [labels[i // 72 % len(labels)] for i in range(entries)]
    v = centres[[i // 72 % len(labels) for i in range(entries)]] + 0.6 * rng.standard_normal((entries, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    binding = ModelBinding(model_path="bench.tflite", fingerprint="bench", dim=dim,
                           preprocessing={"mean": [127.5] * 3, "std": [127.5] * 3}, mode="image", output=None)
    with Gallery.create(path, binding) as g:
        g.add(names, v, [None] * entries)
    return labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        labels = build(base, a.entries, a.dim)
        times: dict[str, list[float]] = {"remove only (before)": [], "remove + erase (now)": []}
        for r in range(a.rounds):
            for name in (list(times) if r % 2 == 0 else list(times)[::-1]):
                copy = Path(tmp) / f"c{r}"
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(base, copy)
                with Gallery.open(copy) as g:
                    t0 = time.perf_counter()
                    g.remove_label(labels[r % len(labels)], meta=threshold_values)
                    if name.endswith("(now)"):
                        g.compact()
                    times[name].append(time.perf_counter() - t0)
        mb = a.entries * a.dim * 4 / 1e6
        before, now = (statistics.median(v) for v in times.values())
        print(f"{a.entries} entries x {a.dim}-d ({mb:.0f} MB of vectors), one label of 72 removed, median of {a.rounds}:")
        print(f"  remove only (before): {before:.2f} s")
        print(f"  remove + erase (now): {now:.2f} s   ratio {now / before:.2f}")


if __name__ == "__main__":
    main()
