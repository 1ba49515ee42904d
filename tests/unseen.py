"""A labelled dataset the project never tuned on: real photos, several camera-like views each.

Classes are scikit-image's bundled photos and ../shared/data/coral-images; each class gets
views a camera would produce of the same thing (crop and zoom, small rotation, mirror, an
exposure change, blur), written as files so the real CLI reads them.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from conftest import DATA

SKIMAGE = ["astronaut", "chelsea", "coffee", "rocket", "horse", "motorcycle_left", "brick", "grass", "gravel",
           "camera", "coins", "moon", "page", "text", "hubble_deep_field", "immunohistochemistry"]


def _photos() -> dict[str, np.ndarray]:
    import skimage.data as data
    import skimage.io as io

    out = {}
    root = Path(data.__file__).parent
    for name in SKIMAGE:
        img = getattr(data, name)() if name != "motorcycle_left" else io.imread(root / "motorcycle_left.png")
        img = np.asarray(img)
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        out[name] = np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)
    for f in sorted((DATA / "coral-images").iterdir()):
        if f.suffix.lower() in (".jpg", ".bmp"):
            out["coral_" + f.stem] = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
    return out


def _views(rgb: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    h, w = rgb.shape[:2]
    views = [rgb]
    while len(views) < n:
        s = rng.uniform(0.7, 0.95)
        ch, cw = int(h * s), int(w * s)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        v = rgb[y : y + ch, x : x + cw]
        m = cv2.getRotationMatrix2D((cw / 2, ch / 2), rng.uniform(-10, 10), 1.0)
        v = cv2.warpAffine(v, m, (cw, ch), borderMode=cv2.BORDER_REFLECT)
        if rng.random() < 0.5:
            v = v[:, ::-1]
        v = np.clip(v.astype(np.float32) * rng.uniform(0.7, 1.2), 0, 255).astype(np.uint8)
        if rng.random() < 0.3:
            v = cv2.GaussianBlur(v, (5, 5), 0)
        views.append(np.ascontiguousarray(v))
    return views


def write_unseen_dataset(root: Path, views: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, rgb in _photos().items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i, v in enumerate(_views(rgb, views, rng)):
            cv2.imwrite(str(d / f"{i:02d}.png"), cv2.cvtColor(v, cv2.COLOR_RGB2BGR))
    return root
