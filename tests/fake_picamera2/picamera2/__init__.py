"""A stand-in for picamera2, for tests only: libcamera cannot run off a Raspberry Pi.

It reproduces the parts of picamera2's API edgeembed uses (Picamera2(camera_num),
create_video_configuration, configure, camera_configuration, start, capture_array, stop,
close, global_camera_info) and, above all, its real buffer layouts, so that edgeembed's
conversion code is exercised on the bytes a Pi delivers:

- packed formats are named the DRM way: RGB888 = B,G,R in memory, BGR888 = R,G,B,
  XRGB8888 = B,G,R,X (X = 255), XBGR8888 = R,G,B,X;
- every row is padded to a stride aligned to 64 bytes, and ``capture_array`` trims the
  padding of packed formats as picamera2's Helpers.make_array does;
- YUV420 is I420, BT.601 limited range (libcamera's Smpte170m), Y plane of ``stride``
  bytes per row then U and V planes of ``stride / 2``; ``capture_array`` returns it as one
  (height * 3/2, stride) array with the padding still on the right, like picamera2.

The picture is a real image file named by $FAKE_PICAMERA2_IMAGE, scaled to the stream size.
$FAKE_PICAMERA2_CAMERAS=0 simulates a Pi with no camera; $FAKE_PICAMERA2_MODEL=pi4 refuses
a non-YUV420 lores stream as a Pi 4 does.
"""
from __future__ import annotations

import os
import time

import cv2
import numpy as np

ALIGN = 64
PACKED = {"RGB888": (3, (2, 1, 0)), "BGR888": (3, (0, 1, 2)), "XRGB8888": (4, (2, 1, 0)), "XBGR8888": (4, (0, 1, 2))}
PAD_BYTE = 0x5A  # what lies in the stride padding: never a pixel


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def global_camera_info() -> list[dict]:
    n = int(os.environ.get("FAKE_PICAMERA2_CAMERAS", "1"))
    return [{"Model": "imx708", "Location": 2, "Rotation": 180, "Id": f"/base/fake/i2c@{i}", "Num": i} for i in range(n)]


class Picamera2:
    global_camera_info = staticmethod(global_camera_info)

    def __init__(self, camera_num: int = 0):
        cams = global_camera_info()
        if camera_num >= len(cams):
            raise IndexError("list index out of range")  # what picamera2 raises when libcamera lists no such camera
        self.camera_num = camera_num
        self._config: dict | None = None
        self.started = False
        self.closed = False
        self.frames = 0

    def create_video_configuration(self, main=None, lores=None, raw=None, transform=None, colour_space=None,
                                   buffer_count=6, controls=None, display="main", encode="main", queue=True,
                                   sensor=None, use_case="video") -> dict:
        main = dict(main or {})
        cfg = {"use_case": use_case, "buffer_count": buffer_count, "controls": dict(controls or {}),
               "main": {"format": main.get("format", "XBGR8888"), "size": tuple(main.get("size", (1280, 720)))},
               "lores": None}
        if lores is not None:
            cfg["lores"] = {"format": lores.get("format", "YUV420"), "size": tuple(lores.get("size", (320, 240)))}
        return cfg

    def configure(self, config: dict) -> None:
        out = {}
        for name in ("main", "lores"):
            s = config.get(name)
            if s is None:
                continue
            fmt, (w, h) = s["format"], s["size"]
            if fmt in PACKED:
                stride = _align(w * PACKED[fmt][0])
            elif fmt in ("YUV420", "YVU420"):
                if w % 2 or h % 2:
                    raise RuntimeError(f"{fmt} needs an even size, got {w}x{h}")
                stride = _align(w)
            else:
                raise RuntimeError(f"fake picamera2: format {fmt} not supported")
            if name == "lores" and fmt not in ("YUV420", "YVU420") and os.environ.get("FAKE_PICAMERA2_MODEL") == "pi4":
                raise RuntimeError("lores stream must be YUV420 on this platform")
            out[name] = {**s, "size": (w, h), "stride": stride,
                         "framesize": stride * h if fmt in PACKED else stride * h * 3 // 2}
        out["controls"] = config.get("controls", {})
        self._config = out

    def camera_configuration(self) -> dict:
        return self._config

    def start(self) -> None:
        if self._config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True

    # ---------------------------------------------------------------- buffers
    def _picture(self, w: int, h: int) -> np.ndarray:
        path = os.environ.get("FAKE_PICAMERA2_IMAGE")
        if not path:
            raise RuntimeError("set FAKE_PICAMERA2_IMAGE to the image the fake camera sees")
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if (bgr.shape[1], bgr.shape[0]) != (w, h):
            bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
        return bgr[:, :, ::-1]  # RGB

    def _buffer(self, name: str) -> np.ndarray:
        """The flat dmabuf contents libcamera would hand over for this stream."""
        s = self._config[name]
        fmt, (w, h), stride = s["format"], s["size"], s["stride"]
        rgb = self._picture(w, h)
        if fmt in PACKED:
            bpp, order = PACKED[fmt]
            buf = np.full((h, stride), PAD_BYTE, np.uint8)
            px = buf[:, : w * bpp].reshape(h, w, bpp)
            for i, c in enumerate(order):
                px[:, :, i] = rgb[:, :, c]
            if bpp == 4:
                px[:, :, 3] = 255
            return buf.reshape(-1)
        y, u, v = _rgb_to_i420_bt601(rgb)
        if fmt == "YVU420":
            u, v = v, u
        cs = stride // 2
        buf = np.full(stride * h * 3 // 2, PAD_BYTE, np.uint8)
        buf[: stride * h].reshape(h, stride)[:, :w] = y
        ubase, vbase = stride * h, stride * h + cs * (h // 2)
        buf[ubase:vbase].reshape(h // 2, cs)[:, : w // 2] = u
        buf[vbase:].reshape(h // 2, cs)[:, : w // 2] = v
        return buf

    def capture_array(self, name: str = "main") -> np.ndarray:
        """picamera2's Helpers.make_array on a fresh buffer (a copy, as capture_array returns)."""
        if not self.started:
            raise RuntimeError("Camera must be started before capture_array")
        if self._config.get(name) is None:
            raise KeyError(name)
        time.sleep(0.001)
        self.frames += 1
        s = self._config[name]
        fmt, (w, h), stride = s["format"], s["size"], s["stride"]
        array = self._buffer(name)
        if fmt in PACKED:
            bpp = PACKED[fmt][0]
            if stride != w * bpp:
                array = np.asarray(array.reshape((h, stride))[:, : w * bpp], order="C")
            return array.reshape((h, w, bpp)).copy()
        return array.reshape((h * 3 // 2, stride)).copy()


def _rgb_to_i420_bt601(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB -> Y, U, V planes, BT.601 limited range, chroma averaged over 2x2 blocks."""
    f = rgb.astype(np.float64) / 255.0
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    cb = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    cr = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    h, w = y.shape

    def sub(c: np.ndarray) -> np.ndarray:
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    q = lambda a: np.clip(np.rint(a), 0, 255).astype(np.uint8)  # noqa: E731
    return q(y), q(sub(cb)), q(sub(cr))
