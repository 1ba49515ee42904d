"""Face mode against face_recognition (dlib), side by side in one run, on the same images and protocol.

Every ORL image goes through both, interleaved image by image (so machine load hits both
alike), 1 thread each:

* edgeembed: BlazeFace short range on LiteRT, template alignment, MobileFaceNet float
  (../shared/models/mobilefacenet.tflite), int8 quantized by edgeembed itself from that float
  file (converters/tflite_quant.py, written to a temp dir, never kept), and the shared uint8 file;
* face_recognition: HOG detector (retried with 2 upsamplings when the default finds no
  face, as edgeembed's detector retries on a wider canvas), 5-point landmarks, dlib ResNet
  descriptor (dlib-bin).

Accuracy: the eval protocol (edgeembed.evaluate: 1 enrolled image per person, open set with
half the people held out as strangers) on the cached features. Time: per-face milliseconds
of detect + align + embed (edgeembed) and detect + encode (face_recognition), medians and
means over images with a face.

    python benchmarks/bench_face_peer.py [--limit N] [--no-int8] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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


class FaceRecognitionPeer:
    """face_recognition's documented pipeline: face_locations (HOG) then face_encodings (5-point)."""

    name = "face_recognition (dlib HOG + 5-point + ResNet)"

    def __init__(self, pick: str = "largest"):
        import warnings

        warnings.filterwarnings("ignore", category=UserWarning)
        import dlib
        import face_recognition

        self.fr = face_recognition
        self.pick = pick  # largest, or center: the face nearest the picture's centre (as edgeembed --pick-face)
        self.version = f"face_recognition {face_recognition.__version__}, dlib {dlib.__version__}"

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        boxes = self.fr.face_locations(rgb)  # HOG, 1 upsample (the default)
        if not boxes:  # the same second chance edgeembed's detector gets (its padded retry): upsample twice
            boxes = self.fr.face_locations(rgb, number_of_times_to_upsample=2)
        if not boxes:
            return None
        if self.pick == "center":
            h, w = rgb.shape[:2]
            face = min(boxes, key=lambda b: float(np.hypot((b[1] + b[3]) / 2 - w / 2, (b[0] + b[2]) / 2 - h / 2)))
        else:
            face = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
        v = np.asarray(self.fr.face_encodings(rgb, [face], model="small")[0], np.float32)
        return v / np.linalg.norm(v)


    def faces(self, rgb: np.ndarray) -> list[tuple[tuple[float, float, float, float], np.ndarray]]:
        """Every face: (box x, y, w, h, L2-normalised descriptor), with the same 2x-upsampling retry."""
        boxes = self.fr.face_locations(rgb) or self.fr.face_locations(rgb, number_of_times_to_upsample=2)
        if not boxes:
            return []
        vecs = self.fr.face_encodings(rgb, boxes, model="small")
        return [((float(left), float(top), float(right - left), float(bottom - top)), np.asarray(v, np.float32) / np.linalg.norm(v))
                for (top, right, bottom, left), v in zip(boxes, vecs)]


class EdgeembedFaces:
    """edgeembed face mode: FacePipeline (detect + align + embed) at 1 thread."""

    def __init__(self, model: Path, label: str):
        from edgeembed.face import FacePipeline

        self.name = label
        self.pipe = FacePipeline.create(model, detector="short", num_threads=1)

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        return self.pipe.embed_one(rgb)


def embedding_fidelity(models: list[Path]) -> dict:
    """Cosine of each quantized model's embeddings to the float model's, on aligned crops of s21..s40."""
    from converters.faces import aligned_face_crops
    from edgeembed.face import FaceEmbedder

    crops = aligned_face_crops([ORL / f"s{i}" for i in range(21, 41)], 112, show_progress=False)
    ref = FaceEmbedder.from_model_path(FLOAT, num_threads=1).embed_crops(crops)
    out = {}
    for m in models:
        c = (FaceEmbedder.from_model_path(m, num_threads=1).embed_crops(crops) * ref).sum(1)
        out[m.name] = {"mean": round(float(c.mean()), 4), "min": round(float(c.min()), 4), "crops": len(crops)}
    return out


def run(limit: int | None, with_int8: bool) -> dict:
    from edgeembed.evaluate import evaluate, split_dataset
    from edgeembed.preprocess import read_image

    split = split_dataset(ORL, 1)
    files = [f for _, f in split.gallery] + [f for _, f in split.queries]
    if limit:
        files = files[:limit]
    methods = [EdgeembedFaces(FLOAT, "edgeembed float MobileFaceNet"),
               EdgeembedFaces(UINT8, "edgeembed shared uint8 MobileFaceNet")]
    tmp = tempfile.TemporaryDirectory()
    quant_report = None
    if with_int8:
        from converters.tflite_quant import quantize_face_model

        int8 = Path(tmp.name) / "mobilefacenet_int8.tflite"
        calib = [ORL / f"s{i}" for i in range(1, 21)]  # people s1..s20; fidelity is measured on s21..s40
        quant_report = quantize_face_model(FLOAT, int8, calib, show_progress=False)
        methods.append(EdgeembedFaces(int8, "edgeembed int8 MobileFaceNet (quantized by edgeembed)"))
    peer = FaceRecognitionPeer()
    methods.append(peer)
    images = {f: read_image(f) for f in files}
    for m in methods:  # warm-up
        m(images[files[0]])
    feats: dict[str, dict[Path, np.ndarray | None]] = {m.name: {} for m in methods}
    times: dict[str, list[float]] = {m.name: [] for m in methods}
    for f in files:
        for m in methods:
            t0 = time.perf_counter()
            v = m(images[f])
            dt = (time.perf_counter() - t0) * 1000
            feats[m.name][f] = v
            if v is not None:
                times[m.name].append(dt)
    results = {}
    for m in methods:
        r = evaluate(ORL, 1, lambda p, name=m.name: feats[name].get(p), show_progress=False) if not limit else None
        t = times[m.name]
        results[m.name] = {
            "recall@1": r["recall@1"] if r else None, "no_face": r["no_face"] if r else sum(v is None for v in feats[m.name].values()),
            "tar@far1%": r["tar@far1%"] if r else None, "threshold@far1%": r["threshold@far1%"] if r else None,
            "per_face_ms_median": round(statistics.median(t), 3), "per_face_ms_mean": round(statistics.mean(t), 3),
            "faces_timed": len(t),
        }
    ref = results[peer.name]["per_face_ms_median"]
    for name, r in results.items():
        r["time_vs_face_recognition"] = round(r["per_face_ms_median"] / ref, 4)
    fidelity = embedding_fidelity([UINT8] + ([int8] if with_int8 else []))
    tmp.cleanup()
    return {"fidelity_vs_float_on_s21_s40": fidelity, "dataset": str(ORL), "images": len(files), "protocol": "1 enrolled image per person (edgeembed.evaluate)",
            "threads": 1, "peer": peer.version, "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or ''}".strip(", "),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "int8_conversion": quant_report, "results": results}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N images (timing only, no accuracy)")
    ap.add_argument("--no-int8", action="store_true", help="skip quantizing the float model (needs TensorFlow)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    out = run(args.limit, not args.no_int8)
    print(f"{out['dataset']}: {out['images']} images, {out['protocol']}, {out['threads']} thread; {out['machine']}")
    print(f"{'method':<58} {'recall@1':>8} {'no_face':>7} {'TAR@1%':>7} {'ms/face':>8} {'x peer':>7}")
    for name, r in out["results"].items():
        rec = f"{r['recall@1']:.4f}" if r["recall@1"] is not None else "-"
        tar = f"{r['tar@far1%']:.4f}" if r["tar@far1%"] is not None else "-"
        print(f"{name:<58} {rec:>8} {r['no_face']:>7} {tar:>7} {r['per_face_ms_median']:>8.2f} {r['time_vs_face_recognition']:>7.3f}")
    for name, f in out["fidelity_vs_float_on_s21_s40"].items():
        print(f"embedding cosine to float on {f['crops']} aligned crops of s21..s40: {name} mean {f['mean']:.4f}, min {f['min']:.4f}")
    if out["int8_conversion"]:
        print(f"int8 conversion: {out['int8_conversion']['calibration_crops']} calibration crops of s1..s20, "
              f"{out['int8_conversion']['seconds']} s, {out['int8_conversion']['bytes_int8']} bytes")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
