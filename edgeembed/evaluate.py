"""Evaluate recognition on a labelled folder: closed-set recall and open-set (stranger) figures.

Protocol (``edgeembed eval``): in each class (a sub-folder) the files are taken in sorted
order; the gallery gets K of them, evenly spaced (indices round(i*n/K), i = 0..K-1), and all
other files are queries. Recall@k counts a query as right when its class is among the k
best-scoring labels (each label scored by its closest gallery entry).

Open set: every other class in sorted order is held out as a stranger and never enrolled.
Queries of the enrolled classes are genuine attempts, every image of a stranger class is an
impostor attempt. A genuine attempt is accepted when its best label is right and its score
reaches the threshold; an impostor is (falsely) accepted when its best score reaches it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import ImageError, InputError
from .preprocess import list_images
from .progress import progress

Featurize = Callable[[Path], "np.ndarray | None"]


@dataclass
class Split:
    classes: list[str]
    gallery: list[tuple[int, Path]]  # (class index, file)
    queries: list[tuple[int, Path]]
    gallery_only: list[str] = field(default_factory=list)  # classes of K pictures or fewer: no query of their own


def split_dataset(dataset: str | Path, k: int, leave_out: frozenset[Path] = frozenset()) -> Split:
    """K evenly spaced gallery images per class, the rest are queries. Classes are read as ``enroll`` reads them
    (pictures in sub-folders of a class count; folder names in one Unicode spelling), so that eval measures the
    gallery a user would enrol from the same folder."""
    from .gallery import normal_label  # noqa: PLC0415

    root = Path(dataset)
    if not root.exists():
        raise InputError(f"dataset not found: {root} (expected a folder whose sub-folders are classes)")
    if not root.is_dir():
        raise InputError(f"{root} is a file; expected a folder whose sub-folders are classes (DIR/<class>/<image>)")
    if k < 1:
        raise InputError(f"--gallery-per-class must be at least 1, got {k}")
    by_class: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        by_class.setdefault(normal_label(sub.name), []).extend(list_images(sub, recursive=True))
    classes, gallery, queries, gallery_only = [], [], [], []
    for name in sorted(by_class):
        files = sorted(set(by_class[name]) - leave_out)
        if not files:
            continue
        ci = len(classes)
        classes.append(name)
        n = len(files)
        picks = sorted({min(n - 1, round(i * n / k)) for i in range(k)})
        gallery += [(ci, files[i]) for i in picks]
        queries += [(ci, f) for i, f in enumerate(files) if i not in set(picks)]
        if n <= k:
            gallery_only.append(name)
    if len(classes) < 2:
        raise InputError(f"{root} has {len(classes)} class folder(s) with images; evaluation needs at least 2 sub-folders of images")
    if not queries:
        raise InputError(f"no class in {root} has more than {k} picture(s), so none is left to query after enrolling "
                         f"{k} per class; lower --gallery-per-class or add pictures")
    return Split(classes, gallery, queries, gallery_only)


def evaluate(dataset: str | Path, k: int, featurize: Featurize, show_progress: bool = True,
             far_target: float = 0.01, model: dict | None = None, skip_bad: bool = False) -> dict:
    """Run the protocol with ``featurize(path) -> L2-normalised vector or None`` (None: nothing found).

    ``model``: the model's ``recognizer.model_values``; with them the open-set figures also say what a gallery's
    automatic threshold (the one ``enroll`` derives) does with these pictures. ``skip_bad``: a picture that cannot
    be read is left out of the protocol (listed under ``skipped``) instead of stopping the run."""
    split = split_dataset(dataset, k)
    t0 = time.perf_counter()
    skipped: list[dict] = []

    def one(f: Path) -> "np.ndarray | None | ImageError":
        try:
            return featurize(f)
        except ImageError as exc:
            if not skip_bad:
                raise
            skipped.append({"image": str(f), "reason": str(exc)})
            return exc

    done = [one(f) for f in progress([f for _, f in split.gallery] + [f for _, f in split.queries], desc="embedding",
                                     enabled=show_progress)]
    elapsed = time.perf_counter() - t0
    files = [f for _, f in split.gallery] + [f for _, f in split.queries]
    if skipped:  # split again without them: a picture that could not be read is no miss and no stranger, and a
        # class whose gallery pick it was enrols its next picture instead, as enroll --skip-bad would
        feature_of = dict(zip(files, done))
        try:
            split = split_dataset(dataset, k, frozenset(Path(s["image"]) for s in skipped))
        except InputError as exc:
            raise InputError(f"{len(skipped)} unreadable picture(s) left out (the first: {skipped[0]['reason']}), "
                             f"and then: {exc}") from None
        files = [f for _, f in split.gallery] + [f for _, f in split.queries]
        done = [feature_of[f] for f in files]
    feats: list[np.ndarray | None] = done
    dim = next((len(v) for v in feats if v is not None), 0)
    if dim == 0:
        raise InputError(f"nothing could be embedded in {dataset} (no image gave a feature)")
    labels = np.array([c for c, _ in split.gallery] + [c for c, _ in split.queries])
    is_gallery = np.zeros(len(files), bool)
    is_gallery[: len(split.gallery)] = True
    found = np.array([v is not None for v in feats])
    x = np.stack([v if v is not None else np.zeros(dim, np.float32) for v in feats]).astype(np.float32)
    n_classes = len(split.classes)

    # Closed set: all classes enrolled.
    gal = is_gallery & found
    q_idx = np.flatnonzero(~is_gallery)
    per_label = _per_label_scores(x[q_idx], x[gal], labels[gal], n_classes)
    ranks = _rank_of_true(per_label, labels[q_idx])
    # a miss whatever the number of classes: nothing found in the query, or no gallery picture of its class gave a
    # feature (-inf ties with every other such label; n_classes counted as a hit within the top 5 of <= 5 classes)
    true_scores = per_label[np.arange(len(q_idx)), labels[q_idx]] if len(q_idx) else np.zeros(0, np.float32)
    ranks[~found[q_idx] | ~np.isfinite(true_scores)] = np.iinfo(np.int32).max
    result = {
        "dataset": str(dataset),
        "classes": n_classes,
        "gallery_per_class": k,
        "gallery_size": int(is_gallery.sum()),
        "queries": int(len(q_idx)),
        "recall@1": round(float(np.mean(ranks < 1)), 6),
        "recall@5": round(float(np.mean(ranks < 5)), 6),
        "no_face": int((~found).sum()),
        "gallery_only_classes": split.gallery_only,
        "per_image_ms": round(1000 * elapsed / max(1, len(files) + len(skipped)), 3),
        "skipped": skipped,
    }

    # Open set: odd-positioned classes are strangers, never enrolled.
    known = np.arange(n_classes) % 2 == 0
    gal_o = is_gallery & found & known[labels]
    genuine = np.flatnonzero(~is_gallery & known[labels])
    impostor = np.flatnonzero(~known[labels])
    scores_g = _per_label_scores(x[genuine], x[gal_o], labels[gal_o], n_classes)
    scores_g[:, ~known] = -np.inf
    best_g = scores_g.max(axis=1)
    correct_g = (scores_g.argmax(axis=1) == labels[genuine]) & found[genuine]
    best_g[~found[genuine]] = -np.inf
    scores_i = _per_label_scores(x[impostor], x[gal_o], labels[gal_o], n_classes)
    scores_i[:, ~known] = -np.inf
    best_i = scores_i.max(axis=1)
    best_i[~found[impostor]] = -np.inf
    result["open_set"] = open_set_figures(best_g, correct_g, best_i, far_target)
    result["open_set"].update(known_classes=int(known.sum()), stranger_classes=int((~known).sum()))
    if model is not None:
        from .recognizer import threshold_rule  # noqa: PLC0415

        t = threshold_rule(x[gal_o], labels[gal_o], model.get("model_unrelated_p99"), model.get("model_threshold"))
        if t is not None and len(best_g) and len(best_i):
            result["open_set"]["automatic_threshold"] = {
                "threshold": round(t, 6), "tar": round(float(np.mean(correct_g & (best_g >= t))), 6),
                "far": round(float(np.mean(best_i >= t)), 6)}
    result["best_threshold"] = result["open_set"]["best_threshold"]
    # The short keys name the target they were read at: --far 0.05 gives "tar@far5%", never a "far1%" key.
    pct = f"{far_target * 100:.4g}%"
    result[f"tar@far{pct}"] = result["open_set"]["tar_at_far"]
    result[f"threshold@far{pct}"] = result["open_set"]["threshold_at_far"]
    return result


def _per_label_scores(queries: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray, n: int) -> np.ndarray:
    """(Q, n) best cosine per label; -inf for labels with no gallery entry."""
    out = np.full((len(queries), n), -np.inf, np.float32)
    if len(queries) == 0 or len(gallery) == 0:
        return out
    sims = queries @ gallery.T
    for c in np.unique(gallery_labels):
        out[:, c] = sims[:, gallery_labels == c].max(axis=1)
    return out


def _rank_of_true(per_label: np.ndarray, true: np.ndarray) -> np.ndarray:
    """0-based rank of the true label (ties count against it)."""
    true_scores = per_label[np.arange(len(true)), true]
    return (per_label > true_scores[:, None]).sum(axis=1) + ((per_label == true_scores[:, None]).sum(axis=1) - 1)


def open_set_figures(best_genuine: np.ndarray, correct_genuine: np.ndarray, best_impostor: np.ndarray,
                     far_target: float = 0.01) -> dict:
    """Best threshold (open-set accuracy) and TAR at a target FAR, from best scores per attempt."""
    ng, ni = len(best_genuine), len(best_impostor)
    if ng == 0 or ni == 0:
        return {"genuine_queries": ng, "impostor_queries": ni, "best_threshold": None, "best_accuracy": None,
                "tar_at_far": None, "threshold_at_far": None, "far_target": far_target}
    finite = np.concatenate([best_genuine[np.isfinite(best_genuine)], best_impostor[np.isfinite(best_impostor)]])
    if len(finite) == 0:  # nothing enrolled to compare with (e.g. no face in any gallery picture)
        return {"genuine_queries": ng, "impostor_queries": ni, "best_threshold": None, "best_accuracy": None,
                "tar_at_far": None, "threshold_at_far": None, "far_target": far_target,
                "note": "no known class has a usable gallery picture"}
    candidates = np.unique(np.concatenate([finite, np.nextafter(finite, np.inf).astype(finite.dtype)]))
    g_sorted = np.sort(best_genuine[correct_genuine])
    i_sorted = np.sort(best_impostor)
    # For each threshold t: accepted-right genuines = #(g >= t), false accepts = #(i >= t).
    tar = (len(g_sorted) - np.searchsorted(g_sorted, candidates, side="left")) / ng
    far = (ni - np.searchsorted(i_sorted, candidates, side="left")) / ni
    accuracy = (tar * ng + (1 - far) * ni) / (ng + ni)
    b = int(np.argmax(accuracy))
    ok = np.flatnonzero(far <= far_target)
    # the most true accepts within the target; of thresholds that give as many, the one with the fewest false ones
    a = ok[np.lexsort((far[ok], -tar[ok]))[0]] if len(ok) else len(candidates) - 1
    deciding = np.unique(np.concatenate([g_sorted, i_sorted]))
    deciding = deciding[np.isfinite(deciding)]
    return {
        "genuine_queries": ng, "impostor_queries": ni,
        "best_threshold": _middle_of_gap(float(candidates[b]), deciding), "best_accuracy": round(float(accuracy[b]), 6),
        "tar_at_best": round(float(tar[b]), 6), "far_at_best": round(float(far[b]), 6),
        "far_target": far_target, "tar_at_far": round(float(tar[a]), 6),
        "threshold_at_far": _middle_of_gap(float(candidates[a]), deciding), "far_at_threshold": round(float(far[a]), 6),
    }


def _middle_of_gap(t: float, scores: np.ndarray) -> float:
    """The threshold to report for ``t``: the middle of the gap between the two scores around it, where every
    threshold gives the same figures on this data. Its lowest edge (``t`` itself, a genuine score) sat on a picture
    that only just passed, and a new picture of that person scoring a hair lower is rejected; the middle leaves the
    same room on both sides. ``scores``: sorted unique scores that decide an outcome (right genuines, strangers)."""
    k = int(np.searchsorted(scores, t, side="left"))  # same figures for every threshold in (scores[k-1], scores[k]]
    if k == 0:  # accept everyone: just under the lowest score (rounding must not lift it above)
        return round(float(scores[0]) - 1e-6, 6)
    if k == len(scores):  # reject everyone: just over the highest
        return round(float(scores[-1]) + 1e-6, 6)
    lo, hi = float(scores[k - 1]), float(scores[k])
    mid = round((lo + hi) / 2, 6)
    return mid if lo < mid <= hi else hi
