"""Any picture -> the model's input tensor. One module for inference and calibration.

The converters calibrate through this same code, so a quantized model is calibrated on
exactly the tensors it will see on the device. Steps: read (path) or take an array in the
colour order the caller names -> RGB uint8 -> resize (centre crop, letterbox or stretch) ->
model colour order -> ``(pixel - mean) / std`` -> quantize for integer inputs. The
normalise-and-quantize step is one affine map, applied to the whole batch at once; when it
is the identity (raw-pixel uint8 models) no float work is done at all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, Union

import cv2
import numpy as np

from .errors import ImageError, InputError
from .spec import Preprocessing

ImageLike = Union[str, os.PathLike, np.ndarray]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".pbm", ".tif", ".tiff", ".webp", ".gif"}
COLOR_LAYOUTS = ("RGB", "BGR", "RGBA", "BGRA", "RGBX", "BGRX", "XRGB", "XBGR", "GRAY")
_INTERP = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST, "cubic": cv2.INTER_CUBIC}


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3). Raises ImageError with one clear line."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"image not found: {p} (check the path)")
    if p.is_dir():
        raise ImageError(f"{p} is a folder, expected an image file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read {p}: {exc.strerror or exc}") from None
    return decode_image(data, str(p))


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) to RGB uint8, refusing truncated JPEGs."""
    if not data:
        raise ImageError(f"{name} is empty (0 bytes), expected an image")
    if data[:2] == b"\xff\xd8" and _jpeg_truncated(data):
        raise ImageError(f"{name} is a truncated JPEG (no end-of-image marker after its last scan); re-copy or re-capture it")
    quiet_opencv_logs()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageError(f"{name} is not a readable image (expected JPEG, PNG, BMP, PGM, TIFF or WebP)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


_opencv_quiet = False


def quiet_opencv_logs() -> None:
    """OpenCV logs its own lines ('[ WARN ] ... PNG input buffer is incomplete', a camera that will not open)
    beside our one-line errors: keep to errors. Done once, when first needed (not at import: importing
    edgeembed changes no global state)."""
    global _opencv_quiet
    if not _opencv_quiet:
        _opencv_quiet = True
        try:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:  # pragma: no cover - very old OpenCV
            pass


def _jpeg_truncated(data: bytes) -> bool:
    tail = data.rstrip(b"\x00\r\n \t")
    if tail.endswith(b"\xff\xd9"):
        return False
    # Bytes appended after EOI (motion photos, trailers) are fine; the last scan must be closed.
    return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")


def to_rgb(image: np.ndarray, color: str = "RGB") -> np.ndarray:
    """An array in the named layout -> contiguous RGB uint8 (H, W, 3).

    ``color`` names the channel order in memory: RGB, BGR, RGBA, BGRA, RGBX, BGRX, XRGB,
    XBGR, or GRAY. A 2-D array, or one with a single channel, is grayscale whatever ``color``
    says. Float arrays are taken as 0..1 when their maximum is <= 1, else 0..255.
    """
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array or a path, got {type(image).__name__}")
    color = color.upper()
    if color not in COLOR_LAYOUTS:
        raise InputError(f"color must be one of {', '.join(COLOR_LAYOUTS)}, got {color!r}")
    img = image
    if img.dtype != np.uint8:
        img = _to_uint8(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise InputError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise InputError(f"image is empty, shape {image.shape}")
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
        top = float(np.nanmax(img)) if img.size else 0.0
        scaled = img * 255.0 if top <= 1.0 else img
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    return np.clip(img, 0, 255).astype(np.uint8)


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
    return cv2.resize(rgb, (w, h), interpolation=_INTERP[interpolation])


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

    @property
    def size(self) -> tuple[int, int]:
        return self.fmt.height, self.fmt.width

    def resized(self, image: ImageLike, color: str = "RGB") -> np.ndarray:
        """One picture -> resized uint8 in the model's colour order, (H, W, 3)."""
        rgb = read_image(image) if isinstance(image, (str, os.PathLike)) else to_rgb(image, color)
        out = resize(rgb, self.size, self.pre)
        return out[:, :, ::-1] if self.pre.color_order == "BGR" else out

    def __call__(self, images: Sequence[ImageLike] | ImageLike, color: str = "RGB") -> np.ndarray:
        """Pictures (a path, an array or a list of them) -> (N, H, W, 3) input tensor."""
        if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
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
    files = [p for p in it if p.is_file() and is_image_file(p) and not p.name.startswith(".")]
    return sorted(files)


def still_images(source: str | os.PathLike) -> list[Path] | None:
    """The pictures of a still source (an image file, or a folder of them, recursively); None for
    anything else (a video, a camera, a stream), which the live pipeline reads."""
    src = Path(source)
    if src.is_file() and is_image_file(src):
        return [src]
    if not src.is_dir():
        return None
    files = list_images(src, recursive=True)
    if not files:
        raise InputError(f"{src} holds no images (expected .jpg, .png, .bmp, .pgm, ...)")
    return files
