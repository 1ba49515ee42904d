"""Do two model files give the same outputs? (e.g. the same int8 graph with int8 edges and with uint8 edges)

    python benchmarks/same_outputs.py OLD.tflite NEW.tflite

Over the 500 held-aside imagenet-sample pictures (odd sorted positions), every 20th coil20 picture and every 10th
ORL picture, through the runtime (`Embedder`): checks that both files get the same input pixels (an int8 input is
compared as its uint8 view XOR 0x80) and prints the largest difference of the dequantized outputs and embeddings.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def _as_uint8(t: np.ndarray) -> np.ndarray:
    return t.view(np.uint8) ^ np.uint8(0x80) if t.dtype == np.int8 else t


def main() -> int:
    from converters.quantize import TFLiteRunner  # every output, dequantized (no TensorFlow)
    from edgeembed import Embedder

    old, new = sys.argv[1:3]
    run_a, run_b = TFLiteRunner(Path(old).read_bytes()), TFLiteRunner(Path(new).read_bytes())
    files = (sorted((DATA / "imagenet-sample").glob("*.jpg"))[1::2] + sorted((DATA / "coil20").rglob("*.png"))[::20]
             + sorted(p for p in (DATA / "orl-faces").rglob("*") if p.is_file() and p.suffix.lower() in (".pgm", ".png", ".jpg"))[::10])
    worst, n = 0.0, 0
    with Embedder.create_from_model_path(old) as a, Embedder.create_from_model_path(new) as b:
        types = f"{a.describe()['input']['dtype']} vs {b.describe()['input']['dtype']} input"
        for f in files:
            xa, xb = a.preprocessor(f), b.preprocessor(f)
            if not np.array_equal(_as_uint8(xa), _as_uint8(xb)):
                print(f"{f.name}: the two files get different input pixels", file=sys.stderr)
                return 1
            ea, eb = a.embed(f), b.embed(f)
            worst = max(worst, float(np.abs(ea.vector - eb.vector).max()),
                        *(float(np.abs(x - y).max()) for x, y in zip(run_a(xa), run_b(xb))))
            n += 1
    print(f"{n} pictures ({types}): "
          f"largest difference of the dequantized outputs and embeddings {worst:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
