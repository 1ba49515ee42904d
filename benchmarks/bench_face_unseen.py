"""Faces that are not pre-cropped, on people the project never tuned on: edgeembed vs face_recognition.

Every part runs edgeembed (through the real CLI, ``edgeembed eval --mode face``) with each
face model, and face_recognition (dlib HOG detector, retried at 2x upsampling when it finds
nothing, 5-point alignment, dlib ResNet; bench_face_peer.FaceRecognitionPeer) on the same
pictures, scored by the same protocol code (edgeembed.evaluate), in one run. Models: the float
MobileFaceNet (../shared, research-only), MobileFaceNet int8 quantized in this run by
converters.tflite_quant (calibrated on ORL s1..s20), and the shipped dlib ResNet int8
(models/dlib_face_resnet_v1_int8.tflite, whose converter saw only ORL s1..s20 and 2 coral photos).

A. People never seen: the 7 people of real photos in ../shared/data/coral-images (the group
   photo face.jpg: 2 people in front, 2 small in the background; Grace Hopper) and
   scikit-image (the astronaut, the cameraman). Each person's head-and-shoulders region is
   re-shot into other real backgrounds (scikit-image photos) at another size, position,
   tilt, exposure, blur or mirror: 6 pictures each, the face a small part of the frame.
   Run through the real CLI: ``edgeembed eval --mode face --gallery-per-class 1``. (One source
   photo per person: this measures detection + alignment + embedding under changes of
   framing, not ageing or a new day.)
A2. ORL s21..s40 (people neither converter calibrated on) pasted one per picture into real
   640x480 backgrounds at 1.2-2.5x their size, a random place: 20 people, 200 pictures.
B. Group photos: ORL people pasted 3 to a picture into real backgrounds, 1.2-2.5x their size,
   at random places. Half the people are enrolled (1 ORL image each, never one used in a
   group photo), half are strangers. Per pasted face: found by the detector? right name
   (known people) / "unknown" (strangers) at the gallery's own automatic threshold and at
   the FAR 1% threshold that ``eval --mode face`` reports for ORL?

    python benchmarks/bench_face_unseen.py [--detector short|full] [--face-score S] [--no-int8] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("EDGEEMBED_SHARED", REPO.parent / "shared"))
ORL = SHARED / "data" / "orl-faces"
CORAL = SHARED / "data" / "coral-images"
BACKGROUNDS = ["brick", "grass", "gravel", "coffee", "rocket", "hubble_deep_field", "page", "chelsea"]


def _rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return np.ascontiguousarray(a[:, :, :3]).astype(np.uint8)


def backgrounds(size=(480, 640)) -> list[np.ndarray]:
    import skimage.data as d

    return [cv2.resize(_rgb(getattr(d, n)()), (size[1], size[0]), interpolation=cv2.INTER_AREA) for n in BACKGROUNDS]


def people_regions() -> dict[str, np.ndarray]:
    """Head-and-shoulders regions (2.4x the face box) of the people in the real photos."""
    import skimage.data as d

    from edgeembed.face import FaceDetector
    from edgeembed.preprocess import read_image

    photos = {"group": read_image(CORAL / "face.jpg"), "hopper": read_image(CORAL / "grace_hopper.bmp"),
              "astronaut": _rgb(d.astronaut()), "cameraman": _rgb(d.camera())}
    out = {}
    with FaceDetector("full") as det:
        for name, rgb in photos.items():
            faces = sorted(det.detect(rgb).faces, key=lambda f: f.box[0])
            for i, f in enumerate(faces):
                x, y, w, h = f.box
                cx, cy, s = x + w / 2, y + h * 0.6, max(w, h) * 2.4
                x0, y0 = int(max(0, cx - s / 2)), int(max(0, cy - s / 2))
                x1, y1 = int(min(rgb.shape[1], cx + s / 2)), int(min(rgb.shape[0], cy + s / 2))
                out[f"{name}_{i}" if len(faces) > 1 else name] = rgb[y0:y1, x0:x1].copy()
    return out


def place(bg: np.ndarray, img: np.ndarray, height: int, rng: np.random.Generator, x: int | None = None) -> tuple[np.ndarray, tuple]:
    """``img`` resized to ``height`` pixels tall, pasted at a random place (or column ``x``)."""
    scale = height / img.shape[0]
    im = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    h, w = im.shape[:2]
    H, W = bg.shape[:2]
    h, w = min(h, H), min(w, W)
    im = im[:h, :w]
    x = int(rng.integers(0, W - w + 1)) if x is None else int(np.clip(x, 0, W - w))
    y = int(rng.integers(0, H - h + 1))
    bg[y:y + h, x:x + w] = im
    return bg, (x, y, w, h)


def view(bg: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The region re-shot into a background: size, place, tilt, mirror, exposure, blur."""
    r = region
    if rng.random() < 0.5:
        r = r[:, ::-1]
    m = cv2.getRotationMatrix2D((r.shape[1] / 2, r.shape[0] / 2), rng.uniform(-12, 12), 1.0)
    r = cv2.warpAffine(np.ascontiguousarray(r), m, (r.shape[1], r.shape[0]), borderMode=cv2.BORDER_REFLECT)
    out, _ = place(bg.copy(), r, int(rng.integers(200, 400)), rng)
    out = np.clip(out.astype(np.float32) * rng.uniform(0.7, 1.25), 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (5, 5), 0)
    return out


def write_people_dataset(root: Path, views: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    bgs = backgrounds()
    for name, region in people_regions().items():
        d = root / name
        d.mkdir(parents=True)
        for k in range(views):
            pic = view(bgs[int(rng.integers(len(bgs)))], region, rng)
            cv2.imwrite(str(d / f"{k}.png"), cv2.cvtColor(pic, cv2.COLOR_RGB2BGR))
    return root


def cli_eval(model: Path, dataset: Path, detector: str, pick: str = "largest", score: float | None = None) -> dict:
    extra = ["--face-score", str(score)] if score is not None else []
    p = subprocess.run([sys.executable, "-m", "edgeembed.cli", "eval", str(model), str(dataset), "--gallery-per-class", "1",
                        "--mode", "face", "--detector", detector, "--pick-face", pick, "--json", "--quiet", "--threads", "1",
                        *extra],
                       capture_output=True, text=True, cwd=REPO)
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    return json.loads(p.stdout)


def write_orl_in_backgrounds(root: Path, people: range = range(21, 41), seed: int = 2) -> Path:
    """A2: every picture of ORL s21..s40 pasted into a real 640x480 background, 1.2-2.5x its size."""
    from edgeembed.preprocess import read_image

    rng = np.random.default_rng(seed)
    bgs = backgrounds()
    for i in people:
        d = root / f"s{i}"
        d.mkdir(parents=True)
        for f in sorted((ORL / f"s{i}").glob("*.pgm"), key=lambda p: int(p.stem)):
            pic, _ = place(bgs[int(rng.integers(len(bgs)))].copy(), read_image(f), int(112 * rng.uniform(1.2, 2.5)), rng)
            cv2.imwrite(str(d / f"{f.stem}.png"), cv2.cvtColor(pic, cv2.COLOR_RGB2BGR))
    return root


def peer_eval(peer, dataset: Path) -> dict:
    """face_recognition on a dataset, scored by edgeembed.evaluate (the same protocol as ``edgeembed eval``)."""
    from edgeembed.evaluate import evaluate
    from edgeembed.preprocess import read_image

    t0 = time.perf_counter()
    r = evaluate(dataset, 1, lambda p: peer(read_image(p)), show_progress=False)
    r["seconds"] = round(time.perf_counter() - t0, 1)
    return r


KEYS = ("classes", "queries", "recall@1", "recall@5", "no_face", "tar@far1%")


def make_group_photos(n_photos: int = 60, seed: int = 1) -> tuple[list[np.ndarray], list[list[tuple[str, tuple]]]]:
    """B: 3 ORL people per picture in a real background (never their enrolled picture 1.pgm); who is where."""
    from edgeembed.preprocess import read_image

    rng = np.random.default_rng(seed)
    bgs = backgrounds()
    people = sorted((p for p in ORL.iterdir() if p.is_dir()), key=lambda p: int(p.name[1:]))
    pics, truth = [], []
    for _ in range(n_photos):
        pic = bgs[int(rng.integers(len(bgs)))].copy()
        who = rng.choice(len(people), 3, replace=False)
        placed = []
        for j, pi in enumerate(who):
            k = int(rng.integers(2, 11))  # never 1.pgm, the enrolled image
            face = read_image(people[pi] / f"{k}.pgm")
            pic, box = place(pic, face, int(112 * rng.uniform(1.2, 2.5)), rng, x=j * 213 + int(rng.integers(0, 30)))
            placed.append((people[pi].name, box))
        pics.append(pic)
        truth.append(placed)
    return pics, truth


def group_photos(all_faces, embed_one, orl_far1: float, photos: list[np.ndarray], truth: list) -> dict:
    """B, for one method: per pasted face, found? right name (known) / "unknown" (strangers)?

    ``all_faces(rgb)`` -> [(box x, y, w, h, vector)]; ``embed_one(rgb)`` -> the enrolment vector
    or None. Half the 40 ORL people (even positions) are enrolled from 1.pgm, half are strangers.
    Thresholds: the gallery's own automatic one (edgeembed.recognizer.auto_threshold's
    rule) and the method's FAR-1% threshold on ORL (``orl_far1``).
    """
    from edgeembed.preprocess import read_image

    people = sorted((p for p in ORL.iterdir() if p.is_dir()), key=lambda p: int(p.name[1:]))
    known = {p.name for i, p in enumerate(people) if i % 2 == 0}
    names, vecs = [], []
    for p in people:
        if p.name in known:
            v = embed_one(read_image(p / "1.pgm"))
            if v is not None:
                names.append(p.name)
                vecs.append(v)
    gal = np.stack(vecs)
    sims = gal @ gal.T
    np.fill_diagonal(sims, -np.inf)
    auto_t = max(0.5, float(np.quantile(sims.max(1), 0.99)))
    found = total = right_known = known_n = rejected = strangers = stranger_found = 0
    right_known_far = rejected_far = 0
    for pic, placed in zip(photos, truth):
        results = all_faces(pic)
        for name, (x, y, w, h) in placed:
            total += 1
            cx, cy = x + w / 2, y + h / 2
            hit = [v for (bx, by, bw, bh), v in results if bx <= cx <= bx + bw and by <= cy <= by + bh]
            is_known = name in known
            known_n += is_known
            strangers += not is_known
            if not hit:
                continue
            found += 1
            stranger_found += not is_known
            s = gal @ hit[0]
            best, score = names[int(np.argmax(s))], float(np.max(s))
            if is_known:
                right_known += best == name and score >= auto_t
                right_known_far += best == name and score >= orl_far1
            else:
                rejected += score < auto_t
                rejected_far += score < orl_far1
    known_found = found - stranger_found
    return {"photos": len(photos), "faces": total, "detected": round(found / total, 4), "enrolled": len(names),
            "known_faces": known_n, "known_detected": known_found, "stranger_faces": strangers,
            "strangers_detected": stranger_found, "auto_threshold": round(auto_t, 4),
            "known_named_right_of_detected": round(right_known / max(1, known_found), 4),
            "strangers_unknown_of_detected": round(rejected / max(1, stranger_found), 4),
            "far1_threshold": orl_far1,
            "known_named_right_of_detected@far1": round(right_known_far / max(1, known_found), 4),
            "strangers_unknown_of_detected@far1": round(rejected_far / max(1, stranger_found), 4)}


def edgeembed_models(tmp: Path, with_int8: bool) -> dict[str, Path]:
    """The face models compared: float MobileFaceNet, its int8 made here by edgeembed, the shipped dlib int8."""
    models = {"mobilefacenet float": SHARED / "models" / "mobilefacenet.tflite"}
    if with_int8:
        from converters.tflite_quant import quantize_face_model

        out = tmp / "mobilefacenet_int8.tflite"
        quantize_face_model(models["mobilefacenet float"], out, [ORL / f"s{i}" for i in range(1, 21)],
                            show_progress=False)
        models["mobilefacenet int8 (edgeembed)"] = out
    models["dlib resnet int8 (shipped)"] = REPO / "models" / "dlib_face_resnet_v1_int8.tflite"
    return models


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detector", default="short", help="short, full (default short)")
    ap.add_argument("--face-score", type=float, default=None, help="detection score threshold (default: the detector's)")
    ap.add_argument("--no-int8", action="store_true", help="skip quantizing MobileFaceNet (needs TensorFlow)")
    ap.add_argument("--no-peer", action="store_true", help="skip face_recognition")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from bench_face_peer import FaceRecognitionPeer

    out = {"detector": args.detector, "face_score": args.face_score, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = edgeembed_models(tmp, not args.no_int8)
        out["models"] = {k: str(v) for k, v in models.items()}
        peers = {} if args.no_peer else {pick: FaceRecognitionPeer(pick) for pick in ("largest", "center")}
        if peers:
            out["peer"] = peers["largest"].version
        datasets = {"A people never seen (7 people, 6 re-shot views)": (write_people_dataset(tmp / "people"), ("largest", "center")),
                    "A2 ORL s21..s40 in backgrounds (20 people)": (write_orl_in_backgrounds(tmp / "orl_bg"), ("largest",))}
        for dname, (ds, picks) in datasets.items():
            rows = out.setdefault(dname, {})
            for pick in picks:
                for mname, m in models.items():
                    r = cli_eval(m, ds, args.detector, pick, args.face_score)
                    rows[f"edgeembed {mname}, pick {pick}"] = {k: r[k] for k in KEYS}
                if peers:
                    r = peer_eval(peers[pick], ds)
                    rows[f"face_recognition, pick {pick}"] = {k: r[k] for k in KEYS}
                print(dname, pick, json.dumps({k: v["recall@1"] for k, v in rows.items() if k.endswith(pick)}), flush=True)
        photos, truth = make_group_photos()
        groups = out.setdefault("B group photos (3 ORL people each, 20 enrolled, 20 strangers)", {})
        from edgeembed.face import FacePipeline

        for mname, m in models.items():
            far1 = cli_eval(m, ORL, args.detector, score=args.face_score)["threshold@far1%"]
            with FacePipeline.create(m, detector=args.detector, face_score=args.face_score, num_threads=1) as pipe:
                groups[f"edgeembed {mname}"] = group_photos(
                    lambda rgb: [(r.face.box, r.vector) for r in pipe.faces(rgb)[0]], pipe.embed_one, far1, photos, truth)
        if peers:
            peer = peers["largest"]
            far1 = peer_eval(peer, ORL)["threshold@far1%"]
            groups["face_recognition"] = group_photos(peer.faces, peer, far1, photos, truth)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
