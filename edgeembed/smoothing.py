"""Stable answers from flickering frames: temporal smoothing and debounced appeared/left events.

Each track (the whole frame in image mode, one face in face mode) keeps its last N raw
answers. Its smoothed label changes only when another answer ("unknown" included) holds a
strict majority of a full window, so a single odd frame never flips it, and each change of
the smoothed label gives exactly one "left" for the old label and one "appeared" for the new.
A face track that a majority of its window saw but that has no label is an unknown face: it
appears and leaves with label None (at a front door, the stranger is the event that matters);
the whole frame of image mode never does (no enrolled object in view is no event).
Faces are followed from frame to frame by box overlap (IoU), which is enough at camera rates.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Sequence

Box = tuple[int, int, int, int]


@dataclass
class Result:
    """One answer for one frame: the whole frame (box None) or one face."""

    box: Box | None
    label: str | None
    score: float
    matches: list[dict] = field(default_factory=list)
    candidate: str | None = None  # best match even below the threshold (what the smoother votes for)
    threshold: float | None = None

    @classmethod
    def coerce(cls, r: Any) -> "Result":
        """Accept this class, a dict, or any object with box/label/score/matches (e.g. a face result)."""
        if isinstance(r, Result):
            return r
        get = r.get if isinstance(r, dict) else (lambda k, d=None: getattr(r, k, d))
        matches = get("matches", None) or []
        matches = [m if isinstance(m, dict) else {"label": m.label, "score": float(m.score)} for m in matches]
        box = get("box", None)
        label = get("label", None)
        threshold = get("threshold", None)
        candidate = get("candidate", None) or (matches[0]["label"] if matches else label)
        return cls(tuple(int(v) for v in box) if box is not None else None, label, float(get("score", 0.0)), matches,
                   candidate, float(threshold) if threshold is not None else None)


HOLD_MARGIN = 0.08  # cosine: a stable label is held until its windowed mean score falls this far below the threshold


class LabelSmoother:
    """Majority vote over the last ``window`` answers, thresholded on the window's mean score, with hysteresis.

    Each frame votes for its best gallery match (its *candidate*, even when that frame alone
    scored below the threshold). When a candidate holds a strict majority of a full window,
    the smoothed label becomes that candidate if the mean score of its votes reaches the
    threshold, else unknown. A label already shown is kept while its mean stays within
    HOLD_MARGIN of the threshold (a Schmitt trigger), so a label whose score hovers at the
    threshold does not flap between known and unknown. Without a majority the old label is kept
    only while its own votes in the window hold that mean: a stranger whose best match wanders
    between labels becomes unknown instead of keeping the last label shown.
    Answers without a threshold (e.g. from another processor) vote with their label as is.
    """

    def __init__(self, window: int = 5, hold_margin: float = HOLD_MARGIN):
        self.window = max(1, int(window))
        self.need = self.window // 2 + 1
        self.hold_margin = hold_margin
        self.history: deque[tuple[str | None, float, str | None]] = deque(maxlen=self.window)
        self.sightings: deque[bool] = deque(maxlen=self.window)  # beside history: did that frame see the thing
        self.label: str | None = None
        self.threshold: float | None = None  # the last one given: an empty frame is judged by it too

    def update(self, label: str | None, score: float, candidate: str | None = None,
               threshold: float | None = None, seen: bool = True) -> tuple[str | None, float]:
        """Add one raw answer (``seen`` False: the thing was not found in this frame); return the smoothed
        (label, score)."""
        self.sightings.append(seen)
        if threshold is not None:
            self.threshold = threshold
        elif label is None and candidate is None:
            # nothing there (the face left the picture): judged like the answers before it, so the votes of a
            # face that stayed below the threshold do not make it 'appear' as it goes
            threshold = self.threshold
        key = candidate if threshold is not None else label
        self.history.append((key, float(score), label))
        top, n = Counter(k for k, _, _ in self.history).most_common(1)[0]
        if n >= self.need:
            if threshold is None or top is None:
                self.label = top
            else:
                mean = sum(s for k, s, _ in self.history if k == top) / n
                bar = threshold - self.hold_margin if top == self.label else threshold
                self.label = top if mean >= bar else None
        elif self.label is not None:  # no majority: the old label stays only while the window still backs it
            mine = [s for k, s, _ in self.history if k == self.label]
            if not mine or (threshold is not None and sum(mine) / len(mine) < threshold - self.hold_margin):
                self.label = None
        scores = [s for k, s, _ in self.history if k == self.label] or [s for _, s, _ in self.history]
        return self.label, sum(scores) / len(scores)

    @property
    def present(self) -> bool:
        """Seen in a strict majority of the window: the same debounce as a label, so one missed or one stray
        detection is no appearance and no departure."""
        return sum(self.sightings) >= self.need

    @property
    def unrecognized(self) -> bool:
        """A strict majority of the window saw it and answered no label: a stranger, not a known face whose
        first frames disagree (one odd frame among them made an unknown face appear for a frame)."""
        return sum(1 for (_, _, lbl), seen in zip(self.history, self.sightings) if seen and lbl is None) >= self.need

    @property
    def gone(self) -> bool:
        """Not seen in the whole window: nothing is left to smooth."""
        return not any(self.sightings)

    @property
    def seen_score(self) -> float:
        """Mean raw score of the frames that saw it (an unknown face's best-match score, empty frames left out)."""
        scores = [s for (_, s, _), seen in zip(self.history, self.sightings) if seen]
        return sum(scores) / len(scores) if scores else 0.0


@dataclass
class Track:
    """One thing followed over frames, with its smoother and its last answer."""

    id: int
    box: Box | None
    smoother: LabelSmoother
    raw: Result | None = None
    label: str | None = None
    score: float = 0.0
    seen: bool = True

    @property
    def present(self) -> bool:
        """Smoothly in view: it has a label, or a majority of its window saw it."""
        return self.label is not None or self.smoother.present

    @property
    def unknown(self) -> bool:
        """A face smoothly in view that no enrolled label holds; never the whole frame of image mode."""
        return self.box is not None and self.label is None and self.smoother.present and self.smoother.unrecognized

    def to_dict(self) -> dict[str, Any]:
        r = self.raw
        d = {"track": self.id, "box": list(self.box) if self.box else None, "label": self.label,
             "score": round(self.score, 6), "raw_label": r.label if r and self.seen else None,
             "raw_score": round(r.score, 6) if r and self.seen else None,
             "matches": (r.matches if r and self.seen else [])}
        if self.box is not None:
            d.update(present=self.present, unknown=self.unknown)
        return d


def _centre_distance(a: Box, b: Box) -> float:
    return float(((a[0] + a[2] / 2 - b[0] - b[2] / 2) ** 2 + (a[1] + a[3] / 2 - b[1] - b[3] / 2) ** 2) ** 0.5)


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


class TrackSmoother:
    """Smoothing and debounced events for every track of a stream.

    ``update(frame, results)`` returns the live tracks and the events of this frame:
    ``{"event": "appeared"|"left", "label", "frame", "score", "track"}``; label None is an unknown face.
    """

    def __init__(self, window: int = 5, min_iou: float = 0.3):
        self.window = max(1, int(window))
        self.min_iou = min_iou
        self.tracks: list[Track] = []
        self._next_id = 0

    def update(self, frame: int, results: Sequence[Any]) -> tuple[list[Track], list[dict]]:
        results = [Result.coerce(r) for r in results]
        events: list[dict] = []
        for t in self.tracks:
            t.seen = False
        for r, t in self._assign(results):
            t.box, t.raw, t.seen = r.box, r, True
        for t in self.tracks:
            r = t.raw if t.seen and t.raw else Result(t.box, None, 0.0)
            before, was_unknown, before_score = t.label, t.unknown, t.score
            t.label, t.score = t.smoother.update(r.label, r.score, r.candidate, r.threshold, seen=t.seen)
            events += self._changes(frame, t, before, was_unknown, before_score)
        # a face that has been gone for a whole window is forgotten (its "left" was emitted above)
        self.tracks = [t for t in self.tracks if t.seen or not t.smoother.gone or t.box is None]
        return list(self.tracks), events

    def _changes(self, frame: int, t: Track, before: str | None, was_unknown: bool, before_score: float) -> list[dict]:
        """The events of one track's step: what it showed leaves first, then what it shows now appears."""
        events = []
        if before is not None and t.label != before:
            events.append(self._event("left", before, frame, t, score=round(before_score, 6)))
        if was_unknown and not t.unknown:
            events.append(self._event("left", None, frame, t, score=round(t.smoother.seen_score, 6)))
        if t.unknown and not was_unknown:
            events.append(self._event("appeared", None, frame, t, score=round(t.smoother.seen_score, 6)))
        if t.label is not None and t.label != before:
            events.append(self._event("appeared", t.label, frame, t))
        return events

    def finish(self, frame: int, reason: str = "end") -> list[dict]:
        """The stream ended (``reason``: end, source_lost when a camera stayed away, or error): every label and
        every unknown face still present leaves."""
        events = [self._event("left", t.label, frame, t, reason=reason,
                              **({"score": round(t.smoother.seen_score, 6)} if t.unknown else {}))
                  for t in self.tracks if t.label is not None or t.unknown]
        for t in self.tracks:
            t.label = None
            t.smoother.sightings.clear()
        return events

    def _assign(self, results: list[Result]) -> list[tuple[Result, Track]]:
        pairs: list[tuple[Result, Track]] = []
        whole = [r for r in results if r.box is None]
        boxed = [r for r in results if r.box is not None]
        if whole:  # image mode: the whole frame is one track
            t = next((t for t in self.tracks if t.box is None), None) or self._new(None)
            pairs.append((whole[0], t))
        free = [t for t in self.tracks if t.box is not None]
        cands = sorted(((iou(r.box, t.box), i, j) for i, r in enumerate(boxed) for j, t in enumerate(free)),
                       reverse=True)
        used_r: set[int] = set()
        used_t: set[int] = set()
        for score, i, j in cands:
            if score < self.min_iou or i in used_r or j in used_t:
                continue
            used_r.add(i)
            used_t.add(j)
            pairs.append((boxed[i], free[j]))
        # A face that moved more than its overlap allows (someone walking past a camera at a few frames per
        # second): the nearest track of a similar size within 1.5 face widths.
        near = sorted((_centre_distance(r.box, t.box) / max(t.box[2], t.box[3], 1), i, j)
                      for i, r in enumerate(boxed) if i not in used_r for j, t in enumerate(free)
                      if j not in used_t and 0.5 <= (r.box[2] * r.box[3]) / max(t.box[2] * t.box[3], 1) <= 2.0)
        for d, i, j in near:
            if d > 1.5 or i in used_r or j in used_t:
                continue
            used_r.add(i)
            used_t.add(j)
            pairs.append((boxed[i], free[j]))
        for i, r in enumerate(boxed):
            if i not in used_r:
                pairs.append((r, self._new(r.box)))
        return pairs

    def _new(self, box: Box | None) -> Track:
        t = Track(self._next_id, box, LabelSmoother(self.window))
        self._next_id += 1
        self.tracks.append(t)
        return t

    @staticmethod
    def _event(kind: str, label: str | None, frame: int, t: Track, **extra: Any) -> dict:
        e = {"event": kind, "label": label, "frame": frame, "score": round(t.score, 6), "track": t.id}
        if t.box is not None:
            e["box"] = list(t.box)
        e.update(extra)
        return e
