"""Hostile edgeembed metadata: a .tflite is anyone's file, and its JSON is read before anything else.

Each file here is the shipped face model with its edgeembed metadata entry replaced (the privacy audit's cases):
the README promises one line and exit 2 for a file that is not a usable model. Before, JSON nested 100,000 deep
and ``embedding_output: {}`` were tracebacks, 300 MB of metadata took 1.6 GB and 8 s, and a recommended threshold of
"abc" or NaN, or an all-zero face template, was taken silently: a face gallery started at 0.5 instead of 0.93 and a
stranger was accepted.
"""
from __future__ import annotations

import json

import pytest

from conftest import DATA, REPO, run_cli
from edgeembed import tflite_file
from edgeembed.tflite_file import read_tflite, write_metadata

FACE_MODEL = REPO / "models" / "dlib_face_resnet_v1_int8.tflite"
ORIG = json.loads(read_tflite(FACE_MODEL.read_bytes()).metadata["edgeembed"])
ZERO_TEMPLATE = {"keypoints": ["right_eye", "left_eye", "nose_tip", "mouth_center"], "template": [[0, 0]] * 4}


def _with(**changes) -> bytes:
    """The shipped face model's metadata with top-level ``changes`` (``extra__KEY`` for a key of extra)."""
    d = json.loads(json.dumps(ORIG))
    for key, value in changes.items():
        if key.startswith("extra__"):
            d["extra"][key[len("extra__"):]] = value
        else:
            d[key] = value
    return json.dumps(d, allow_nan=True).encode()


HOSTILE = {
    "deep_list": (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    "deep_object": (b'{"a":' * 50000 + b"1" + b"}" * 50000, "nested too deeply"),
    "deep_under_parser_limit": (b'{"a":' * 900 + b"1" + b"}" * 900, "more than 64 levels"),
    "a_list": (b"[1, 2, 3]", "not an object"),
    "not_utf8": (b"\xff\xfe\x00", "not UTF-8 JSON"),
    "output_object": (_with(embedding_output={}), "embedding_output is {}"),
    "output_list": (_with(embedding_output=[0]), "embedding_output is [0]"),
    "dim_text": (_with(embedding_dim="abc"), "embedding_dim is 'abc'"),
    "dim_negative": (_with(embedding_dim=-5), "embedding_dim is -5"),
    "dim_true": (_with(embedding_dim=True), "embedding_dim is True"),
    "dim_not_the_output": (_with(embedding_dim=64), "embedding_dim 64, but output"),
    "task_number": (_with(task=123), "task is 123"),
    "task_unknown": (_with(task="voice"), "task is 'voice'"),
    "preprocessing_text": (_with(preprocessing="abc"), "preprocessing is 'abc'"),
    "std_text": (_with(preprocessing={**ORIG["preprocessing"], "std": "abc"}), "std must be"),
    "extra_list": (_with(extra=[1, 2]), "extra is [1, 2]"),
    "fidelity_text": (_with(fidelity="x"), "fidelity is 'x'"),
    "threshold_text": (_with(extra__recommended_threshold="abc"), "recommended_threshold is 'abc'"),
    "threshold_nan": (_with(extra__recommended_threshold=float("nan")), "recommended_threshold is nan"),
    "threshold_nan_value": (_with(extra__recommended_threshold={"value": float("nan")}), "recommended_threshold is nan"),
    "threshold_no_value": (_with(extra__recommended_threshold={"far": 0.001}), "recommended_threshold is None"),
    "threshold_true": (_with(extra__recommended_threshold=True), "recommended_threshold is True"),
    "threshold_7": (_with(extra__recommended_threshold=7), "recommended_threshold is 7"),
    "threshold_minus_1": (_with(extra__recommended_threshold=-1), "recommended_threshold is -1"),
    "unrelated_text": (_with(extra__unrelated_similarity={"p99": "x"}), "unrelated_similarity is"),
    "classifier_list": (_with(extra__classifier_output=[1]), "classifier_output is [1]"),
    "template_zero": (_with(extra__face_alignment=ZERO_TEMPLATE), "puts two keypoints on one spot"),
    "template_two_eyes_on_one_spot": (_with(extra__face_alignment={**ZERO_TEMPLATE, "template": [[40, 50], [40, 50],
                                                                                                 [75, 80], [75, 110]]}),
                                      "puts two keypoints on one spot"),
    "template_huge": (_with(extra__face_alignment={**ZERO_TEMPLATE, "template": [[1e308, 1e308]] * 4}),
                      "face_alignment's template"),
    "template_nan": (_with(extra__face_alignment={**ZERO_TEMPLATE, "template": [[float("nan"), 1]] * 4}),
                     "face_alignment's template"),
    "template_short": (_with(extra__face_alignment={**ZERO_TEMPLATE, "template": [[40, 50], [100, 50]]}),
                       "face_alignment's template"),
    "template_text": (_with(extra__face_alignment="garbage"), "face_alignment is 'garbage'"),
    "keypoints_unknown": (_with(extra__face_alignment={"keypoints": ["a", "b"], "template": [[1, 2], [30, 4]]}),
                          "face_alignment is"),
    "keypoints_twice": (_with(extra__face_alignment={"keypoints": ["left_eye", "left_eye"], "template": [[1, 2], [30, 4]]}),
                        "face_alignment is"),
}


def _one_line_exit_2(p, path, needle: str) -> None:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, (p.returncode, p.stderr[-3000:])
    assert lines[0].startswith(f"edgeembed: error: {path} has unusable edgeembed metadata: "), lines[0]
    assert needle in lines[0], lines[0]
    assert lines[0].endswith("re-convert the model with edgeembed convert, or use a shipped model (models/)"), lines[0]
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_metadata_is_one_line_and_exit_2(tmp_path, case):
    blob, needle = HOSTILE[case]
    model = tmp_path / f"{case}.tflite"
    model.write_bytes(write_metadata(FACE_MODEL.read_bytes(), {"edgeembed": blob}))
    _one_line_exit_2(run_cli("inspect", model), model, needle)
    # enrolment (the mode read from the metadata first) neither fails on it nor makes a gallery from it
    p = run_cli("enroll", "--model", model, "--gallery", tmp_path / "g", "--label", "s1",
                DATA / "orl-faces" / "s1" / "1.pgm", "--quiet")
    _one_line_exit_2(p, model, needle)
    assert not (tmp_path / "g" / "gallery.sqlite").exists()


def test_metadata_beyond_the_cap_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """300 MB of metadata took 1.6 GB and 8 s before anything was said; real files hold a few KB. What the cap lets
    through (200 KB of notes) still loads."""
    big = json.dumps({**ORIG, "junk": "x" * (2 << 20)}).encode()
    monkeypatch.setattr(tflite_file, "EDGEEMBED_ENTRY_CAP", 1 << 40)  # only to write the file
    model = tmp_path / "huge.tflite"
    model.write_bytes(write_metadata(FACE_MODEL.read_bytes(), {"edgeembed": big}))
    monkeypatch.undo()
    _one_line_exit_2(run_cli("inspect", model), model, f"{len(big):,} bytes of it")
    ok = tmp_path / "notes.tflite"
    ok.write_bytes(write_metadata(FACE_MODEL.read_bytes(), {"edgeembed": _with(extra__notes="x" * 200_000)}))
    p = run_cli("inspect", ok)
    assert p.returncode == 0 and "0.9302" in p.stdout, p.stderr


def test_a_face_gallery_takes_the_models_threshold_only_when_it_is_one(tmp_path):
    """The shipped file's recommended threshold (0.9302) starts a face gallery; "abc" in its place made that 0.5 and a
    stranger was accepted, and now makes no gallery at all."""
    photo = DATA / "orl-faces" / "s1" / "1.pgm"
    p = run_cli("enroll", "--model", FACE_MODEL, "--gallery", tmp_path / "good", "--label", "s1", photo, "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["threshold"] == pytest.approx(0.9302), p.stderr
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(write_metadata(FACE_MODEL.read_bytes(), {"edgeembed": _with(extra__recommended_threshold="abc")}))
    p = run_cli("enroll", "--model", bad, "--gallery", tmp_path / "bad", "--label", "s1", photo, "--mode", "face")
    _one_line_exit_2(p, bad, "recommended_threshold is 'abc'")
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


@pytest.mark.parametrize("model", sorted((REPO / "models").glob("*.tflite")), ids=lambda m: m.name)
def test_the_shipped_models_pass_the_checks(model):
    p = run_cli("inspect", model)
    assert p.returncode == 0 and p.stderr == "", p.stderr
