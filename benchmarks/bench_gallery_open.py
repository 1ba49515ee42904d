"""What the integrity check on opening a gallery costs, side by side with the open it replaced.

``Gallery.open`` runs SQLite's ``PRAGMA quick_check`` (every table and index) so that a database damaged past
its first page is refused at once instead of failing, or silently listing nothing, later. Baseline: the same
connection and meta read without the check (what ``Gallery.open`` did before). Both alternate, ``--rounds``
times each, on one synthetic gallery of ``--entries`` entries with realistic source paths (the database size
depends on the entries, not on the embedding dimension; the vectors live in their own file).

    python benchmarks/bench_gallery_open.py [--entries 100000] [--rounds 20]
"""
from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

import numpy as np  # noqa: E402

from edgeembed.gallery import DB_NAME, Gallery, ModelBinding  # noqa: E402


def baseline_open(path: Path) -> None:
    db = sqlite3.connect(path / DB_NAME, timeout=30)
    db.execute("PRAGMA synchronous=FULL")
    db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
    db.execute("SELECT key, value FROM meta").fetchall()
    db.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--labels", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gallery"
        g = Gallery.create(path, ModelBinding(model_path="/m.tflite", fingerprint="bench", dim=8, preprocessing={}))
        v = np.random.default_rng(0).standard_normal((a.entries, 8)).astype(np.float32)
        g.add([f"person_{i % a.labels}" for i in range(a.entries)], v,
              [f"/home/pi/captures/2026/11/26/frame_{i:08d}.jpg" for i in range(a.entries)])
        g.close()
        times: dict[str, list[float]] = {"with check": [], "baseline": []}
        for _ in range(a.rounds):
            t = time.perf_counter()
            Gallery.open(path).close()
            times["with check"].append(time.perf_counter() - t)
            t = time.perf_counter()
            baseline_open(path)
            times["baseline"].append(time.perf_counter() - t)
        size = (path / DB_NAME).stat().st_size
    med = {k: statistics.median(x) * 1000 for k, x in times.items()}
    print(json.dumps({"entries": a.entries, "database_mb": round(size / 1e6, 1), "rounds": a.rounds,
                      "open_ms_with_check": round(med["with check"], 2), "open_ms_baseline": round(med["baseline"], 2),
                      "ratio": round(med["with check"] / med["baseline"], 1), "machine": platform.machine(),
                      "python": platform.python_version()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
