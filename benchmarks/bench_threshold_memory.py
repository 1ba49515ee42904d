"""Large galleries. (1) Memory and time of the automatic threshold: the rule as it was (one 4000 x N block of
similarities, plus two np.where copies and the label mask) against today's (256 rows at a time), side by side in
one process, on the same vectors. Every enrolment and removal re-derives it under the gallery's write lock.

    python benchmarks/bench_threshold_memory.py [--entries 20000] [--dim 1280]

(2) What the whole-file CRC-32 adds to reading the vectors for a search (stop 26: every committed row is checked
whenever they are all read): np.fromfile alone against np.fromfile + zlib.crc32, alternating, 7 rounds, medians.

Vectors: unit vectors around one centre per label (72 per label, as COIL-20's views), seeded.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np

from edgeembed.recognizer import AUTO_THRESHOLD_FLOOR, AUTO_THRESHOLD_SAMPLE, threshold_rule


def rule_before(m: np.ndarray, row_label: np.ndarray) -> float:
    """The rule as computed before stop 26 (unchunked), for a gallery of many labels."""
    idx = np.random.default_rng(0).choice(len(m), AUTO_THRESHOLD_SAMPLE, replace=False) if len(m) > AUTO_THRESHOLD_SAMPLE \
        else np.arange(len(m))
    sims = m[idx] @ m.T
    same = row_label[idx][:, None] == row_label[None, :]
    best_other = np.where(same, -np.inf, sims).max(axis=1)
    sims_same = np.where(same, sims, -np.inf)
    sims_same[np.arange(len(idx)), idx] = -np.inf
    best_same = sims_same.max(axis=1)
    best_same = best_same[np.isfinite(best_same)]
    return max(AUTO_THRESHOLD_FLOOR, (float(np.median(best_same)) + float(np.median(best_other))) / 2)


def measure(fn, *args):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=1280)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    labels = np.arange(a.entries) // 72
    centres = rng.standard_normal((labels.max() + 1, a.dim)).astype(np.float32)
    m = centres[labels] + 0.25 * rng.standard_normal((a.entries, a.dim)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    before, t_before, peak_before = measure(rule_before, m, labels)
    now, t_now, peak_now = measure(threshold_rule, m, labels)
    print(f"{a.entries} entries x {a.dim}-d ({m.nbytes / 1e6:.0f} MB of vectors)")
    print(f"before: threshold {before:.6f}, {t_before:.2f} s, peak {peak_before / 1e6:.0f} MB above the vectors")
    print(f"now:    threshold {now:.6f}, {t_now:.2f} s, peak {peak_now / 1e6:.0f} MB above the vectors")
    print(f"ratio now/before: time {t_now / t_before:.2f}, memory {peak_now / peak_before:.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vectors.f32"
        m.astype("<f4").tofile(path)
        read, checked = [], []
        for _ in range(7):
            t0 = time.perf_counter()
            np.fromfile(path, "<f4")
            read.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            zlib.crc32(np.fromfile(path, "<f4"))
            checked.append(time.perf_counter() - t0)
    r, c = statistics.median(read), statistics.median(checked)
    print(f"reading the vectors: {r * 1000:.0f} ms, with the CRC-32 {c * 1000:.0f} ms (ratio {c / r:.2f})")


if __name__ == "__main__":
    main()
