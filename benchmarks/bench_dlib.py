"""dlib face embedder: the shipped int8 model against dlib / face_recognition, side by side in one run.

1. Per-face embed latency on the same 150x150 dlib chips: the int8 model on ai-edge-litert
   (1 thread, through edgeembed.Embedder, preprocessing included) vs dlib's
   ``compute_face_descriptor`` (dlib-bin), interleaved chip by chip, medians.
2. Full pipeline on ORL, 1 enrolled picture per person (``edgeembed eval --mode face``, run as
   the real CLI: BlazeFace, template alignment, int8 embed) vs face_recognition (HOG detector,
   retried at 2x upsampling when it finds nothing, 5-point landmarks, dlib descriptor) on the same protocol (edgeembed.evaluate), on all 40
   people and on people s21..s40, whom the converter never saw (template and calibration come
   from s1..s20).
3. Which alignment keeps accuracy: the int8 model fed dlib's own chips (shape predictor) vs the
   runtime's BlazeFace-keypoint alignment; and how close the runtime's descriptor (no dlib) comes
   to dlib's descriptor of its own chip, picture by picture.

    python benchmarks/bench_dlib.py [--chips 60] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("EDGEEMBED_SHARED", REPO.parent / "shared"))
ORL = SHARED / "data" / "orl-faces"
MODEL = REPO / "models" / "dlib_face_resnet_v1_int8.tflite"


def latency(chips: list[np.ndarray], ref, embedder, rounds: int = 3) -> dict:
    """Median per-face ms of dlib and of the int8 model on the same chips, interleaved."""
    for c in chips[:3]:  # warm-up
        ref.descriptor(c)
        embedder.embed(c)
    t_dlib, t_int8 = [], []
    cpu_dlib = cpu_int8 = 0.0
    for _ in range(rounds):
        for c in chips:
            c0, t0 = time.process_time(), time.perf_counter()
            ref.descriptor(c)
            c1, t1 = time.process_time(), time.perf_counter()
            embedder.embed(c)
            c2, t2 = time.process_time(), time.perf_counter()
            t_dlib.append(t1 - t0)
            t_int8.append(t2 - t1)
            cpu_dlib += c1 - c0
            cpu_int8 += c2 - c1
    d, q = statistics.median(t_dlib) * 1000, statistics.median(t_int8) * 1000
    # CPU seconds per wall second: how many cores each side really kept busy
    return {"faces": len(chips), "rounds": rounds, "dlib_ms": round(d, 2), "int8_litert_1thread_ms": round(q, 2),
            "ratio_int8_over_dlib": round(q / d, 3), "speedup": round(d / q, 2),
            "dlib_cores_busy": round(cpu_dlib / sum(t_dlib), 2), "int8_cores_busy": round(cpu_int8 / sum(t_int8), 2)}


def edgeembed_eval(model: Path, dataset: Path) -> dict:
    cmd = [sys.executable, "-m", "edgeembed.cli", "eval", str(model), str(dataset), "--gallery-per-class", "1",
           "--mode", "face", "--json", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"edgeembed eval failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def face_recognition_eval(dataset: Path) -> dict:
    """face_recognition's own pipeline on the eval protocol: cosine (as edgeembed) and Euclidean 1-NN."""
    import face_recognition

    from edgeembed.evaluate import evaluate, split_dataset
    from edgeembed.preprocess import read_image

    raw: dict[Path, np.ndarray | None] = {}

    def featurize(path: Path) -> np.ndarray | None:
        rgb = read_image(path)
        boxes = face_recognition.face_locations(rgb)  # HOG, 1 upsample
        if not boxes:  # the same second chance as benchmarks/bench_face_peer.py: 2x upsampling
            boxes = face_recognition.face_locations(rgb, number_of_times_to_upsample=2)
        if not boxes:
            raw[path] = None
            return None
        box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
        v = np.asarray(face_recognition.face_encodings(rgb, [box])[0], np.float32)  # 5-point model
        raw[path] = v
        return v / np.linalg.norm(v)

    res = evaluate(dataset, 1, featurize, show_progress=False)
    split = split_dataset(dataset, 1)
    gal = [(c, raw[f]) for c, f in split.gallery if raw[f] is not None]
    g = np.stack([v for _, v in gal])
    gl = np.array([c for c, _ in gal])
    hits = [raw[f] is not None and gl[np.linalg.norm(g - raw[f], axis=1).argmin()] == c for c, f in split.queries]
    res["recall@1_euclidean"] = round(float(np.mean(hits)), 6)
    return res


def alignment_eval(dataset: Path, ref, embedder) -> dict:
    """The int8 model on dlib's shape-predictor chips (no BlazeFace), same protocol."""
    from edgeembed.evaluate import evaluate
    from edgeembed.preprocess import read_image

    def featurize(path: Path) -> np.ndarray:
        return embedder.embed(ref.chip(read_image(path)).chip).vector

    return evaluate(dataset, 1, featurize, show_progress=False)


def runtime_vs_dlib(files: list[Path], ref) -> dict:
    """Cosine between dlib's descriptor of its own chip and the runtime's (BlazeFace + template + int8)."""
    from edgeembed.face.recognizer import FacePipeline
    from edgeembed.preprocess import read_image

    cos = []
    with FacePipeline.create(MODEL) as pipeline:
        for f in files:
            theirs = ref.descriptor(ref.chip(read_image(f)).chip)
            ours = pipeline.embed_one(f)
            if ours is not None:
                cos.append(float(theirs @ ours / np.linalg.norm(theirs) / np.linalg.norm(ours)))
    c = np.asarray(cos)
    return {"pictures": len(files), "embedded": len(c), "mean_cosine": round(float(c.mean()), 4),
            "median_cosine": round(float(np.median(c)), 4), "min_cosine": round(float(c.min()), 4),
            "share_above_0.98": round(float((c >= 0.98).mean()), 4)}


def unseen_dataset(tmp: Path, first: int = 21) -> Path:
    from converters.dlib_resnet import person_number

    root = tmp / "orl-unseen"
    root.mkdir()
    for d in ORL.iterdir():
        if d.is_dir() and person_number(d) >= first:
            (root / d.name).symlink_to(d.resolve(), target_is_directory=True)
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chips", type=int, default=60, help="faces for the latency comparison")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()

    from converters.dlib_align import DlibReference, face_photos
    from edgeembed import Embedder
    from edgeembed.preprocess import read_image

    ref = DlibReference()
    files = face_photos(ORL, SHARED / "data" / "coral-images")
    pick = [files[i] for i in np.linspace(0, len(files) - 1, args.chips).round().astype(int)]
    chips = [ref.chip(read_image(f)).chip for f in pick]
    out: dict = {"machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": str(MODEL.relative_to(REPO))}
    with Embedder.create_from_model_path(MODEL, num_threads=1) as emb:
        desc = emb.describe()
        out["backend"] = {k: desc.get(k) for k in ("backend", "num_threads", "threads", "delegate") if k in desc}
        out["latency"] = latency(chips, ref, emb)
        print("latency", json.dumps(out["latency"]), flush=True)
        out["int8_on_dlib_chips"] = {k: v for k, v in alignment_eval(ORL, ref, emb).items() if k != "open_set"}
    print("int8 on dlib chips", json.dumps(out["int8_on_dlib_chips"]), flush=True)
    single_face = [f for f in files if f.name != "face.jpg"]  # face.jpg is a group photo
    out["runtime_vs_dlib_descriptor"] = runtime_vs_dlib(single_face, ref)
    print("runtime vs dlib descriptor", json.dumps(out["runtime_vs_dlib_descriptor"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        unseen = unseen_dataset(Path(tmp))
        for name, ds in (("orl_all", ORL), ("orl_unseen_s21_s40", unseen)):
            t0 = time.perf_counter()
            ee = edgeembed_eval(MODEL, ds)
            t1 = time.perf_counter()
            fr = face_recognition_eval(ds)
            t2 = time.perf_counter()
            keep = ("classes", "queries", "recall@1", "recall@5", "no_face", "per_image_ms", "tar@far1%", "recall@1_euclidean")
            out[name] = {"edgeembed_int8": {k: ee[k] for k in keep if k in ee} | {"wall_s": round(t1 - t0, 1)},
                         "face_recognition": {k: fr[k] for k in keep if k in fr} | {"wall_s": round(t2 - t1, 1)}}
            print(name, json.dumps(out[name]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
