"""Cost of the look-alike check at enrolment (recognizer.add_entries_checked vs add_entries), side by side.

Real embeddings: every coil20 picture through the shipped MobileNetV2 (1440 x 1280-d). Each round enrols the
last NEW of them into a fresh gallery already holding the rest, once with and once without the check
(alternating), and reports the medians. ``--repeat K`` tiles the stored set K times (labels suffixed) to show
how the check grows with the gallery.

    python benchmarks/bench_look_alikes.py [--new 100] [--repeat 1 10] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeembed import Embedder  # noqa: E402
from edgeembed.gallery import Gallery  # noqa: E402
from edgeembed.preprocess import list_images  # noqa: E402
from edgeembed.recognizer import add_entries, add_entries_checked, binding_for  # noqa: E402

COIL = ROOT.parent / "shared" / "data" / "coil20"
MODEL = ROOT / "models" / "mobilenet_v2_1.0_224_int8.tflite"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new", type=int, default=100, help="pictures enrolled per round (default 100)")
    ap.add_argument("--repeat", type=int, nargs="+", default=[1, 10], help="tile the stored set this many times")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    files = list_images(COIL, recursive=True)
    with Embedder.create_from_model_path(MODEL) as emb:
        vectors = np.stack([emb.embed(f).vector for f in files])
        binding = binding_for(emb)
    labels = [f.parent.name for f in files]
    sources = [str(f) for f in files]
    print(f"{len(files)} coil20 embeddings ({vectors.shape[1]}-d), {args.new} enrolled per round")
    print("| stored entries | add_entries ms | add_entries_checked ms | ratio |")
    print("|---|---|---|---|")
    for k in args.repeat:
        stored_v = np.concatenate([vectors[:-args.new]] * k)
        stored_l = [f"{lab}-{i}" for i in range(k) for lab in labels[:-args.new]]
        stored_s = [f"{s}#{i}" for i in range(k) for s in sources[:-args.new]]
        times = {"plain": [], "checked": []}
        for _ in range(args.rounds):
            for kind in ("plain", "checked"):
                with tempfile.TemporaryDirectory() as tmp:
                    g = Gallery.create(Path(tmp) / "g", binding)
                    g.add(stored_l, stored_v, stored_s)
                    len(g.matrix)  # loaded, as an enrolment into an open gallery finds it
                    t = time.perf_counter()
                    if kind == "plain":
                        add_entries(g, labels[-args.new:], vectors[-args.new:], sources[-args.new:])
                    else:
                        add_entries_checked(g, labels[-args.new:], vectors[-args.new:], sources[-args.new:])
                    times[kind].append((time.perf_counter() - t) * 1000)
                    g.close()
        a, b = statistics.median(times["plain"]), statistics.median(times["checked"])
        print(f"| {len(stored_v)} | {a:.0f} | {b:.0f} | {b / a:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
