"""How a small gallery's automatic threshold answers strangers: with and without the model's figure for
pictures of different things (its metadata's ``unrelated_similarity``, measured by the converter).

Galleries of 1, 2, 3, 5 and 10 COIL-20 objects, 20 random draws each, built with the real gallery code
(edgeembed.recognizer), enrolled with 4 views 90 degrees apart (0, 90, 180, 270), with 1 view, and with 3 and 4 views
5 degrees apart (as a phone burst gives them). Side by side on the same galleries: the rule before (without the
model's figure: a gallery of one label kept the default 0.5) and now (edgeembed.recognizer.auto_threshold). Reported:
  known      the unseen views of each enrolled object answered with its label,
  ImageNet   imagenet-sample's held-aside pictures (odd sorted positions) taken for an enrolled object,
  COIL       the views of the COIL objects not enrolled taken for an enrolled one.

    python benchmarks/open_set_small_galleries.py [MODEL ...]   (default: the two shipped image models)
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"

from edgeembed import Embedder  # noqa: E402
from edgeembed.gallery import DEFAULT_THRESHOLD  # noqa: E402
from edgeembed.progress import progress  # noqa: E402
from edgeembed.recognizer import add_entries, auto_threshold, create_gallery  # noqa: E402

SIZES = (1, 2, 3, 5, 10)
DRAWS = 20
VIEWS = {"4 views 90 degrees apart": (0, 18, 36, 54), "1 view": (0,), "3 views 5 degrees apart": (0, 1, 2),
         "4 views 5 degrees apart": (0, 1, 2, 3)}


def rates(vectors_by_obj: dict, strangers: np.ndarray, gallery_objs: list, m: np.ndarray, labels: np.ndarray,
          t: float, views: tuple) -> tuple[float, float, float]:
    def answer(q):
        s = q @ m.T
        best = s.argmax(1)
        return np.where(s.max(1) >= t, labels[best], None)

    known = np.concatenate([answer(np.delete(vectors_by_obj[o], list(views), 0)) == o for o in gallery_objs])
    others = np.concatenate([vectors_by_obj[o] for o in vectors_by_obj if o not in gallery_objs])
    return float(known.mean()), float((answer(strangers) != None).mean()), float((answer(others) != None).mean())  # noqa: E711


def main(models: list[str]) -> None:
    coil = sorted(p for p in (SHARED / "coil20").iterdir() if p.is_dir())
    imagenet = sorted((SHARED / "imagenet-sample").iterdir())[1::2]
    for model in models:
        with Embedder.create_from_model_path(model, num_threads=2) as emb:
            by_obj = {p.name: np.stack([emb.embed(f).vector for f in sorted(p.iterdir())])
                      for p in progress(coil, desc="embedding COIL-20")}
            strangers = np.stack([emb.embed(f).vector for f in progress(imagenet, desc="embedding ImageNet")])
            print(f"\n{Path(model).name}: model figure (99th percentile of unrelated pictures): "
                  f"{(emb.spec.extra or {}).get('unrelated_similarity', {}).get('p99')}")
            for what, views in VIEWS.items():
                print(f"\n{what}\n\n| objects | threshold before / now | known before / now | "
                      "ImageNet taken before / now | other COIL taken before / now |")
                print("|---|---|---|---|---|")
                rng = np.random.default_rng(0)
                for n in SIZES:
                    acc = []
                    for _ in range(DRAWS):
                        objs = sorted(rng.choice(list(by_obj), n, replace=False))
                        labels = np.repeat(objs, len(views))
                        m = np.concatenate([by_obj[o][list(views)] for o in objs])
                        with tempfile.TemporaryDirectory() as tmp:
                            g = create_gallery(Path(tmp) / "g", emb)
                            try:
                                add_entries(g, list(labels), m, [None] * len(labels))
                                now = g.threshold
                                # the rule before: no model figure (given as None; popping it from g.meta no
                                # longer worked once auto_threshold read the gallery's meta again)
                                before = auto_threshold(g, unrelated=None) or DEFAULT_THRESHOLD
                            finally:
                                g.close()
                        acc.append((before, now, *rates(by_obj, strangers, objs, m, labels, before, views),
                                    *rates(by_obj, strangers, objs, m, labels, now, views)))
                    a = np.mean(acc, axis=0)
                    print(f"| {n} | {a[0]:.3f} / {a[1]:.3f} | {a[2]:.3f} / {a[5]:.3f} | {a[3]:.3f} / {a[6]:.3f} | "
                          f"{a[4]:.3f} / {a[7]:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:] or [str(REPO / "models" / "mobilenet_v2_1.0_224_int8.tflite"),
                          str(REPO / "models" / "efficientnet_lite0_int8.tflite")])
