"""Detect, align and embed every face of a picture; recognize each against a face gallery.

``FacePipeline`` is the Python API of face mode: ``faces(picture)`` gives every face with
its box, keypoints, detection score and embedding. ``FaceRecognizer`` adds a gallery and
gives, per face, the label (None = unknown), score and matches; its ``process(rgb_frame)``
is what the live pipeline (cameras, video) calls for every frame.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..embedder import Embedder, EmbedderOptions
from ..errors import InputError, ModelError
from ..gallery import Gallery, Match, is_cosine
from ..preprocess import ImageLike, read_image, to_rgb
from ..recognizer import binding_checks, binding_for, open_gallery_embedder
from ..shipped import shipped_model
from .align import AlignmentTemplate, align_face, template_for
from .detector import Detections, Face, FaceDetector


def detector_delegate(delegate: str | None) -> str | None:
    """The delegate for the (float) BlazeFace detector: the embedder's, except the Edge TPU's.

    An Edge TPU runs only models compiled for it; the detector then stays on the CPU while
    the compiled face embedder runs on the TPU.
    """
    text = (delegate or "cpu").strip().lower()
    return "cpu" if text == "edgetpu" or text.startswith("edgetpu:") else delegate


def face_detector(detector: str | os.PathLike, face_score: float | None = None, min_face: int | None = None,
                  **runtime: Any) -> FaceDetector:
    """The detector beside a face embedder opened with ``runtime`` (backend, num_threads, delegate): the same backend
    and threads, its delegate as ``detector_delegate`` says."""
    return FaceDetector(detector, score_threshold=face_score, min_face=min_face, backend=runtime.get("backend") or "auto",
                        num_threads=runtime.get("num_threads"), delegate=detector_delegate(runtime.get("delegate")))


DEFAULT_DETECTOR = "short"
"""BlazeFace short range: faces that fill a good part of the picture (a door, a webcam); ``full`` for wide shots."""

DEFAULT_FACE_MODEL_NAME = "dlib_face_resnet_v1_int8.tflite"
"""The shipped face embedder: dlib's face ResNet (public domain) as int8 TFLite (see models/README.md)."""


def default_face_model() -> Path:
    """The shipped face embedder: $EDGEEMBED_FACE_MODEL, else models/ beside the package (repo or install)."""
    return shipped_model(DEFAULT_FACE_MODEL_NAME, "EDGEEMBED_FACE_MODEL", "face embedding model")


def open_face_model(path: str | os.PathLike | None, **options: Any) -> Embedder:
    """An Embedder for a face model (None: the shipped one, ``default_face_model()``).

    Preprocessing: the options, else the model's metadata, else raw pixels.

    Face embedders in circulation (InsightFace's ArcFace and MobileFaceNet exports) carry
    their normalisation inside the graph and take raw 0..255 RGB; a float face model without
    metadata therefore gets mean 0, std 1 (measured on ORL with mobilefacenet.tflite: recall@1
    0.994 raw, 0.536 with the [-1, 1] image default). Pass mean/std to override.
    """
    path = default_face_model() if path is None else path
    emb = Embedder.create_from_options(EmbedderOptions(model_path=path, **options))
    if emb.spec.source == "edgeembed-metadata" and emb.spec.task != "face":
        emb.close()
        raise ModelError(f"{path} is a whole-image embedding model (its metadata says task {emb.spec.task!r}); "
                         "face mode needs a face embedding model (e.g. one made by edgeembed convert --calibration-faces)")
    if (emb.spec.source == "defaults" and options.get("mean") is None and options.get("std") is None
            and not np.issubdtype(emb.input_format.dtype, np.integer)):
        emb.close()
        emb = Embedder.create_from_options(EmbedderOptions(model_path=path, **{**options, "mean": 0.0, "std": 1.0}))
    return emb


class FaceEmbedder:
    """An Embedder of aligned face crops: warps each face to the model's template, then embeds it."""

    def __init__(self, embedder: Embedder, template: AlignmentTemplate | None = None):
        self.embedder = embedder
        size = embedder.preprocessor.size
        self.template = template or template_for(embedder.spec.extra, size)
        if self.template.size != tuple(size):
            raise InputError(f"alignment template is for {self.template.size} but the model takes {tuple(size)}")

    @classmethod
    def from_model_path(cls, path: str | os.PathLike | None = None, **options: Any) -> "FaceEmbedder":
        """Open a face embedding model (None: the shipped one); see ``open_face_model`` for its preprocessing."""
        return cls(open_face_model(path, **options))

    def align(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """The face's crop in the model's input geometry, RGB uint8."""
        return align_face(rgb, face.keypoints, self.template)

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) aligned RGB uint8 crops -> (N, dim) L2-normalised embeddings."""
        if len(crops) == 0:
            return np.zeros((0, self.embedder.dim), np.float32)
        h, w = self.embedder.preprocessor.size
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (h, w, 3) or crops.dtype != np.uint8:
            raise InputError(f"face crops must be (N, {h}, {w}, 3) uint8, aligned by align() or align_face, got "
                             f"{crops.shape} {crops.dtype}")
        if self.embedder.spec.preprocessing.color_order == "BGR":
            crops = crops[..., ::-1]
        tensor = self.embedder.preprocessor.normalize(np.ascontiguousarray(crops))
        return np.stack([e.vector for e in self.embedder.embed_tensor(tensor)])

    def embed_faces(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.embedder.dim), np.float32)
        return self.embed_crops(np.stack([self.align(rgb, f) for f in faces]))

    def close(self) -> None:
        self.embedder.close()

    def __enter__(self) -> "FaceEmbedder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class FaceResult:
    """One face of a picture: where it is and (once embedded) its vector; label None = unknown."""

    face: Face
    vector: np.ndarray | None = None
    label: str | None = None
    score: float = 0.0
    matches: list[Match] = field(default_factory=list)
    threshold: float | None = None  # what the score was held against: lets the live smoother vote with hysteresis

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.face.box

    def to_dict(self) -> dict[str, Any]:
        out = {"box": [round(float(v), 1) for v in self.face.box], "label": self.label, "score": round(float(self.score), 6),
               "matches": [{"label": m.label, "score": round(m.score, 6)} for m in self.matches]}
        d = self.face.to_dict()
        out["detection_score"] = d["detection_score"]
        out["keypoints"] = d["keypoints"]
        return out


class FacePipeline:
    """Detector + face embedder: every face of a picture, embedded."""

    def __init__(self, detector: FaceDetector, embedder: FaceEmbedder):
        self.detector = detector
        self.embedder = embedder

    @classmethod
    def create(cls, model: str | os.PathLike | None = None, detector: str | os.PathLike = DEFAULT_DETECTOR,
               min_face: int | None = None, face_score: float | None = None, **embedder_options: Any) -> "FacePipeline":
        """Detector + face embedder; ``model`` None is the shipped face embedder (``default_face_model()``)."""
        det = face_detector(detector, face_score, min_face, **embedder_options)
        return cls(det, FaceEmbedder.from_model_path(model, **embedder_options))

    def detect(self, image: ImageLike, color: str = "RGB") -> tuple[np.ndarray, Detections]:
        rgb = read_image(image) if isinstance(image, (str, os.PathLike)) else to_rgb(image, color)
        return rgb, self.detector.detect(rgb)

    def faces(self, image: ImageLike, color: str = "RGB") -> tuple[list[FaceResult], Detections]:
        """Every face (largest first) with its embedding, and the raw detections (with too_small)."""
        rgb, dets = self.detect(image, color)
        vectors = self.embedder.embed_faces(rgb, dets.faces)
        return [FaceResult(f, v) for f, v in zip(dets.faces, vectors)], dets

    def embed_one(self, image: ImageLike, pick: str | None = "largest", color: str = "RGB") -> np.ndarray | None:
        """The embedding of one face of the picture (``pick``: largest or center), None if no face."""
        rgb, dets = self.detect(image, color)
        face = dets.pick(pick or "largest")
        if face is None:
            return None
        return self.embedder.embed_faces(rgb, [face])[0]

    def close(self) -> None:
        self.detector.close()
        self.embedder.close()

    def __enter__(self) -> "FacePipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FaceRecognizer:
    """Every face of a frame, recognized against a face gallery (label None below the threshold)."""

    def __init__(self, pipeline: FacePipeline, gallery: Gallery, threshold: float | None = None, top_k: int = 3):
        if threshold is not None and not is_cosine(threshold):
            raise InputError(f"threshold is a cosine similarity in [-1, 1], got {threshold!r}")
        _require_face_gallery(gallery)
        # the same model, not only the same dimension: two 128-d face models give each other's faces ~0.15
        model = pipeline.embedder.embedder
        gallery.check_binding(binding_for(model, "face"), **binding_checks(model, "face"))
        self.pipeline = pipeline
        self.gallery = gallery
        self.threshold = threshold
        self.top_k = top_k
        self.last_detections: Detections | None = None
        self.timings: dict[str, float] = {}  # ms of the last call: detect, preprocess (align), invoke, search

    @classmethod
    def for_gallery(cls, gallery: Gallery, model: str | os.PathLike | None = None, detector: str | os.PathLike | None = None,
                    min_face: int | None = None, face_score: float | None = None, threshold: float | None = None,
                    top_k: int = 3, **runtime: Any) -> "FaceRecognizer":
        """The face gallery's own model (``model`` only if it has moved) and detector (the one it was enrolled
        with unless ``detector``), ready for ``recognize``; ``runtime``: backend, num_threads, delegate.
        Closing it closes the gallery too."""
        _require_face_gallery(gallery)  # before any model is opened
        emb = open_gallery_embedder(gallery, model, **runtime)
        try:
            det = face_detector(detector or gallery.meta.get("face_detector", DEFAULT_DETECTOR), face_score, min_face,
                                **runtime)
        except BaseException:
            emb.close()
            raise
        pipeline = FacePipeline(det, FaceEmbedder(emb))
        try:
            return cls(pipeline, gallery, threshold=threshold, top_k=top_k)
        except BaseException:
            pipeline.close()
            raise

    def close(self) -> None:
        """Close the pipeline (detector and embedder) and the gallery."""
        self.pipeline.close()
        self.gallery.close()

    def __enter__(self) -> "FaceRecognizer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def recognize(self, image: ImageLike, color: str = "RGB") -> list[FaceResult]:
        t0 = time.perf_counter()
        rgb, dets = self.pipeline.detect(image, color)
        t1 = time.perf_counter()
        emb = self.pipeline.embedder
        crops = np.stack([emb.align(rgb, f) for f in dets.faces]) if dets.faces else None
        t2 = time.perf_counter()
        vectors = emb.embed_crops(crops) if crops is not None else []
        t3 = time.perf_counter()
        results = [FaceResult(f, v) for f, v in zip(dets.faces, vectors)]
        self.last_detections = dets
        if results:
            t = self.gallery.threshold if self.threshold is None else float(self.threshold)
            all_matches = self.gallery.search_many(np.stack([r.vector for r in results]), self.top_k)
            for r, matches in zip(results, all_matches):
                r.matches = matches
                r.threshold = t
                if matches:
                    r.score = matches[0].score
                    r.label = matches[0].label if matches[0].score >= t else None
        t4 = time.perf_counter()
        self.timings = {"detect": (t1 - t0) * 1000, "preprocess": (t2 - t1) * 1000, "invoke": (t3 - t2) * 1000,
                        "search": (t4 - t3) * 1000}
        return results

    def process(self, rgb_frame: np.ndarray) -> list[FaceResult]:
        """The live pipeline's hook: one RGB frame -> one result per face (box, label, score, matches)."""
        return self.recognize(rgb_frame, "RGB")


def _require_face_gallery(gallery: Gallery) -> None:
    if gallery.binding.mode != "face":
        raise InputError(f"gallery {gallery.path} holds whole-image embeddings, not faces; a FaceRecognizer needs "
                         "a gallery enrolled with --mode face")


def threshold_at_far(pipeline: FacePipeline, gallery: Gallery, strangers: list[ImageLike], far: float = 0.01,
                     apply: bool = False) -> dict[str, Any]:
    """The gallery threshold that accepts at most ``far`` of the strangers' faces (people never enrolled).

    Each stranger photo's largest face is searched in the gallery; the threshold is set just
    above the best scores of all but a ``far`` fraction of them. With ``apply`` the gallery
    keeps it (as a user-set threshold). ``edgeembed eval --mode face`` reports the same figure
    for a labelled folder (``threshold@far1%``).
    """
    if not 0.0 <= far < 1.0:
        raise InputError(f"the target false-accept rate must be in [0, 1), got {far}")
    if len(gallery) == 0:
        raise InputError(f"gallery {gallery.path} is empty; enrol people before choosing its threshold")
    vectors = [v for v in (pipeline.embed_one(s) for s in strangers) if v is not None]
    if not vectors:
        raise InputError(f"no face found in the {len(strangers)} stranger photo(s); the threshold needs faces of people not enrolled")
    best = np.sort(np.array([m[0].score for m in gallery.search_many(np.stack(vectors), 1)], np.float64))
    allowed = int(np.floor(far * len(best)))  # strangers that may still be accepted
    t = float(np.nextafter(best[len(best) - allowed - 1], np.inf)) if allowed < len(best) else float(best[0])
    t = min(1.0, max(-1.0, t))
    if apply:
        gallery.set_threshold(t)
    accepted = int((best >= t).sum())
    return {"threshold": round(t, 6), "strangers": len(best), "no_face": len(strangers) - len(best),
            "false_accepts": accepted, "far": round(accepted / len(best), 6), "far_target": far}
