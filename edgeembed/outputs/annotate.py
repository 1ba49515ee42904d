"""Draw a frame's answers on it (boxes, labels, scores) for the annotated video and the preview."""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

KNOWN = (40, 200, 40)  # BGR
UNKNOWN = (40, 40, 220)


def annotate(rgb: np.ndarray, record: Any) -> np.ndarray:
    """A BGR copy of the frame with every track drawn; image mode gets a banner at the top."""
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    scale = max(0.4, min(img.shape[:2]) / 480)
    thick = max(1, int(round(scale * 2)))
    for t in record.tracks:
        if not t.seen and t.box is not None:
            continue
        text = f"{t.label if t.label is not None else 'unknown'} {t.score:.2f}"
        color = KNOWN if t.label is not None else UNKNOWN
        if t.box is None:
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
            cv2.rectangle(img, (0, 0), (tw + 8, th + base + 8), color, -1)
            cv2.putText(img, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
        else:
            x, y, w, h = t.box
            cv2.rectangle(img, (x, y), (x + w, y + h), color, thick)
            cv2.putText(img, text, (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)
    return img
