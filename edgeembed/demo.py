"""The main job on bundled input: enrol sample pictures, then recognize new views and strangers.

The pictures are scikit-image's bundled data (free licences, see skimage/data/README.txt);
nothing is downloaded. The gallery gets each object from its own picture (plus a mirrored
copy); the queries are other views of the same objects (the right-eye photo of a stereo pair,
crops, rotations, a darker exposure) and pictures of things never enrolled, which should come
back as unknown. It runs the real ``edgeembed enroll`` and ``edgeembed recognize`` commands.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from .errors import require

# label -> skimage.data function name
ENROLLED = {"cat": "chelsea", "coffee": "coffee", "rocket": "rocket", "motorcycle": "stereo_motorcycle",
            "astronaut": "astronaut"}
STRANGERS = ["horse", "coins", "hubble_deep_field", "brick"]


def _picture(data, name: str) -> np.ndarray:
    if name == "stereo_motorcycle":
        left, right, _ = data.stereo_motorcycle()
        return left
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    return np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)


def _views(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """New views of a picture: a tighter crop, a small rotation, a darker exposure."""
    h, w = rgb.shape[:2]
    crop = rgb[h // 10 : h - h // 10, w // 8 : w - w // 8]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 12, 1.1)
    rotated = cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    dark = np.clip(rgb.astype(np.float32) * 0.6, 0, 255).astype(np.uint8)
    return {"crop": crop, "rotated": rotated, "dark": dark}


def write_samples(root: Path) -> tuple[Path, Path, dict[str, str | None]]:
    """Write enrolment folders and query images; return (enroll dir, query dir, expected label by file)."""
    data = require("skimage.data", "demo", "the demo's sample pictures")
    enroll_dir, query_dir = root / "enroll", root / "queries"
    expected: dict[str, str | None] = {}
    for label, name in ENROLLED.items():
        rgb = _picture(data, name)
        d = enroll_dir / label
        d.mkdir(parents=True, exist_ok=True)
        _save(d / "1.png", rgb)
        _save(d / "2.png", rgb[:, ::-1])
        for view, img in _views(rgb).items():
            f = query_dir / f"{label}_{view}.png"
            _save(f, img)
            expected[f.name] = label
    _, right, _ = data.stereo_motorcycle()
    f = query_dir / "motorcycle_other_eye.png"
    _save(f, right)
    expected[f.name] = "motorcycle"
    for name in STRANGERS:
        f = query_dir / f"stranger_{name}.png"
        _save(f, _picture(data, name))
        expected[f.name] = None
    return enroll_dir, query_dir, expected


def _save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def run_demo(args: argparse.Namespace) -> int:
    from .cli import default_model

    model = Path(args.model) if args.model else default_model()
    if args.workdir:
        return _run_demo_in(args, model, Path(args.workdir), keep=True)
    # Without --workdir the pictures and gallery (about 13 MB) are removed again: a demo run leaves nothing behind.
    with tempfile.TemporaryDirectory(prefix="edgeembed-demo-") as tmp:
        return _run_demo_in(args, model, Path(tmp), keep=False)


def _run_demo_in(args: argparse.Namespace, model: Path, workdir: Path, keep: bool) -> int:
    from .cli import main

    enroll_dir, query_dir, expected = write_samples(workdir)
    gallery = workdir / "gallery"
    common = ["--backend", args.backend, "--delegate", args.delegate] + (["--threads", str(args.threads)] if args.threads else [])
    where = str(workdir) if keep else f"{workdir}, removed at the end (--workdir DIR keeps them)"
    print(f"demo: model {model}; sample pictures and gallery in {where}", file=sys.stderr)
    import contextlib
    import io

    if not (gallery / "gallery.sqlite").exists():
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the demo's own results
            rc = main(["enroll", "--model", str(model), "--gallery", str(gallery), str(enroll_dir), "--quiet"] + common)
        if rc:
            return rc
    # Capture recognize's JSON lines to score them.

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["recognize", "--gallery", str(gallery), "--source", str(query_dir), "--json"] + common)
    if rc:
        return rc
    right = 0
    results = [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
    for r in results:
        name = Path(r["source"]).name
        want = expected.get(name)
        ok = r.get("label") == want
        right += ok
        if args.json:
            print(json.dumps({"query": name, "expected": want, "label": r.get("label"), "score": r.get("score"), "correct": ok}))
        else:
            got = r.get("label") or "unknown"
            print(f"{'ok ' if ok else 'MISS'} {name:<32} -> {got:<11} score {r.get('score', 0):.3f}  (expected {want or 'unknown'})")
    summary = {"correct": right, "queries": len(results), "gallery": str(gallery) if keep else None, "model": str(model)}
    print(json.dumps(summary) if args.json else f"{right}/{len(results)} queries answered correctly "
          f"({sum(v is None for v in expected.values())} of them strangers that must come back unknown)")
    return 0
