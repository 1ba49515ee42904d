"""Glue between an Embedder and a Gallery: binding, reopening the gallery's model, enrolment.

The CLI and the Python API both go through here, so there is one way to enrol and one way
to open "the gallery's own model".
"""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .embedder import Embedder, EmbedderOptions
from .errors import GalleryError, ImageError, InputError
from .gallery import DB_NAME, Gallery, ModelBinding, encode_probes, is_cosine, normal_label
from .preprocess import is_image_file, list_images
from .progress import progress

AUTO_THRESHOLD_QUANTILE = 0.99
AUTO_THRESHOLD_FLOOR = 0.5
AUTO_THRESHOLD_SAMPLE = 4000
AUTO_THRESHOLD_MIN_GENUINE = 4


def binding_for(embedder: Embedder, mode: str = "image") -> ModelBinding:
    """What a gallery built with ``embedder`` remembers about it."""
    return ModelBinding(model_path=str(Path(embedder.model_path).resolve()), fingerprint=embedder.fingerprint,
                        dim=embedder.dim, preprocessing=asdict(embedder.spec.preprocessing), mode=mode,
                        output=embedder.options.output)


def cosine_or_none(value: Any) -> float | None:
    """``value`` if it is a cosine (a number in [-1, 1]; not True, not NaN), else None: metadata and gallery meta
    come from files anyone can write, and True or 7 as a threshold made a gallery recognize nothing."""
    return float(value) if is_cosine(value) else None


def recommended_threshold(extra: dict | None) -> float | None:
    """The similarity threshold a model's metadata ``extra`` recommends (e.g. at 0.1% false accepts), if any."""
    rec = (extra or {}).get("recommended_threshold")
    return cosine_or_none(rec.get("value") if isinstance(rec, dict) else rec)


def model_threshold(embedder: Embedder) -> float | None:
    """``recommended_threshold`` of ``embedder``'s model."""
    return recommended_threshold(embedder.spec.extra)


def unrelated_p99(extra: dict | None) -> float | None:
    """The 99th percentile of how alike the model finds pictures of different things (the cosine between two
    held-aside pictures of different labels, measured by the converter), from a model's metadata ``extra``; None
    when absent or not a cosine."""
    u = (extra or {}).get("unrelated_similarity")
    return cosine_or_none(u.get("p99") if isinstance(u, dict) else None)


def model_unrelated_similarity(embedder: Embedder) -> float | None:
    """``unrelated_p99`` of ``embedder``'s model, for its galleries' automatic threshold (``auto_threshold``)."""
    return unrelated_p99(embedder.spec.extra)


def model_values(embedder: Embedder) -> dict[str, float]:
    """What a gallery keeps from its model's metadata for its automatic threshold."""
    values = {"model_threshold": model_threshold(embedder), "model_unrelated_p99": model_unrelated_similarity(embedder)}
    return {k: v for k, v in values.items() if v is not None}


def face_alignment_of(embedder: Embedder) -> dict[str, Any]:
    """The template a face model's faces are aligned to, as a face gallery keeps it (Gallery.check_binding)."""
    from .face.align import template_for

    t = template_for(embedder.spec.extra, embedder.preprocessor.size)
    return {"keypoints": list(t.keypoints), "template": t.points.astype(float).round(3).tolist()}


def binding_checks(embedder: Embedder, mode: str) -> dict[str, Any]:
    """What Gallery.check_binding compares beside the fingerprint: the model's behaviour and probe embeddings, and a
    face model's alignment template."""
    checks: dict[str, Any] = {"behaviour": embedder.behaviour_fingerprint, "probes": embedder.behaviour_probes}
    if mode == "face":
        checks["alignment"] = lambda: face_alignment_of(embedder)
    return checks


def create_gallery(path: str | os.PathLike, embedder: Embedder, mode: str = "image",
                   meta: dict[str, Any] | None = None) -> Gallery:
    """A new gallery bound to ``embedder``'s model, starting from the model's recommended threshold; ``meta``:
    more settings (a face gallery's detector), written in the same commit. If another process created the
    gallery meanwhile (two enrolments started at once), that gallery is opened, when it is bound to this model."""
    rec = model_threshold(embedder)
    binding = binding_for(embedder, mode)
    # what the model computes, so that a replaced file that embeds the same keeps the gallery (check_binding)
    values = {"behaviour": embedder.behaviour_fingerprint(), "behaviour_probes": encode_probes(embedder.behaviour_probes()),
              **({"face_alignment": face_alignment_of(embedder)} if mode == "face" else {}),
              **model_values(embedder), **(meta or {})}
    try:
        return Gallery.create(path, binding, threshold=rec, meta=values)
    except GalleryError:
        if not (Path(path) / DB_NAME).exists():
            raise
    gallery = Gallery.open(path)  # created by the other enrolment while this one embedded its pictures
    try:
        gallery.check_binding(binding, **binding_checks(embedder, mode))
    except BaseException:
        gallery.close()
        raise
    return gallery


def open_gallery_embedder(gallery: Gallery, model: str | os.PathLike | None = None, **options: Any) -> Embedder:
    """Open the model a gallery was built with (or ``model``, which must be that same model).

    If the gallery's model file has gone and ``model`` is not given, the shipped file of the same name is
    tried: a new install moves the shipped models, and the gallery follows them when they embed the same.
    """
    from .shipped import earlier_shipped_fix, shipped_copy

    b = gallery.binding
    path = Path(model) if model else Path(b.model_path)
    found = None
    if not path.exists():
        if model:
            raise GalleryError(f"model not found: {path} (check the path)")
        found = shipped_copy(path.name)
        if found is None:
            raise GalleryError(f"gallery {gallery.path} was built with {b.model_path}, which is no longer there; "
                               "pass --model with the path of that same model")
        path = found
    pre = b.preprocessing
    missing = [k for k in ("mean", "std", "color_order", "resize", "crop_fraction") if k not in pre]
    if missing:
        raise GalleryError(f"gallery {gallery.path} records no {', '.join(missing)} for its model (a damaged gallery, "
                           "or one made from bare vectors); restore it from a backup, or enroll into a new gallery")
    emb = Embedder.create_from_options(EmbedderOptions(
        model_path=path, output=b.output, mean=pre["mean"], std=pre["std"], color_order=pre["color_order"],
        resize=pre["resize"], crop_fraction=pre["crop_fraction"], interpolation=pre.get("interpolation"), **options))
    try:
        gallery.check_binding(binding_for(emb, b.mode), **binding_checks(emb, b.mode))
    except GalleryError:
        emb.close()
        if found is None:
            raise
        raise GalleryError(f"gallery {gallery.path} was built with {b.model_path}, which is no longer there, and the "
                           f"shipped {found.name} ({found}) computes other embeddings; "
                           + (earlier_shipped_fix(b.fingerprint) or "pass --model with the path of that same model")
                           ) from None
    except Exception:
        emb.close()
        raise
    return emb


def collect_labelled(folder: str | os.PathLike) -> list[tuple[str, Path]]:
    """(label, image) pairs from a folder whose sub-folders are labels."""
    root = Path(folder)
    if not root.exists():
        raise InputError(f"folder not found: {root} (expected a folder whose sub-folders are labels)")
    if not root.is_dir():
        raise InputError(f"{root} is a file; expected a folder whose sub-folders are labels (or give --label)")
    items = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        items += [(sub.name, f) for f in list_images(sub, recursive=True)]
    if not items:
        loose = [p for p in root.iterdir() if p.is_file() and is_image_file(p)]
        hint = f" ({len(loose)} images lie directly in it: give --label NAME to enrol them under one label)" if loose else ""
        raise InputError(f"{root} has no sub-folders with images; expected DIR/<label>/<image>{hint}")
    return items


def enroll(gallery: Gallery | Callable[[], Gallery], embed_one: Callable[[Path], np.ndarray],
           items: Sequence[tuple[str, Path]], skip_bad: bool = False, show_progress: bool = True,
           model: dict[str, float] | None = None) -> dict[str, Any]:
    """Embed every (label, image) and add them all, with the new threshold, in one atomic write.

    Nothing is written until every image is embedded: a bad image (unless ``skip_bad``), an
    error or Ctrl-C leaves the gallery exactly as it was. ``gallery`` may be a function that
    creates it: it is called only once there is something to add, so a failed first enrolment
    leaves no gallery behind. ``model``: the model's ``model_values`` (see ``add_entries``).
    """
    if not items:
        raise InputError("no images to enrol (the folder or list given holds none); nothing was enrolled")
    labels, vectors, sources, skipped = [], [], [], []
    for label, path in progress(items, desc="enrolling", enabled=show_progress):
        try:
            v = embed_one(path)
            if v is None:  # FacePipeline.embed_one: no face in the picture
                raise ImageError(f"{path}: nothing to enrol in it (no face found)")
            v = np.asarray(v)
            if not np.all(np.isfinite(v)) or not np.any(v):  # a black picture through a ReLU model, say
                raise ImageError(f"{path}: the model gives it an {'all-zero' if np.all(np.isfinite(v)) else 'NaN'} "
                                 "vector, which has no direction to compare (a blank or black picture?)")
        except ImageError as exc:
            if not skip_bad:
                raise ImageError(f"{exc} -- nothing was enrolled; fix or remove it, or pass --skip-bad") from None
            skipped.append({"source": str(path), "reason": str(exc)})
            continue
        labels.append(label)
        vectors.append(v)
        sources.append(str(path))
    if not vectors:
        raise InputError(f"none of the {len(items)} images could be enrolled ({skipped[0]['reason']}); nothing was "
                         "enrolled")
    if not isinstance(gallery, Gallery):
        gallery = gallery()
    again, alikes = add_entries_checked(gallery, labels, np.stack(vectors), sources, model=model)
    return {"enrolled": len(vectors) - len(again), "labels": sorted({normal_label(x) for x in labels}),
            "skipped": skipped + again,
            "entries": len(gallery), "threshold": gallery.threshold,
            "threshold_source": gallery.meta.get("threshold_source", "default"), "look_alikes": alikes}


def add_entries_checked(gallery: Gallery, labels: Sequence[str], vectors: np.ndarray, sources: Sequence[str | None],
                        infos: Sequence[dict | None] | None = None, model: dict[str, float] | None = None,
                        ) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """``add_entries``, and the new entries the gallery would recognize as another label (``look_alikes``).

    They are judged at the lower of the threshold before and after: a mislabelled picture enters the automatic
    threshold's impostor pairs and raises it, which would hide the very mistake."""
    candidates = look_alikes(gallery, labels, vectors, sources)
    before = gallery.threshold if len(gallery) else None
    added: dict[str, int] = {}  # source -> new entry id, for the notes that name it
    again = add_entries(gallery, labels, vectors, sources, infos, added, model)
    not_added = {a["source"] for a in again}
    bar = min(gallery.threshold, before if before is not None else np.inf)
    return again, [{**a, "new_entry": added.get(a["source"])} for a in candidates
                   if a["similarity"] >= bar and a["source"] not in not_added]


def add_entries(gallery: Gallery, labels: Sequence[str], vectors: np.ndarray, sources: Sequence[str | None],
                infos: Sequence[dict | None] | None = None, added: dict[str, int] | None = None,
                model: dict[str, float] | None = None) -> list[dict[str, str]]:
    """Add entries and the threshold re-derived with them in one commit (an interrupted enrolment never
    leaves new entries under the old threshold). A picture already enrolled under the same label (same file,
    same embedding: the same command run twice) is not added again; those come back as skipped.

    Duplicates would count as perfect 'genuine' matches and raise the automatic threshold: re-running an
    enrolment of 40 people made 24 of 320 known faces 'unknown' instead of 10. ``added``: filled with each added
    entry's source -> its new entry id. ``model``: the model's ``model_values``; its figure for unrelated pictures (or its
    absence) is kept in the same commit when the gallery holds another (made by an earlier edgeembed, or with a model
    file since replaced by one that embeds the same). Without ``model`` the gallery's figure stays as it is."""
    given = list(sources)
    reasons: list[str | None] = [None] * len(labels)

    def skip(stored_labels: list[str], stored_vectors: np.ndarray, stored_sources: list[str | None]) -> list[str | None]:
        # under the write lock, against every entry committed so far: two enrolments of one folder at once add it once
        reasons[:] = already_enrolled(gallery, stored_labels, stored_vectors, stored_sources)
        return reasons

    def threshold(stored_labels: list[str], stored_vectors: np.ndarray) -> dict[str, Any] | None:
        # under the write lock: with every entry committed so far, and the new ones as the gallery stores them
        # the model's figure as its metadata has it now (a gallery made before it had one, or a model file
        # replaced by one that embeds the same and measured it again, or no longer has one: null)
        figure = {}
        if model is not None and gallery.meta.get("model_unrelated_p99") != model.get("model_unrelated_p99"):
            figure = {"model_unrelated_p99": model.get("model_unrelated_p99")}
        t = auto_threshold(gallery, stored_labels, stored_vectors, figure.get("model_unrelated_p99", _FROM_GALLERY))
        values = {"threshold": round(t, 6), "threshold_source": "auto"} if t is not None else {}
        return {**figure, **values} or None

    ids = gallery.add(labels, vectors, [stored_source(s) for s in given], infos, meta=threshold, skip=skip)
    kept = [i for i, why in enumerate(reasons) if not why]
    if added is not None:
        added.update(zip((str(given[i]) for i in kept), ids))
    return [{"source": str(given[i]), "reason": why} for i, why in enumerate(reasons) if why]


def look_alikes(gallery: Gallery, labels: Sequence[str], vectors: np.ndarray,
                sources: Sequence[str | None]) -> list[dict[str, Any]]:
    """New entries closer to an entry of another label (stored, or new in the same enrolment) than to any other of
    their own, with that similarity: at the gallery's threshold or above, the gallery would recognize them as that
    other label (``add_entries_checked`` keeps those): the same person or object under two names, or a picture
    under the wrong name (on 20 COIL objects, 4 views each, and 40 ORL people, 2 photos each: none). Call before
    the new entries are added."""
    v = np.asarray(vectors, np.float32)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    names = [normal_label(x) for x in labels]
    stored_names: list[str] = []
    stored_ids: list[int] = []
    m = np.zeros((0, v.shape[1]), np.float32)
    if len(gallery):
        by_id = {e["id"]: normal_label(e["label"]) for e in gallery.entries()}
        m = np.asarray(gallery.matrix, np.float32)
        stored_ids = [int(i) for i in gallery._entry_ids]
        stored_names = [by_id.get(i, "") for i in stored_ids]
    all_names = stored_names + names
    codes = {n: k for k, n in enumerate(dict.fromkeys(all_names))}
    name_codes = np.array([codes[n] for n in all_names], np.int64)
    every = np.concatenate([m, v])
    out = []
    for i, name in enumerate(names):
        if i % 512 == 0:  # a block of new rows at a time: memory stays at 512 x (stored + new)
            sims = v[i:i + 512] @ every.T
        row = sims[i % 512].copy()
        row[len(stored_names) + i] = -np.inf  # not itself
        same = name_codes == codes[name]
        best_same = float(row[same].max()) if same.any() else -np.inf
        if (~same).any():
            j = int(np.argmax(np.where(same, -np.inf, row)))
            if row[j] > best_same:
                like = {"entry": stored_ids[j]} if j < len(stored_ids) else {"source_of_other": sources[j - len(stored_ids)]}
                out.append({"source": str(sources[i]), "label": labels[i], "recognized_as": all_names[j],
                            "similarity": round(float(row[j]), 4), **like})
    return out


def stored_source(source: str | None) -> str | None:
    """A source as the gallery keeps it: a file's absolute path (a relative one would name another file, or none,
    from another directory: the same folder enrolled again from there was not recognized as already enrolled);
    anything else (None, a caller's own tag) as it is."""
    return os.path.abspath(source) if source and os.path.isfile(source) else source


SAME_PICTURE = 0.9999
"""Cosine at or above which two embeddings under one label are taken for one picture: the same file embedded twice
gives 1 - 1e-7, a copy of it at another path the same; a re-saved or re-scaled copy is a picture of its own."""


def already_enrolled(gallery: Gallery, labels: Sequence[str], vectors: np.ndarray,
                     sources: Sequence[str | None]) -> list[str | None]:
    """Per new entry: why it is a picture already enrolled under the same label, or None. The same file (cosine
    > 0.999), or a copy of a stored picture at another path, or of one given before it in this call (cosine >=
    SAME_PICTURE): a folder copied again from a phone would otherwise be enrolled twice, and the duplicates, perfect
    'genuine' pairs, raise the automatic threshold (9 faces enrolled twice: 0.941 -> 0.951, 2 more of 21 known
    faces 'unknown'). Runs under the gallery's write lock (``Gallery.add(skip=...)``): one product per label, on
    the label's own rows of the search matrix."""
    v = np.asarray(vectors, np.float32).reshape(len(labels), -1)
    norms = np.linalg.norm(v, axis=1)
    unit = v / np.where(norms > 0, norms, 1.0)[:, None]
    names = [normal_label(lbl) for lbl in labels]
    out: list[str | None] = [None] * len(labels)
    by_label: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        if norms[i] > 0:
            by_label.setdefault(name, []).append(i)
    if len(gallery):
        m = gallery.matrix  # ordered by label: each label's rows are one slice
        ids = gallery._entry_ids
        ends = np.append(gallery._label_starts[1:], len(m))
        block = {normal_label(n): (int(a), int(b)) for n, a, b in zip(gallery._label_names, gallery._label_starts, ends)}
        entries = {e["id"]: e for e in gallery.entries()} if by_label.keys() & block.keys() else {}
        for name, idx in by_label.items():
            if name not in block:
                continue
            a, b = block[name]
            best, tops = [], []
            for c in range(0, len(idx), 256):  # (new, stored) scores of this label, 256 new at a time
                scores = unit[idx[c:c + 256]] @ m[a:b].T
                best += np.argmax(scores, axis=1).tolist()
                tops += scores.max(axis=1).tolist()
            for j, i in enumerate(idx):
                e = entries.get(int(ids[a + best[j]]))
                top = tops[j]
                same_file = e is not None and e["source"] and sources[i] and \
                    os.path.realpath(e["source"]) == os.path.realpath(str(sources[i]))
                if e is not None and (top >= SAME_PICTURE or (same_file and top > 0.999)):
                    where = "" if same_file else f", the same picture as {e['source'] or 'it'}"
                    out[i] = f"already enrolled under {labels[i]!r} (entry #{e['id']}{where})"
    for name, idx in by_label.items():  # copies among the new pictures themselves: the first one is kept
        if len(idx) < 2:
            continue
        same = (unit[idx] @ unit[idx].T) >= SAME_PICTURE
        for j in range(1, len(idx)):
            i = idx[j]
            if out[i] is None:
                k = next((idx[q] for q in np.flatnonzero(same[j, :j]) if out[idx[q]] is None), None)
                if k is not None:
                    out[i] = f"the same picture as {sources[k]}, given before it under {labels[i]!r}"
    return out


def threshold_values(gallery: Gallery) -> dict[str, Any] | None:
    """The automatic threshold re-derived from the gallery as it is (``auto_threshold``), as gallery meta: for
    ``Gallery.remove_entry`` / ``remove_label`` / ``rename`` (``meta=threshold_values``), which commit it with the
    change. Removing a picture enrolled under the wrong label must also undo the threshold it raised."""
    t = auto_threshold(gallery)
    return {"threshold": round(t, 6), "threshold_source": "auto"} if t is not None else None


_FROM_GALLERY: Any = object()


def auto_threshold(gallery: Gallery, labels: Sequence[str] = (), vectors: np.ndarray | None = None,
                   unrelated: float | None = _FROM_GALLERY) -> float | None:
    """The default threshold of the gallery with entries (``labels``, ``vectors``) added; None when the user
    set one, or when the gallery holds one label and its model does not say how alike unrelated pictures are.

    The gallery gives two kinds of scores by itself: each entry's best similarity to another
    entry of its own label (a genuine score, leave-one-out) and to an entry of another label (a
    look-alike impostor score). The threshold sits midway between their medians, which on
    COIL-20 with 4 views per object accepts about 90-97% of unseen views of enrolled objects and
    4% of strangers (the 99th percentile of impostor scores used before accepted only 65-93%).
    Labels with one entry give no genuine score: with fewer than 4 genuine scores the threshold
    is the 99th percentile of the impostor scores.

    The model's own figure for pictures of different things (``unrelated`` when given, None for none, else the
    gallery's ``model_unrelated_p99``: the 99th percentile of the cosine between two of the converter's held-aside
    pictures of different labels) stands in while the gallery has too few scores of its own: a gallery of one label
    has no impostor scores and takes it as its threshold (it kept 0.5, at which the shipped MobileNetV2 took 22% of
    ImageNet pictures for the one object enrolled: benchmarks/open_set_small_galleries.py), and it is the floor
    while there are fewer than 4 genuine scores (two labels of one picture each are not looser than one). For one
    label it does not rise with the label's own pictures: near-duplicate pictures would raise it and more pictures
    would recognize less. With 4+ genuine scores the gallery's midway rule stands alone: a figure measured on a
    user's narrow calibration set (4 COIL objects: 0.86) would otherwise override what the gallery shows.
    Floor also: 0.5, and the threshold the model's metadata recommends (a face model's threshold at 1% false
    accepts). ``eval`` prints the best threshold for a labelled set and ``gallery threshold`` sets it.
    """
    if gallery.meta.get("threshold_source") == "user":
        return None
    m = gallery.matrix
    names = np.repeat(np.array(gallery._label_names, dtype=object), np.diff(np.append(gallery._label_starts, len(m))))
    if vectors is not None and len(vectors):
        m = np.concatenate([m, np.asarray(vectors, np.float32)])
        names = np.concatenate([names, np.array(list(labels), dtype=object)])
    return threshold_rule(m, names, gallery.meta.get("model_unrelated_p99") if unrelated is _FROM_GALLERY else unrelated,
                          gallery.meta.get("model_threshold"))


def threshold_rule(vectors: np.ndarray, labels: Sequence | np.ndarray, unrelated: float | None = None,
                   recommended: float | None = None) -> float | None:
    """``auto_threshold``'s rule for unit ``vectors`` under ``labels``, with the model's figure for unrelated
    pictures and its recommended threshold (either None, or ignored when not a cosine); None when there is no label,
    or one label and no figure. ``eval`` applies it to its own gallery to show what the automatic threshold does."""
    ref, rec = cosine_or_none(unrelated), cosine_or_none(recommended)
    m = np.asarray(vectors, np.float32)
    names = np.asarray(labels)
    label_names, row_label = np.unique(names.astype(str), return_inverse=True) if len(names) else ([], names)
    if not len(label_names) or (len(label_names) < 2 and ref is None):
        return None
    t = -1.0  # one label: the floors below (the model's figure) are its threshold
    if len(label_names) >= 2:
        idx = np.arange(len(m))
        if len(m) > AUTO_THRESHOLD_SAMPLE:
            idx = np.random.default_rng(0).choice(len(m), AUTO_THRESHOLD_SAMPLE, replace=False)
        best_other = np.empty(len(idx), np.float32)
        best_same = np.empty(len(idx), np.float32)
        for start in range(0, len(idx), 256):  # 256 rows at a time: memory stays flat in the gallery's size
            rows = idx[start:start + 256]
            sims = m[rows] @ m.T
            same = row_label[rows][:, None] == row_label[None, :]
            sims[np.arange(len(rows)), rows] = -np.inf  # leave the entry itself out (it is of its own label)
            best_same[start:start + len(rows)] = np.where(same, sims, -np.inf).max(axis=1)
            sims[same] = -np.inf
            best_other[start:start + len(rows)] = sims.max(axis=1)
        best_same = best_same[np.isfinite(best_same)]
        if len(best_same) >= AUTO_THRESHOLD_MIN_GENUINE:
            t = (float(np.median(best_same)) + float(np.median(best_other))) / 2
            ref = None  # the gallery's own genuine and impostor scores outweigh the converter's pictures
        else:
            t = float(np.quantile(best_other, AUTO_THRESHOLD_QUANTILE))
    return max(AUTO_THRESHOLD_FLOOR, rec if rec is not None else -1.0, ref if ref is not None else -1.0, t)
