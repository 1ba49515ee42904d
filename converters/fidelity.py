"""How much of the float model survives quantization, measured on pictures held aside from calibration.

Reports mean/min cosine between float and quantized embeddings of the same picture, 1-NN
agreement (does each picture's nearest other picture stay the same?), and top-1 agreement and
accuracies when a classifier is kept. A model whose fidelity falls below the thresholds is not
silently shipped: the converter warns and exits non-zero unless told to accept it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

# Below these the int8 model does not recognize what the float model recognizes.
# 1-NN agreement is a noisy figure (near-ties among unrelated pictures flip easily), so its bar is lower.
THRESHOLDS = {"mean_cosine": 0.98, "nn1_agreement": 0.8, "top1_agreement": 0.97}
FEW_PICTURES = 50  # below this many held-aside pictures the report says its figures are noisy

EmbedFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1)


def compare(float_emb: np.ndarray, quant_emb: np.ndarray, float_logits: np.ndarray | None = None,
            quant_logits: np.ndarray | None = None, labels: Sequence[int] | None = None) -> dict:
    """Fidelity figures from float and quantized outputs of the same N pictures."""
    f, q = _unit(np.asarray(float_emb, np.float64)), _unit(np.asarray(quant_emb, np.float64))
    cos = (f * q).sum(1)
    n = len(f)
    rep: dict = {"images": int(n), "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
                 "p05_cosine": float(np.percentile(cos, 5))}
    if n >= 2:
        sf, sq = f @ f.T, q @ q.T
        # how alike the FLOAT model finds different pictures: near 1, it does not tell them apart at all
        rep["float_mean_pairwise_cosine"] = float((sf.sum() - np.trace(sf)) / (n * (n - 1)))
        np.fill_diagonal(sf, -np.inf)
        np.fill_diagonal(sq, -np.inf)
        rep["nn1_agreement"] = float((sf.argmax(1) == sq.argmax(1)).mean())
    if float_logits is not None and quant_logits is not None:
        tf_, tq = np.argmax(float_logits, 1), np.argmax(quant_logits, 1)
        rep["top1_agreement"] = float((tf_ == tq).mean())
        if labels is not None:
            lab = np.asarray(labels)
            rep["top1_float"] = float((tf_ == lab).mean())
            rep["top1_quant"] = float((tq == lab).mean())
            rep["top1_drop_points"] = 100.0 * (rep["top1_float"] - rep["top1_quant"])
    return rep


UNRELATED_MIN_LABELS = 3  # different things among the held-aside pictures
UNRELATED_MIN_PAIRS = 100  # pairs of pictures of different things, for a 99th percentile to mean something
UNRELATED_MAX_P99 = 0.9  # above it the "different" sub-folders most likely hold one thing


def unrelated_similarity(embeddings: np.ndarray, labels: Sequence | None) -> tuple[dict | None, str | None]:
    """How alike the model finds pictures of different things: percentiles of the cosine between every two
    held-aside pictures of different labels (classes, or sub-folders), or None and why it was not measured.

    The runtime's galleries take its 99th percentile as their threshold when they hold a single label, and as its
    floor while they have few pictures per label (edgeembed.recognizer.auto_threshold), so a wrong figure would
    cripple the galleries made with the model: without labels (a plain folder may hold many pictures of one thing: 72 views of
    one COIL object gave 0.98), with fewer than UNRELATED_MIN_LABELS things or UNRELATED_MIN_PAIRS pairs, or above
    UNRELATED_MAX_P99 (36 views of one object in two sub-folders gave 0.98), none is recorded."""
    e = _unit(np.asarray(embeddings, np.float64))
    n = len(e)
    if labels is None:
        return None, "the held-aside pictures lie in one folder, so which of them show one thing is unknown"
    lab = np.asarray(labels)
    things = len(set(lab.tolist()))
    i, j = np.triu_indices(n, 1)
    keep = lab[i] != lab[j]
    i, j = i[keep], j[keep]
    if things < UNRELATED_MIN_LABELS or len(i) < UNRELATED_MIN_PAIRS:
        return None, (f"the held-aside pictures show {things} different thing{'' if things == 1 else 's'} "
                      f"({len(i)} pairs); it needs {UNRELATED_MIN_LABELS} or more and {UNRELATED_MIN_PAIRS} pairs")
    sims = (e[i] * e[j]).sum(1)
    p50, p99 = np.percentile(sims, [50, 99])
    if p99 > UNRELATED_MAX_P99:
        return None, (f"pictures of different sub-folders are as alike as pictures of one thing (99th percentile "
                      f"{p99:.3f}): the sub-folders do not seem to hold one thing each")
    return {"p50": round(float(p50), 4), "p99": round(float(p99), 4), "pictures": int(n), "pairs": int(len(sims)),
            "of": "the quantized model's embeddings of the held-aside pictures, every two different pictures "
                  "of different labels"}, None


def folder_groups(paths: Sequence) -> list[str] | None:
    """Each picture's folder, as the groups ``unrelated_similarity`` keeps apart (pictures in one sub-folder may
    show one thing); None when they all lie in one folder, which says nothing about which show one thing."""
    folders = [str(Path(p).parent) for p in paths]
    return folders if len(set(folders)) > 1 else None


def unrelated_note(reason: str, sorted_index: bool = True) -> str:
    """The converter's note when ``unrelated_similarity`` gave no figure."""
    how = "one sub-folder per thing" + (" (or --labels sorted-index for one picture per class)" if sorted_index else "")
    return (f"note: pictures of different things not measured: {reason}. A gallery of a single label made with this "
            f"model keeps the threshold 0.5; to have it measured, hold aside pictures of 3 or more things, {how}")


FLOAT_ALIKE = 0.99  # mean cosine between the float embeddings of different held-aside pictures


def float_alike(report: dict) -> str | None:
    """Why the figures say little when the float model gives nearly the same embedding for every picture, or None."""
    c = report.get("float_mean_pairwise_cosine")
    if c is None or c <= FLOAT_ALIKE:
        return None
    return (f"the float model itself gives nearly the same embedding for every held-aside picture (mean cosine "
            f"between pictures {c:.4f}): it does not tell them apart, so neither can its quantized model; check that it "
            "is trained and that --mean/--std are the normalisation it was trained with")


def check(report: dict, thresholds: dict | None = None) -> list[str]:
    """The figures below their thresholds, as human-readable lines (empty = passes)."""
    thresholds = {**THRESHOLDS, **(thresholds or {})}
    return [f"{k} {report[k]:.4f} < {v}" for k, v in thresholds.items() if k in report and report[k] < v]


def fidelity_report(float_fn: EmbedFn, quant_fn: EmbedFn, images: np.ndarray, labels: Sequence[int] | None = None,
                    thresholds: dict | None = None, meaningful: bool = True, batch: int = 32,
                    show_progress: bool = False, groups: Sequence | None = None, unrelated: bool = True) -> dict:
    """Run both models on ``images`` ((N, H, W, 3), as both fns take them: the converter gives resized uint8 pixels).

    Each fn maps a batch to ``(embeddings, logits or None)``. ``meaningful=False`` (random weights)
    keeps the figures for debugging but marks them as not a measure of anything. ``groups`` (default: ``labels``):
    pictures of one group show one thing, and are not paired in ``unrelated_similarity`` (measured unless
    ``unrelated`` is False).
    """
    from edgeembed.progress import progress

    fe, qe, fl, ql = [], [], [], []
    for i in progress(range(0, len(images), batch), desc="fidelity (float vs quantized)", enabled=show_progress):
        a, la = float_fn(images[i:i + batch])
        b, lb = quant_fn(images[i:i + batch])
        fe.append(a), qe.append(b)
        if la is not None and lb is not None:
            fl.append(la), ql.append(lb)
    rep = compare(np.concatenate(fe), np.concatenate(qe), np.concatenate(fl) if fl else None,
                  np.concatenate(ql) if ql else None, labels if fl else None)
    if meaningful and unrelated:
        figure, why = unrelated_similarity(np.concatenate(qe), labels if groups is None else groups)
        if figure is not None:
            rep["unrelated_similarity"] = figure
        else:
            if float_alike(rep):  # not the sub-folders' fault
                why = (f"the float model finds every picture alike (mean cosine between pictures "
                       f"{rep['float_mean_pairwise_cosine']:.4f})")
            rep["unrelated_similarity_not_measured"] = why
    return judge(rep, thresholds, meaningful)


def judge(rep: dict, thresholds: dict | None = None, meaningful: bool = True) -> dict:
    """``rep`` with its thresholds and verdict (passed, failures); random weights get a note instead of a verdict."""
    rep["thresholds"] = {**THRESHOLDS, **(thresholds or {})}
    if meaningful:
        failures = check(rep, thresholds)
        rep["passed"] = not failures
        rep["failures"] = failures
    else:
        rep["passed"] = None
        rep["note"] = "random (untrained) weights: these figures measure nothing about a real model"
    return rep


def format_report(rep: dict) -> str:
    """A few lines for the terminal; a face model's report (one with ``faces``) counts faces."""
    n, what = (rep["faces"], "faces") if "faces" in rep else (rep["images"], "images")
    lines = [f"fidelity on {n} held-aside {what}: mean cosine {rep['mean_cosine']:.4f}, "
             f"min {rep['min_cosine']:.4f}" + (f", 1-NN agreement {rep['nn1_agreement']:.3f}" if "nn1_agreement" in rep else "")]
    if "top1_agreement" in rep:
        s = f"top-1 agreement {rep['top1_agreement']:.3f}"
        if "top1_float" in rep:
            s += f", top-1 float {rep['top1_float']:.3f} -> quantized {rep['top1_quant']:.3f} ({-rep['top1_drop_points']:+.1f} pt)"
        lines.append(s)
    alt = rep.get("imagenet_center_crop_0.875")
    if alt and "top1_agreement" in alt:
        lines.append(f"  with ImageNet's centre crop 0.875: mean cosine {alt['mean_cosine']:.4f}, top-1 agreement "
                     f"{alt['top1_agreement']:.3f}, top-1 float {alt['top1_float']:.3f} -> quantized {alt['top1_quant']:.3f}")
    u = rep.get("unrelated_similarity")
    if u:
        lines.append(f"pictures of different things: cosine median {u['p50']:.3f}, 99th percentile {u['p99']:.3f} (a "
                     "gallery of a single label sets its threshold from it)")
    if n < FEW_PICTURES:
        one = "face" if what == "faces" else "picture"
        lines.append(f"note: only {n} held-aside {one}{'' if n == 1 else 's'}; figures from so few move a lot from one set to "
                     "the next (1-NN agreement most of all): give 50 or more for a figure to rely on")
    alike = float_alike(rep)
    if alike and rep.get("passed") is not None:
        lines.append(f"note: {alike}")
    if rep.get("passed") is None:
        lines.append("NOTE: " + rep.get("note", "not measured"))
    elif not rep["passed"]:
        lines.append("LOW FIDELITY: " + "; ".join(rep["failures"]))
    return "\n".join(lines)
