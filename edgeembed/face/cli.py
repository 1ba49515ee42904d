"""``--mode face`` of ``edgeembed enroll``, ``recognize`` and ``eval``: the CLI side of face recognition.

Enrolment is strict by default: a photo with no face, or with several faces, is named in
one line and nothing at all is enrolled (``--skip-bad`` skips such photos, ``--pick-face``
uses one face of a group photo). Embedding happens before the gallery is touched, so a
failed enrolment leaves no half-made gallery behind.
"""
from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EdgeEmbedError, GalleryError, ImageError, InputError, SourceError
from ..gallery import Gallery, shown_label
from ..preprocess import read_image, still_images
from ..progress import progress
from .detector import FaceDetector
from .recognizer import DEFAULT_DETECTOR, FaceEmbedder, FacePipeline, FaceRecognizer, face_detector


class FaceError(ImageError):
    """A photo that should show exactly one face does not."""


def _runtime(args: argparse.Namespace) -> dict[str, Any]:
    from ..cli import _runtime_kwargs  # noqa: PLC0415 - the one place the CLI's runtime flags are read

    return _runtime_kwargs(args)


def _pre_overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("output", "mean", "std", "color_order", "resize", "crop_fraction")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _detector(args: argparse.Namespace, default: str = DEFAULT_DETECTOR) -> FaceDetector:
    return face_detector(getattr(args, "detector", None) or default, getattr(args, "face_score", None),
                         getattr(args, "min_face", None), **_runtime(args))


def _print(obj: Any) -> None:
    from ..cli import _print as print_json  # noqa: PLC0415

    print_json(obj)


def _one_face(pipeline: FacePipeline, path: Path, pick: str | None) -> tuple[np.ndarray, dict]:
    """The embedding of the one face of an enrolment photo; FaceError when there is none or several."""
    rgb = read_image(path)
    dets = pipeline.detector.detect(rgb)
    if not dets.faces:
        if dets.too_small:
            raise FaceError(f"no face found in {path}: {dets.too_small} smaller than --min-face "
                            f"{pipeline.detector.min_face} px; lower --min-face, or use a closer photo")
        raise FaceError(f"no face found in {path}; use a photo where the face is clearly visible "
                        "(or --detector full for small, distant faces)")
    if len(dets.faces) > 1 and not pick:
        raise FaceError(f"{path} shows {len(dets.faces)} faces; enrol a photo of one person, "
                        "or pass --pick-face largest|center to use one of them")
    face = dets.pick(pick or "largest")
    vector = pipeline.embedder.embed_faces(rgb, [face])[0]
    info = {"box": [round(float(v), 1) for v in face.box], "detection_score": round(face.score, 4),
            "faces_in_photo": len(dets.faces)}
    return vector, info


def enroll_faces(args: argparse.Namespace, items: list[tuple[str, Path]], exists: bool) -> int:
    """Enrol the one face of each photo under its label; nothing is written unless every photo is usable.

    A new gallery without ``--model`` uses the shipped face embedder (dlib's ResNet, int8).
    """
    from ..recognizer import add_entries_checked, create_gallery, model_values, open_gallery_embedder

    rt = _runtime(args)
    gallery = None
    if exists:
        gallery = Gallery.open(args.gallery)
        if gallery.binding.mode != "face":
            gallery.close()
            raise GalleryError(f"gallery {args.gallery} holds whole-image embeddings; enrol faces into a new gallery "
                               "(--mode face) or drop --mode face")
        model = open_gallery_embedder(gallery, args.model, **rt)
        det_default = gallery.meta.get("face_detector", DEFAULT_DETECTOR)
    else:
        from .recognizer import open_face_model

        model = open_face_model(args.model or None, **_pre_overrides(args), **rt)  # None: the shipped face model
        det_default = DEFAULT_DETECTOR
    pipeline = FacePipeline(_detector(args, det_default), FaceEmbedder(model))
    labels, vectors, sources, infos, skipped = [], [], [], [], []
    try:
        for label, path in progress(items, desc="enrolling faces", enabled=not args.quiet):
            try:
                v, info = _one_face(pipeline, Path(path), args.pick_face)
            except ImageError as exc:
                if not args.skip_bad:
                    raise type(exc)(f"{exc} -- nothing was enrolled; fix or remove the photo, or pass --skip-bad "
                                    "to skip such photos") from None
                skipped.append({"source": str(path), "reason": str(exc)})
                continue
            labels.append(label)
            vectors.append(v)
            sources.append(str(path))
            infos.append(info)
        if not vectors:
            raise InputError(f"no usable face in the {len(items)} photo(s) given; nothing was enrolled"
                             + ("" if gallery is not None else f" and no gallery was created at {args.gallery}"))
        if gallery is None:
            gallery = create_gallery(args.gallery, model, "face",
                                     meta={"face_detector": str(getattr(args, "detector", None) or DEFAULT_DETECTOR)})
            if gallery.created:  # said even with --quiet: a mistyped or unmounted --gallery starts a new gallery
                print(f"created {args.gallery} (a new face gallery) with {model.model_path}", file=sys.stderr)
        again, alikes = add_entries_checked(gallery, labels, np.stack(vectors), sources, infos, model=model_values(model))
        skipped += again
        report = {"enrolled": len(vectors) - len(again), "labels": sorted(set(labels)), "skipped": skipped,
                  "entries": len(gallery), "threshold": gallery.threshold,
                  "threshold_source": gallery.meta.get("threshold_source", "default"), "gallery": str(args.gallery), "mode": "face",
                  "look_alikes": alikes}
    finally:
        pipeline.close()
        if gallery is not None:
            gallery.close()
    if args.json:
        _print(report)
    else:
        from ..cli import count_of, print_skipped  # noqa: PLC0415

        print(f"enrolled {count_of(report['enrolled'], 'face')} under {count_of(len(report['labels']), 'label')} "
              f"into {args.gallery} ({count_of(report['entries'], 'entry', 'entries')}, threshold {report['threshold']:.3f})")
        print_skipped(skipped)
    from ..cli import print_look_alikes  # noqa: PLC0415

    print_look_alikes(alikes)
    return 0


def open_face_recognizer(args: argparse.Namespace, gallery: Gallery) -> FaceRecognizer:
    """The gallery's own face model plus a detector, ready for ``process(frame)``."""
    if gallery.binding.mode != "face":
        raise GalleryError(f"gallery {gallery.path} holds whole-image embeddings, not faces; use a gallery enrolled "
                           "with --mode face, or drop --mode face")
    return FaceRecognizer.for_gallery(gallery, args.model, getattr(args, "detector", None),
                                      getattr(args, "min_face", None), getattr(args, "face_score", None),
                                      args.threshold, args.top_k, **_runtime(args))


def recognize_faces(args: argparse.Namespace, gallery: Gallery) -> int:
    """Every face of every picture (or video frame): box, label or null (unknown), score."""
    files = still_images(args.source)
    if files is not None:
        from ..cli import still_pictures  # noqa: PLC0415

        try:
            files, picture = still_pictures(args, files)
        except EdgeEmbedError:
            gallery.close()
            raise
    recognizer = open_face_recognizer(args, gallery)
    if files is None:  # video files, cameras, streams: smoothed per face track by the live pipeline
        return _recognize_live(args, gallery, recognizer)
    failed = 0
    try:
        for i, f in enumerate(files):
            t0 = time.perf_counter()
            try:
                results = recognizer.recognize(picture(f))
            except EdgeEmbedError as exc:
                if len(files) == 1:
                    raise
                failed += 1
                _print({"frame": i, "source": str(f), "error": str(exc)}) if args.json else \
                    print(f"{f}: error: {exc}", file=sys.stderr)
                continue
            ms = (time.perf_counter() - t0) * 1000
            dets = recognizer.last_detections
            if args.json:
                _print({"frame": i, "source": str(f), "faces": [r.to_dict() for r in results],
                        "too_small": dets.too_small if dets is not None else 0,
                        "time_ms": {**{k: round(v, 3) for k, v in recognizer.timings.items()}, "total": round(ms, 3)}})
            else:
                small = dets.too_small if dets is not None else 0
                note = f", {small} smaller than --min-face {recognizer.pipeline.detector.min_face} px" if small else ""
                print(f"{f}: {len(results)} face(s){note} ({ms:.1f} ms)")
                for r in results:
                    x, y, w, h = (int(round(v)) for v in r.box)
                    # an unknown face names its nearest person and the threshold it missed, as a picture does
                    near = (f" (nearest {shown_label(r.matches[0].label)}, threshold {r.threshold:.3f})"
                            if r.label is None and r.matches and r.threshold is not None else "")
                    label = shown_label(r.label) if r.label is not None else "unknown"
                    print(f"  [{x},{y} {w}x{h}] {label} {r.score:.3f}{near}")
    finally:
        recognizer.pipeline.close()
        gallery.close()
    if failed == len(files):
        raise InputError(f"none of the {len(files)} images in {args.source} could be recognized (each is named above, "
                         "with why)")
    return 0


def _recognize_live(args: argparse.Namespace, gallery: Gallery, recognizer: FaceRecognizer) -> int:
    """Video files, cameras and streams go through the live pipeline with this face processor."""
    try:
        from ..live import recognize_live  # noqa: PLC0415
    except ImportError as exc:
        raise SourceError(f"{args.source} is not an image or folder, and live sources are unavailable ({exc})") from None
    recognizer.pipeline.detector.multiscale = False  # frame rate first: tiles only when a frame shows no face
    try:
        params = inspect.signature(recognize_live).parameters
        if "processor" not in params:
            raise SourceError(f"{args.source}: live face recognition needs an edgeembed.live that accepts a processor; "
                              "recognize still images or a folder of frames instead")
        return recognize_live(args, gallery, processor=recognizer)
    finally:
        recognizer.pipeline.close()


def eval_faces(args: argparse.Namespace) -> dict:
    """``edgeembed eval --mode face``: the eval protocol on the largest (or --pick-face) face of each image."""
    from ..evaluate import evaluate
    from ..recognizer import model_values

    stats = {"multi_face": 0, "too_small": 0}
    pipeline = FacePipeline(_detector(args), FaceEmbedder.from_model_path(args.model, **_pre_overrides(args), **_runtime(args)))

    def featurize(path: Path) -> np.ndarray | None:
        rgb, dets = pipeline.detect(path)
        stats["too_small"] += dets.too_small
        stats["multi_face"] += len(dets.faces) > 1
        face = dets.pick(args.pick_face or "largest")
        return None if face is None else pipeline.embedder.embed_faces(rgb, [face])[0]

    with pipeline:
        result = evaluate(args.dataset, args.gallery_per_class, featurize, show_progress=not args.quiet,
                          far_target=args.far, model=model_values(pipeline.embedder.embedder),
                          skip_bad=getattr(args, "skip_bad", False))
        result.update(mode="face", model=str(args.model), fingerprint=pipeline.embedder.embedder.fingerprint,
                      detector=Path(pipeline.detector.model_path).name, images=result["gallery_size"] + result["queries"],
                      **stats)
    return result
