"""Any picture -> the model's input tensor. One module for inference and calibration.

The converters calibrate through this same code, so a quantized model is calibrated on
exactly the tensors it will see on the device. Steps: read (path) or take an array in the
colour order the caller names -> RGB uint8 -> resize (centre crop, letterbox or stretch) ->
model colour order -> ``(pixel - mean) / std`` -> quantize for integer inputs. The
normalise-and-quantize step is one affine map, applied to the whole batch at once; when it
is the identity (raw-pixel uint8 models) no float work is done at all.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import numpy as np

from .errors import ImageError, InputError
from .image_header import (coefficient_bytes, image_kind, image_size, jpeg_frame, jpeg_size, jpeg_truncated,
                           sample_planes)
from .memory import check_decode
from .spec import Preprocessing

ImageLike = Union[str, os.PathLike, np.ndarray, bytes]  # bytes: an encoded picture (JPEG, PNG, ...) as a camera or URL gives it
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".pgm", ".ppm", ".pbm", ".pnm", ".tif",
                  ".tiff", ".webp", ".gif", ".jp2", ".avif", ".heic", ".heif"}
COLOR_LAYOUTS = ("RGB", "BGR", "RGBA", "BGRA", "RGBX", "BGRX", "XRGB", "XBGR", "GRAY")
_INTERP = {"linear": "INTER_LINEAR", "area": "INTER_AREA", "nearest": "INTER_NEAREST", "cubic": "INTER_CUBIC"}


def _opencv() -> Any:
    """OpenCV, loaded on first use rather than when edgeembed is imported: the command line sets
    OPENCV_LOG_LEVEL before it loads (OpenCV < 4.12 offers no other way to keep its warnings quiet)."""
    import cv2  # noqa: PLC0415

    return cv2


def is_image_file(path: str | os.PathLike, sniff_any: bool = True) -> bool:
    """A picture, by its name or, when the name says nothing, by its first bytes: any unknown extension for a file
    named on purpose; in a folder walk (``sniff_any=False``) only a name without extension (a download's
    ``photo.jpg.part`` stays out)."""
    p = Path(path)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return True
    if p.suffix.lower() in _NOT_IMAGES or (p.suffix and not sniff_any):
        return False
    try:
        with open(p, "rb") as f:
            return image_kind(f.read(32)) is not None
    except OSError:
        return False


_NOT_IMAGES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mjpeg", ".mjpg", ".h264", ".ts", ".txt", ".json",
               ".csv", ".xml", ".md", ".py", ".tflite", ".zip", ".sqlite", ".f32"}


def read_image(path: str | os.PathLike, keep_side: int | None = None) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3). Raises ImageError with one clear line.

    ``keep_side``: the caller only needs a picture whose shorter side is at least this long, so a large JPEG
    may be decoded at 1/2, 1/4 or 1/8 of its size (see ``decode_image``)."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"image not found: {p} (check the path)")
    if p.is_dir():
        raise ImageError(f"{p} is a folder, expected an image file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read {p}: {exc.strerror or exc}") from None
    return decode_image(data, str(p), keep_side)


def decode_image(data: bytes, name: str = "image", keep_side: int | None = None) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) to RGB uint8, refusing truncated JPEGs.

    With ``keep_side``, a JPEG whose shorter side is at least 2x, 4x or 8x that long is decoded at that
    reduction (libjpeg's scaled decoding: each 8x8 block's lower frequencies only). A phone's 12 MP photo that
    becomes a 224x224 input is then read in about half the time and a sixteenth of the memory, and the embedding is
    as close to that of an exact area average as full decoding followed by ``resize`` gives
    (benchmarks/bench_large_photos.py)."""
    cv2 = _opencv()
    if not data:
        raise ImageError(f"{name} is empty (0 bytes), expected an image")
    kind = image_kind(data[:32])
    if kind == "JPEG" and jpeg_truncated(data):
        raise ImageError(f"{name} is a truncated JPEG (no end-of-image marker after its last scan); re-copy or re-capture it")
    if kind == "PNG" and data.rfind(b"IEND") < 0:
        raise ImageError(f"{name} is a truncated PNG (no IEND chunk); re-copy or re-save it")
    if kind in ("HEIC", "HEIF"):
        raise ImageError(f"{name} is a {kind} photo, which OpenCV cannot decode; convert it to JPEG first "
                         "(e.g. heif-convert, or the phone's 'Most Compatible' camera setting)")
    quiet_opencv_logs()
    flag, r = cv2.IMREAD_COLOR, 1
    frame = jpeg_frame(data) if kind == "JPEG" else None  # its markers walked once for all three uses below
    if keep_side and frame:
        r = _reduction(frame[:2], keep_side)
        flag = getattr(cv2, f"IMREAD_REDUCED_COLOR_{r}") if r > 1 else flag  # EXIF orientation applied as well
    size = frame[:2] if frame else image_size(data, kind) if kind != "JPEG" else None
    if size is not None:  # a picture too large for the memory left is refused, not killed by the kernel mid-decode
        check_decode(name, size[1], size[0], r, coefficient_bytes(frame) if frame else 0, kind, sample_planes(data, kind))
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error as exc:  # e.g. a 20000x20000 PNG on a small board: not enough memory to decode it
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ImageError(f"{name} could not be decoded ({detail}); resize it to a few megapixels first") from None
    if bgr is None or bgr.size == 0:
        if kind:
            raise ImageError(f"{name} is a damaged or unsupported {kind} file (cut short, or a variant OpenCV cannot "
                             "read); re-copy it, or save it again as JPEG or PNG")
        raise ImageError(f"{name} is not a readable image (expected JPEG, PNG, BMP, PGM, TIFF or WebP)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def jpeg_reduction(data: bytes, keep_side: int) -> int:
    """The largest of 8, 4, 2 (else 1) by which a JPEG can be scaled down on decoding and keep its shorter side
    at least ``keep_side`` pixels. 1 when the frame header cannot be found."""
    size = jpeg_size(data)
    return _reduction(size, keep_side) if size else 1


def _reduction(size: tuple[int, int], keep_side: int) -> int:
    short = min(size)
    for r in (8, 4, 2):
        if short // r >= keep_side:
            return r
    return 1


_opencv_quiet = False


def quiet_opencv_logs() -> None:
    """OpenCV logs its own lines ('[ WARN ] ... PNG input buffer is incomplete', a camera that will not open)
    beside our one-line errors: keep to errors. Done once, when first needed (not at import: importing
    edgeembed changes no global state)."""
    cv2 = _opencv()
    global _opencv_quiet
    if not _opencv_quiet:
        _opencv_quiet = True
        try:
            if cv2.utils.logging.getLogLevel() > cv2.utils.logging.LOG_LEVEL_ERROR:  # never louder (the CLI: silent)
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:  # pragma: no cover - very old OpenCV
            pass


def to_rgb(image: np.ndarray, color: str = "RGB") -> np.ndarray:
    """An array in the named layout -> contiguous RGB uint8 (H, W, 3).

    ``color`` names the channel order in memory: RGB, BGR, RGBA, BGRA, RGBX, BGRX, XRGB,
    XBGR, or GRAY. A 2-D array, or one with a single channel, is grayscale whatever ``color``
    says. Float arrays are taken as 0..1 when their maximum is <= 1.5, else 0..255; uint16 is a 16-bit picture
    (0..65535); other integer types must hold 0..255; anything else (complex, objects) is refused.
    """
    cv2 = _opencv()
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array (H, W[, C]) or a path, got {type(image).__name__}")
    if not isinstance(color, str) or color.upper() not in COLOR_LAYOUTS:
        raise InputError(f"color must be one of {', '.join(COLOR_LAYOUTS)}, got {color!r}")
    color = color.upper()
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise InputError(f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"image is empty, shape {image.shape}")
    img = image
    if img.dtype != np.uint8:
        img = _to_uint8(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if color == "GRAY" and img.ndim == 3:
        raise InputError(f"color GRAY needs a (H, W) or (H, W, 1) image, got {image.shape}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        order = color if len(color) == 4 else color + "A"
        if order in ("RGBA", "RGBX"):
            return cv2.cvtColor(img, cv2.COLOR_RGBA2RGB)
        if order in ("BGRA", "BGRX"):  # picamera2's XRGB8888 (B, G, R, X in memory)
            return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        idx = [order.index(c) for c in "RGB"]
        return np.ascontiguousarray(img[:, :, idx])
    if color in ("BGR", "BGRA", "BGRX", "XBGR"):
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.bool_:
        return img.astype(np.uint8) * 255
    if np.issubdtype(img.dtype, np.floating):
        if not np.isfinite(img).all():
            raise InputError("image holds NaN or infinite values; expected 0..1 or 0..255")
        top, low = float(img.max()), float(img.min())
        # 0..1 up to 1.5: a resize's overshoot or a little gain on a 0..1 picture (cubic: -0.11..1.11) is still 0..1
        # (read as 0..255 it would be black); a 0..255 picture whose brightest pixel is 1.5 is black either way
        unit = top <= 1.5
        # overshoot is clipped (cubic: 10.7..265.4 from 0..255); a normalised picture (-1..1, -2.1..2.6) is
        # refused: read as pixels it would be a different picture
        if (unit and low < -0.15) or (not unit and (low < -32.0 or top > 288.0 or (low < 0 and top < 16.0))):
            raise InputError(f"a float image must be in 0..1 or 0..255, got {low:g}..{top:g} "
                             "(undo the model's normalisation: edgeembed applies it itself)")
        scaled = img * 255.0 if unit else img
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if img.dtype.kind == "u" and img.dtype.itemsize == 2:  # uint16, either byte order (Pillow's I;16B is '>u2')
        return (img.astype(np.uint16) >> 8).astype(np.uint8)
    if np.issubdtype(img.dtype, np.integer):  # int arrays of pixel values (img.astype(int), a list of ints)
        low, top = int(img.min()), int(img.max())
        if low < 0 or top > 255:
            raise InputError(f"an integer image ({img.dtype}) must hold pixel values 0..255, got {low}..{top} "
                             "(uint16 is read as 0..65535)")
        return img.astype(np.uint8)
    raise InputError(f"an image of dtype {img.dtype} is not a picture; expected uint8, uint16, bool, integers "
                     "0..255 or float (0..1 or 0..255)")


def resize(rgb: np.ndarray, size: tuple[int, int], pre: Preprocessing) -> np.ndarray:
    """Resize RGB (H, W, 3) to ``size`` = (height, width) by the spec's mode."""
    th, tw = size
    h, w = rgb.shape[:2]
    if pre.resize == "center_crop":
        # Largest window with the target's aspect ratio, shrunk by crop_fraction, centred.
        scale = min(h / th, w / tw) * pre.crop_fraction
        ch, cw = max(1, round(th * scale)), max(1, round(tw * scale))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        rgb = rgb[y0 : y0 + ch, x0 : x0 + cw]
        return _resize_to(rgb, tw, th, pre.interpolation)
    if pre.resize == "letterbox":
        scale = min(th / h, tw / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        inner = _resize_to(rgb, nw, nh, pre.interpolation)
        pad = np.array(pre.mean, dtype=np.float32).clip(0, 255).round().astype(np.uint8)
        out = np.empty((th, tw, 3), np.uint8)
        out[:] = pad
        y0, x0 = (th - nh) // 2, (tw - nw) // 2
        out[y0 : y0 + nh, x0 : x0 + nw] = inner
        return out
    return _resize_to(rgb, tw, th, pre.interpolation)


def _resize_to(rgb: np.ndarray, w: int, h: int, interpolation: str) -> np.ndarray:
    cv2 = _opencv()
    if rgb.shape[0] == h and rgb.shape[1] == w:
        return np.ascontiguousarray(rgb)
    if rgb.strides[1:] != (3, 1):  # OpenCV takes a crop (strided rows) as it is, but not strided pixels
        rgb = np.ascontiguousarray(rgb)
    if interpolation == "auto":
        if not (w < rgb.shape[1] and h < rgb.shape[0]):
            return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
        # Area averaging, as INTER_AREA; by a non-integer factor k.x >= 2 OpenCV's exact path is
        # ~5x slower than by an integer one, so go to k times the target first (a slight linear
        # resize) and average k x k blocks: within 0.15 grey levels of the exact result on average.
        k = int(min(rgb.shape[1] / w, rgb.shape[0] / h))
        if k >= 2 and (rgb.shape[1] != k * w or rgb.shape[0] != k * h):
            rgb = cv2.resize(rgb, (k * w, k * h), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    return cv2.resize(rgb, (w, h), interpolation=getattr(cv2, _INTERP[interpolation]))


DECODE_MARGIN = 3  # see decode_keep_side


def decode_keep_side(pre: Preprocessing, size: tuple[int, int]) -> int | None:
    """The shorter side a picture file must keep when decoded for a model input of ``size``: three times what the
    resize needs, so the area averaging that follows spans at least 3x3 decoded pixels (at 2x, embeddings moved by
    twice as much as full decoding's own resize does: cosine 0.9966 against 0.9983 to an exact area average, on
    smooth pictures). None (always decode in full) when the interpolation is not an average over pixels: a model
    trained on linear or cubic resizing gets exactly that."""
    if pre.interpolation not in ("auto", "area"):
        return None
    crop = pre.crop_fraction if pre.resize == "center_crop" else 1.0
    return math.ceil(DECODE_MARGIN * max(size) / crop)


@dataclass(frozen=True)
class InputFormat:
    """The model input the preprocessor fills: (height, width), dtype and quantization."""

    height: int
    width: int
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0


class Preprocessor:
    """Turns pictures into a batch of model input; built once per model."""

    def __init__(self, pre: Preprocessing, fmt: InputFormat):
        self.pre = pre
        self.fmt = fmt
        mean = np.asarray(pre.mean, np.float32)
        std = np.asarray(pre.std, np.float32)
        if pre.color_order == "BGR":
            mean, std = mean[::-1].copy(), std[::-1].copy()
        # tensor = pixel * a + b, with quantization folded in for integer inputs.
        if np.issubdtype(fmt.dtype, np.integer):
            if not fmt.scale:
                raise InputError(f"integer model input without quantization parameters (dtype {fmt.dtype}); the model is not usable")
            a = 1.0 / (std * fmt.scale)
            b = fmt.zero_point - mean * a
        else:
            a = 1.0 / std
            b = -mean / std
        self._a = a.astype(np.float32)
        self._b = b.astype(np.float32)
        self._identity = np.allclose(a, 1.0, atol=1e-3) and np.allclose(b, 0.0, atol=1e-2)
        self._minus128 = np.allclose(a, 1.0, atol=1e-3) and np.allclose(b, -128.0, atol=1e-2)
        if np.issubdtype(fmt.dtype, np.integer):
            info = np.iinfo(fmt.dtype)
            self._lo, self._hi = info.min, info.max
        self.keep_side = decode_keep_side(pre, (fmt.height, fmt.width))

    @property
    def size(self) -> tuple[int, int]:
        return self.fmt.height, self.fmt.width

    def resized(self, image: ImageLike, color: str = "RGB") -> np.ndarray:
        """One picture -> resized uint8 in the model's colour order, (H, W, 3)."""
        if isinstance(image, (str, os.PathLike)):
            rgb = read_image(image, self.keep_side)
        elif isinstance(image, (bytes, bytearray, memoryview)):
            rgb = decode_image(bytes(image), "the picture's bytes", self.keep_side)
        else:
            rgb = to_rgb(image, color)
        out = resize(rgb, self.size, self.pre)
        return out[:, :, ::-1] if self.pre.color_order == "BGR" else out

    def __call__(self, images: Sequence[ImageLike] | ImageLike, color: str = "RGB") -> np.ndarray:
        """Pictures (a path, an array or a list of them) -> (N, H, W, 3) input tensor."""
        if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview)) or \
                (isinstance(images, np.ndarray) and images.ndim != 4):  # one picture (a 1-D array: refused by shape)
            images = [images]
        batch = np.stack([self.resized(im, color) for im in images])
        return self.normalize(batch)

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 in model colour order -> model input dtype, vectorised."""
        dtype = self.fmt.dtype
        if dtype == np.uint8 and self._identity:
            return np.ascontiguousarray(batch)
        if dtype == np.int8 and self._minus128:
            return (batch ^ np.uint8(0x80)).view(np.int8)
        x = batch.astype(np.float32) * self._a + self._b
        if np.issubdtype(dtype, np.integer):
            np.rint(x, out=x)
            np.clip(x, self._lo, self._hi, out=x)
        return x.astype(dtype, copy=False)


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in a folder, in sorted path order (the order eval's gallery split uses)."""
    root = Path(folder)
    it: Iterable[Path] = root.rglob("*") if recursive else root.iterdir()
    files = [p for p in it if not _hidden(p.relative_to(root)) and p.is_file() and is_image_file(p, sniff_any=False)]
    return sorted(files)


def _hidden(rel: Path) -> bool:
    """Dot-files and dot-folders (.thumbnails, ._x.jpg from a Mac), and a Synology's @eaDir thumbnails."""
    return any(part.startswith(".") or part in ("@eaDir", "__MACOSX") for part in rel.parts)


def still_images(source: str | os.PathLike) -> list[Path] | None:
    """The pictures of a still source (an image file, or a folder of them, recursively); None for
    anything else (a video, a camera, a stream), which the live pipeline reads."""
    src = Path(source)
    if src.is_file() and is_image_file(src):
        return [src]
    if str(source).lower().startswith("picamera2"):  # picamera2, picamera2:1, picamera2?format=...: a camera
        return None
    if not src.exists() and "://" not in str(source) and any(c in str(source) for c in "*?["):  # a glob: like a folder
        import glob  # noqa: PLC0415

        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(str(source)), recursive=True)
                       if Path(p).is_file() and is_image_file(p, sniff_any=False))
        if not files:
            raise InputError(f"{source} matches no images (expected .jpg, .png, .bmp, ... files)")
        return files
    if not src.is_dir():
        return None
    files = list_images(src, recursive=True)
    if not files:
        raise InputError(f"{src} holds no images (expected .jpg, .png, .bmp, .pgm, ...)")
    return files
