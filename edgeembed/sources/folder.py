"""A folder of images or a glob pattern, read in sorted order: a recording, every image processed."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from ..errors import ImageError, SourceError
from ..preprocess import is_image_file, list_images, read_image
from .base import FrameSource, StatusCallback

GLOB_CHARS = "*?["


def is_folder_spec(spec: str) -> bool:
    """A folder, or a glob pattern; an existing file (say ``clip[1].avi``) is never read as a pattern."""
    return Path(spec).is_dir() or (not Path(spec).exists() and "://" not in spec and any(c in spec for c in GLOB_CHARS))


class FolderSource(FrameSource):
    """Images of a folder (recursively) or of a glob; unreadable images are reported and skipped.

    ``keep_side``: set by a consumer that only needs pictures whose shorter side is this long (a whole-image
    model's ``Preprocessor.keep_side``): large JPEGs are then decoded at a reduction, as ``Embedder.embed(path)``
    reads them."""

    live = False
    keep_side: int | None = None

    def __init__(self, spec: str, resolution: tuple[int, int] | None = None, roi=None,
                 on_status: StatusCallback | None = None):
        super().__init__(resolution, roi, on_status)
        self.spec = spec
        self.name = f"images {spec}"
        self.files: list[Path] = []
        self._next = 0

    def _open(self) -> None:
        if Path(self.spec).is_dir():
            self.files = list_images(self.spec, recursive=True)
        else:
            self.files = sorted(Path(p) for p in glob.glob(os.path.expanduser(self.spec), recursive=True)
                                if is_image_file(p, sniff_any=False) and Path(p).is_file())
        if not self.files:
            raise SourceError(f"{self.spec} matches no images (expected .jpg, .png, .bmp, ... files)")
        self._next = 0

    def _read(self) -> np.ndarray | None:
        while self._next < len(self.files):
            f = self.files[self._next]
            self._next += 1
            try:
                return self._fit_resolution(read_image(f, self.keep_side))
            except ImageError as exc:
                self.on_status("source_skip", f"skipped {exc}", {"source": str(f)})
        return None

    def _origin(self) -> str | None:
        return str(self.files[self._next - 1]) if self._next else None
