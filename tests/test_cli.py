"""The `edgeembed` command as the issue's checks call it, on the real models and data."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from conftest import DATA, MODELS, REPO, V1_EMBED, V1_TINY, run_cli
from tflite_builder import custom_op_model
from unseen import write_unseen_dataset


def _json(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_eval_coil20_k4():
    r = _json(run_cli("eval", V1_EMBED, DATA / "coil20", "--gallery-per-class", "4", "--json"))
    assert r["queries"] == 20 * 68 and r["classes"] == 20
    assert r["recall@1"] >= 0.99 and r["recall@5"] >= r["recall@1"]
    o = r["open_set"]
    assert o["known_classes"] == 10 and o["stranger_classes"] == 10
    assert 0 < r["tar@far1%"] <= 1 and o["far_at_threshold"] <= 0.01 and o["best_threshold"] is not None


def test_eval_shows_what_the_automatic_threshold_does(tmp_path):
    """eval's open-set figures at the threshold `enroll` would derive for the same known-class pictures: the
    gallery's default behaviour on the user's own data, not only the best threshold in hindsight."""
    from edgeembed.evaluate import split_dataset

    model = REPO / "models" / "mobilenet_v2_1.0_224_int8.tflite"
    r = _json(run_cli("eval", model, DATA / "coil20", "--gallery-per-class", "4", "--json"))
    a = r["open_set"]["automatic_threshold"]
    assert 0.5 < a["threshold"] < 1 and 0 < a["far"] < a["tar"] <= 1
    known = [(c, f) for c, f in split_dataset(DATA / "coil20", 4).gallery if c % 2 == 0]  # eval's known classes
    folder = tmp_path / "known"
    for c, f in known:
        (folder / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
        (folder / f"class{c:02d}" / f.name).symlink_to(f)
    enrolled = _json(run_cli("enroll", "--model", model, "--gallery", tmp_path / "g", folder, "--json", "--quiet"))
    assert enrolled["threshold"] == a["threshold"]


def test_eval_thresholds_sit_in_the_middle_of_the_gap_that_gives_their_figures():
    """A threshold on a genuine score (the lowest edge, as before) rejects that person's next picture scoring a hair
    lower; the middle of the gap gives the same figures with room on both sides. Of thresholds that keep the most
    true accepts within the FAR target, the one with the fewest false accepts is given (it gave the lowest)."""
    from edgeembed.evaluate import open_set_figures

    genuine = np.array([0.9, 0.8, 0.7, 0.6])
    right = np.array([True, True, True, False])  # 0.6 named the wrong class: it decides nothing
    strangers = np.array([0.5, 0.65, 0.3, -np.inf])  # -inf: a stranger with no face found
    o = open_set_figures(genuine, right, strangers, far_target=0.25)
    # 3 right genuines above 0.65, every stranger below 0.7: the same figures anywhere in (0.65, 0.7]
    assert (o["best_threshold"], o["tar_at_best"], o["far_at_best"]) == (0.675, 0.75, 0.0)
    assert (o["threshold_at_far"], o["tar_at_far"], o["far_at_threshold"]) == (0.675, 0.75, 0.0)
    o = open_set_figures(genuine, right, strangers, far_target=0.5)  # 0.8 needs FAR 0.25: TAR 0.75 is still the most
    assert o["threshold_at_far"] == 0.675
    # above every score: no gap with two sides, the threshold itself
    o = open_set_figures(np.array([0.5]), np.array([True]), np.array([0.9]), far_target=0.0)
    assert o["tar_at_far"] == 0.0 and o["threshold_at_far"] > 0.9


def test_eval_orl_k1():
    r = _json(run_cli("eval", V1_EMBED, DATA / "orl-faces", "--gallery-per-class", "1", "--json"))
    assert r["queries"] == 360 and r["recall@1"] >= 0.85


def test_eval_on_classes_never_seen(tmp_path):
    ds = write_unseen_dataset(tmp_path / "unseen", views=6)
    r = _json(run_cli("eval", V1_EMBED, ds, "--gallery-per-class", "1", "--far", "0.05", "--json"))
    assert r["classes"] >= 20 and r["queries"] == r["classes"] * 5
    assert r["recall@1"] >= 0.95, r
    # the short keys name the target they were read at (they said far1% whatever --far was)
    o = r["open_set"]
    assert o["far_target"] == 0.05 and "tar@far1%" not in r
    assert r["tar@far5%"] == o["tar_at_far"] and r["threshold@far5%"] == o["threshold_at_far"]


def test_embed_and_inspect_json():
    img = DATA / "coral-images" / "owl.jpg"
    e = _json(run_cli("embed", V1_EMBED, img, "--json"))
    assert len(e["embedding"]) == 1024 and e["dim"] == 1024
    shipped = REPO / "models" / "mobilenet_v2_1.0_224_int8.tflite"  # outputs named as its standard metadata names them
    logits = _json(run_cli("embed", shipped, DATA / "coral-images" / "parrot.jpg", "--output", "logits", "--json"))
    assert logits["dim"] == 1000 and int(np.argmax(logits["embedding"])) == 88  # ImageNet class 88: macaw
    # the text form reads the fidelity report out, verdict included (it was one raw JSON line of ~1000 characters)
    text = run_cli("inspect", shipped, check=True).stdout.splitlines()
    fid = [line for line in text if line.startswith("fidelity")]
    assert fid == ["fidelity     converted against the float model, 500 held-aside pictures: mean cosine 0.9974, "
                   "min 0.9866, 1-NN agreement 0.874, top-1 agreement 0.962 (top-1 float 0.798 -> quantized 0.802)"]
    assert "             BELOW the converter's gate: top1_agreement 0.9620 < 0.97" in text
    i = _json(run_cli("inspect", V1_EMBED, "--json"))
    assert i["embedding"]["dim"] == 1024 and i["input"]["dtype"] == "uint8" and "preprocessing" in i


def test_inspect_reads_the_face_models_report_out():
    """The shipped face model's report (int8 against dlib) printed as a few lines with its verdict, and its
    recommended threshold; it was one raw JSON line of ~2000 characters."""
    face = REPO / "models" / "dlib_face_resnet_v1_int8.tflite"
    text = run_cli("inspect", face, check=True).stdout.splitlines()
    assert all(len(line) < 400 for line in text), max(map(len, text))
    fid = [i for i, line in enumerate(text) if line.startswith("fidelity")]
    assert len(fid) == 1
    first = text[fid[0]]
    assert first.startswith("fidelity     int8 against dlib's own descriptors, 400 face chips: mean cosine 0.9995, min 0.9978;")
    assert "one picture per person enrolled, the same answer as dlib 0.997 (recall@1 0.983, dlib 0.983)" in first
    rest = text[fid[0] + 1:]
    assert any(line.strip().startswith("people not used for calibration, 200 chips:") for line in rest)
    assert any("passed the converter's bars" in line for line in rest)
    assert "threshold    0.9302: the floor of a gallery's automatic threshold (0.1% of pairs of different people " \
           "score above it)" in text
    # a face model below its bars says so in words
    from edgeembed.cli import _fidelity_lines

    report = json.loads((REPO / "models" / "dlib_face_resnet_v1_int8.fidelity.json").read_text())["fidelity"]
    report["below_bars"] = ["nn1_label_agreement 0.95 < 0.99"]
    assert _fidelity_lines(report)[-1] == "             BELOW the converter's bars: nn1_label_agreement 0.95 < 0.99"


def test_enroll_list_recognize_edit(tmp_path):
    gal = tmp_path / "g"
    enroll_dir = tmp_path / "objects"
    for obj in ("obj01", "obj02", "obj03"):
        (enroll_dir / obj).mkdir(parents=True)
        for view in ("000", "018", "036", "054"):
            (enroll_dir / obj / f"{view}.png").symlink_to(DATA / "coil20" / obj / f"{view}.png")
    # enrolled by a relative path from the folder above it (the gallery keeps each file's absolute path)
    first = subprocess.run([sys.executable, "-m", "edgeembed.cli", "enroll", "--model", str(V1_EMBED), "--gallery", "g",
                            "objects"], capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    lst = _json(run_cli("gallery", "list", "--gallery", gal, "--json"))
    assert lst["entries"] == 12 and lst["labels"] == {"obj01": 4, "obj02": 4, "obj03": 4}
    # the same enrolment again adds nothing (duplicates would be perfect 'genuine' matches and raise the threshold),
    # also from another directory by another path
    again = _json(run_cli("enroll", "--gallery", gal, enroll_dir, "--json"))
    assert again["enrolled"] == 0 and again["entries"] == 12 and len(again["skipped"]) == 12
    assert again["threshold"] == lst["threshold"]
    # byte-identical copies at other paths (a folder copied again from a phone) are the same pictures too, and so is
    # a picture given twice in one call; a re-saved copy (another JPEG) is a picture of its own
    copies = tmp_path / "copies"
    shutil.copytree(enroll_dir, copies)  # the files themselves, not the links
    again = _json(run_cli("enroll", "--gallery", gal, copies, "--json"))
    assert again["enrolled"] == 0 and again["entries"] == 12 and len(again["skipped"]) == 12
    assert "the same picture as" in again["skipped"][0]["reason"] and again["threshold"] == lst["threshold"]
    other = tmp_path / "other"
    png = DATA / "coil20" / "obj04" / "000.png"
    other.mkdir()
    cv2.imwrite(str(other / "resaved.jpg"), cv2.imread(str(png)), [cv2.IMWRITE_JPEG_QUALITY, 90])
    once = _json(run_cli("enroll", "--gallery", tmp_path / "g4", "--model", V1_EMBED, "--label", "obj04", png,
                         copies / "obj01" / "000.png", png, other / "resaved.jpg", "--json"))
    assert once["enrolled"] == 3 and [s["source"] for s in once["skipped"]] == [str(png)]
    assert "given before it" in once["skipped"][0]["reason"]
    # Recognize unseen views of enrolled objects, and an object never enrolled.
    q = tmp_path / "queries"
    q.mkdir()
    for obj in ("obj01", "obj02", "obj03", "obj10"):
        (q / f"{obj}_009.png").symlink_to(DATA / "coil20" / obj / "009.png")
    proc = run_cli("recognize", "--gallery", gal, "--source", q, "--json", check=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 4 and all({"frame", "label", "score"} <= set(r) for r in rows)
    by = {r["source"].rsplit("/", 1)[1][:5]: r for r in rows}
    assert [by[o]["label"] for o in ("obj01", "obj02", "obj03")] == ["obj01", "obj02", "obj03"]
    one = _json(run_cli("recognize", "--gallery", gal, "--source", q / "obj02_009.png", "--json"))
    assert one["label"] == "obj02"
    # a glob is answered like the folder: picture by picture, each with its source (not smoothed as a stream)
    proc = run_cli("recognize", "--gallery", gal, "--source", str(q / "obj0[12]_*.png"), "--json", check=True)
    globbed = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["source"], r["label"]) for r in globbed] == [(by[o]["source"], o) for o in ("obj01", "obj02")]
    # pictures take --max-frames and --roi as a stream does; options only a stream has are refused, not ignored
    first_two = [json.loads(line) for line in run_cli("recognize", "--gallery", gal, "--source", q, "--json",
                                                      "--max-frames", "2", check=True).stdout.splitlines()]
    assert [r["source"] for r in first_two] == [r["source"] for r in rows[:2]]
    corner = _json(run_cli("recognize", "--gallery", gal, "--source", q / "obj02_009.png", "--roi", "0,0,64,64", "--json"))
    assert corner["score"] < one["score"] - 0.02  # a quarter of the picture embeds differently
    outside = run_cli("recognize", "--gallery", gal, "--source", q / "obj02_009.png", "--roi", "500,0,64,64")
    assert outside.returncode == 2 and "lies outside the 128x128 frame" in outside.stderr
    for extra in (["--output", tmp_path / "a.avi"], ["--preview", "8099", "--mqtt", "localhost"], ["--fps", "2"]):
        p = run_cli("recognize", "--gallery", gal, "--source", q, *extra)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "for video files, cameras and streams" in p.stderr and "4 pictures" in p.stderr and not p.stdout
    assert not (tmp_path / "a.avi").exists()
    lores = run_cli("recognize", "--gallery", gal, "--source", q, "--stream", "lores")
    assert lores.returncode == 2 and "picamera2's second stream" in lores.stderr and not lores.stdout
    # Editing: rename, remove, threshold; more images with --label.
    run_cli("gallery", "rename", "obj01", "duck", "--gallery", gal, check=True)
    run_cli("gallery", "remove", "obj03", "--gallery", gal, check=True)
    run_cli("enroll", "--gallery", gal, "--label", "duck", DATA / "coil20" / "obj01" / "027.png", check=True)
    t = _json(run_cli("gallery", "threshold", "0.8", "--gallery", gal, "--json"))
    assert t == {"threshold": 0.8, "threshold_source": "user", "source": "user"}  # as remove/rename --json name it
    lst = _json(run_cli("gallery", "list", "--gallery", gal, "--json"))
    assert lst["labels"] == {"duck": 5, "obj02": 4} and lst["threshold"] == 0.8


def test_unknown_for_strangers(tmp_path):
    gal = tmp_path / "g"
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal, "--label", "owl", DATA / "coral-images" / "owl.jpg", check=True)
    run_cli("enroll", "--gallery", gal, "--label", "parrot", DATA / "coral-images" / "parrot.jpg", check=True)
    run_cli("gallery", "threshold", "0.75", "--gallery", gal, check=True)
    r = _json(run_cli("recognize", "--gallery", gal, "--source", DATA / "coil20" / "obj05" / "000.png", "--json"))
    assert r["label"] is None and r["score"] < 0.75
    # the text line says how far off it was: the nearest label and the threshold it missed
    line = run_cli("recognize", "--gallery", gal, "--source", DATA / "coil20" / "obj05" / "000.png", check=True).stdout
    assert f": unknown {r['score']:.3f} (nearest {r['matches'][0]['label']}, threshold 0.750) (" in line, line
    # counts read as words: '1 entry', '1 label'
    removed = run_cli("gallery", "remove", "owl", "--gallery", gal, check=True).stdout
    assert removed.startswith("removed 1 entry; 1 left"), removed
    assert ": 1 entry, 1 label, model " in run_cli("gallery", "list", "--gallery", gal, check=True).stdout


def test_a_new_gallery_takes_the_shipped_default_model_unless_told(tmp_path):
    owl = DATA / "coral-images" / "owl.jpg"
    proc = run_cli("enroll", "--gallery", tmp_path / "g", "--label", "owl", owl, check=True)
    assert "default model" in proc.stderr and proc.stdout.startswith("enrolled 1 image under 1 label into")
    lst = _json(run_cli("gallery", "list", "--gallery", tmp_path / "g", "--json"))
    assert Path(lst["model"]) == REPO / "models" / "mobilenet_v2_1.0_224_int8.tflite" and lst["dim"] == 1280
    proc = run_cli("enroll", "--gallery", tmp_path / "v1", "--label", "owl", owl, "--quiet", check=True,
                   env={"EDGEEMBED_MODEL": str(V1_EMBED)})
    assert f"with the model EDGEEMBED_MODEL names, {V1_EMBED}" in proc.stderr  # not 'the default model'
    assert _json(run_cli("gallery", "list", "--gallery", tmp_path / "v1", "--json"))["dim"] == 1024
    # EDGEEMBED_DEBUG: 0 is off; on, the traceback comes above the same one line and the same exit status
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    _one_line_error(run_cli("embed", V1_EMBED, text, env={"EDGEEMBED_DEBUG": "0"}), "not a readable image")
    debug = run_cli("embed", V1_EMBED, text, env={"EDGEEMBED_DEBUG": "1"})
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("edgeembed: error:")


def _one_line_error(proc, needle):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgeembed: error:") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_input_one_clear_line_and_nothing_lost(tmp_path):
    gal = tmp_path / "g"
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal, "--label", "owl", DATA / "coral-images" / "owl.jpg", check=True)
    before = run_cli("gallery", "list", "--gallery", gal, "--json", "--entries").stdout
    (tmp_path / "text.jpg").write_text("not an image")
    data = (DATA / "coral-images" / "parrot.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.tflite").write_text("not a model")
    (tmp_path / "etpu.tflite").write_bytes(custom_op_model())
    _one_line_error(run_cli("embed", V1_EMBED, tmp_path / "missing.jpg"), "not found")
    _one_line_error(run_cli("embed", V1_EMBED, tmp_path / "text.jpg"), "not a readable image")
    _one_line_error(run_cli("embed", V1_EMBED, tmp_path / "cut.jpg"), "truncated JPEG")
    import cv2

    tiff = cv2.imencode(".tif", cv2.imread(str(DATA / "coral-images" / "parrot.jpg")))[1].tobytes()
    (tmp_path / "cut.tif").write_bytes(tiff[:3000])  # OpenCV's own 'TIFF_Error' lines are not printed beside ours
    _one_line_error(run_cli("embed", V1_EMBED, tmp_path / "cut.tif"), "is a damaged or unsupported TIFF file")
    _one_line_error(run_cli("inspect", tmp_path / "text.tflite"), "not a TFLite model")
    _one_line_error(run_cli("inspect", tmp_path / "etpu.tflite"), "compiled for the Coral Edge TPU")
    _one_line_error(run_cli("inspect", tmp_path / "etpu.tflite", "--delegate", "edgetpu"), "Edge TPU delegate")
    # the Edge TPU library named by file is the Edge TPU delegate (it was refused as 'cannot run on the CPU')
    _one_line_error(run_cli("inspect", tmp_path / "etpu.tflite", "--delegate", "libedgetpu.so.1"), "Edge TPU delegate")
    _one_line_error(run_cli("inspect", V1_EMBED, "--delegate", "nnapi"), "path of the NNAPI delegate library")
    _one_line_error(run_cli("inspect", V1_EMBED, "--delegate", "gpu"), "path of the GPU delegate library")
    _one_line_error(run_cli("inspect", V1_EMBED, "--delegate-option", "device=usb"), "give --delegate edgetpu")
    _one_line_error(run_cli("inspect", V1_EMBED, "--delegate", "edgetpu", "--delegate-option", "=usb"), "needs a KEY")
    zlib = next((p for p in ("/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1",
                             "/usr/lib/aarch64-linux-gnu/libz.so.1") if Path(p).exists()), None)
    if zlib:  # a real shared library that is no delegate
        _one_line_error(run_cli("inspect", V1_EMBED, "--delegate", zlib), "not a TFLite delegate")
    # Enrolment with a bad image, or with another model, stores nothing.
    _one_line_error(run_cli("enroll", "--gallery", gal, "--label", "x", DATA / "coral-images" / "cat.bmp",
                            tmp_path / "cut.jpg"), "nothing was enrolled")
    _one_line_error(run_cli("enroll", "--model", V1_TINY, "--gallery", gal, "--label", "x",
                            DATA / "coral-images" / "cat.bmp"), "was built with model")
    _one_line_error(run_cli("recognize", "--gallery", gal, "--model", V1_TINY, "--source",
                            DATA / "coral-images" / "cat.bmp"), "was built with model")
    _one_line_error(run_cli("recognize", "--gallery", tmp_path / "none", "--source", tmp_path), "no gallery at")
    _one_line_error(run_cli("enroll", "--model", tmp_path / "text.tflite", "--gallery", tmp_path / "g2",
                            DATA / "coil20"), "not a TFLite model")
    assert not (tmp_path / "g2" / "gallery.sqlite").exists()
    assert run_cli("gallery", "list", "--gallery", gal, "--json", "--entries").stdout == before
    # --skip-bad enrols the good ones and names the bad one.
    ok = run_cli("enroll", "--gallery", gal, "--label", "cat", DATA / "coral-images" / "cat.bmp", tmp_path / "cut.jpg",
                 "--skip-bad", "--json")
    report = _json(ok)
    assert report["enrolled"] == 1 and report["skipped"][0]["source"].endswith("cut.jpg")


def test_options_out_of_range_and_batches_that_all_fail_are_one_line_and_non_zero(tmp_path):
    """Option values that would give silent wrong answers (a threshold of 5, top-k 0), crash the interpreter
    (40000 threads) or exhaust memory (a 99999x99999 capture) are refused in one line; so is a folder in
    which no picture could be read, an enrolment with nothing to enrol (no gallery is left behind), and an
    evaluation with no picture left to query."""
    import shutil

    gal = tmp_path / "g"
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal, "--label", "owl", DATA / "coral-images" / "owl.jpg", check=True)
    cat = DATA / "coral-images" / "cat.bmp"
    for option, needle in ((["--threshold", "5"], "from -1 to 1, got 5"), (["--threshold", "nan"], "got nan"),
                           (["--top-k", "0"], "at least 1, got 0"), (["--threads", "40000"], "from 1 to 256"),
                           (["--top-k", "x"], "expected an integer, got 'x'")):
        proc = run_cli("recognize", "--gallery", gal, "--source", cat, *option)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    for option, needle in ((["--mean", "nan"], "expected finite numbers, got 'nan'"), (["--std", "inf"], "got 'inf'"),
                           (["--std", "1e-30"], "std must be positive (at least 0.001")):
        # a NaN mean gave NaN vectors and exit 0; into a new gallery it left one bound to NaN settings
        proc = run_cli("enroll", "--model", V1_EMBED, "--gallery", tmp_path / "nan", "--label", "owl",
                       DATA / "coral-images" / "owl.jpg", *option)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
        assert not (tmp_path / "nan").exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_text("not an image")
    (bad / "b.jpg").write_bytes(b"")
    proc = run_cli("recognize", "--gallery", gal, "--source", bad)
    assert proc.returncode == 2 and "none of the 2 images" in proc.stderr.strip().splitlines()[-1]
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(run_cli("enroll", "--model", V1_EMBED, "--gallery", tmp_path / "new", "--label", "a", empty),
                    f"no pictures to enrol in {empty}")
    _one_line_error(run_cli("enroll", "--mode", "face", "--gallery", tmp_path / "new", "--label", "a", empty),
                    f"no pictures to enrol in {empty}")  # face mode named the empty folder as '0 photo(s)'
    _one_line_error(run_cli("enroll", "--gallery", tmp_path / "new", "--label", "", bad), "--label is empty")
    _one_line_error(run_cli("enroll", "--model", V1_EMBED, "--gallery", tmp_path / "new", "--label", "a", bad,
                            "--skip-bad"), "none of the 2 images could be enrolled")
    assert not (tmp_path / "new").exists()  # a failed first enrolment leaves no gallery to trip over
    one_each = tmp_path / "one_each"
    for obj in ("obj01", "obj02"):
        (one_each / obj).mkdir(parents=True)
        shutil.copyfile(DATA / "coil20" / obj / "000.png", one_each / obj / "000.png")
    _one_line_error(run_cli("eval", V1_EMBED, one_each, "--json"), "none is left to query")
    # a model whose output is no vector (the BlazeFace detector's boxes), and a negative std
    detector = REPO / "edgeembed" / "face" / "models" / "face_detection_short_range.tflite"
    _one_line_error(run_cli("enroll", "--model", detector, "--gallery", tmp_path / "det", "--label", "a", cat),
                    "not an embedding vector")
    assert not (tmp_path / "det").exists()
    _one_line_error(run_cli("embed", V1_EMBED, cat, "--std", "-1"), "std must be positive")


def test_a_video_whose_name_looks_like_a_pattern_is_read_as_a_video(tmp_path):
    """`clip[1].avi` exists, so it is that video, not a glob pattern that matches nothing."""
    import cv2

    video = tmp_path / "clip[1].avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 128))
    for i in range(5):
        w.write(cv2.resize(cv2.imread(str(DATA / "coil20" / "obj01" / f"{i:03d}.png")), (128, 128)))
    w.release()
    gal = tmp_path / "g"
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal, "--label", "obj01", DATA / "coil20" / "obj01" / "000.png",
            "--quiet", check=True)
    proc = run_cli("recognize", "--gallery", gal, "--source", video, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len([r for r in rows if "capture" in r.get("time_ms", {})]) == 5  # every frame (events aside)
    _one_line_error(run_cli("recognize", "--gallery", gal, "--source", video, "--resolution", "99999x99999"),
                    "each side from 1 to 8192")  # a capture that size would exhaust a Pi's memory
    for bad in ("-5", "nan", "soon"):  # 0 (give up at the first drop) and inf (never) are the ends of the range
        _one_line_error(run_cli("recognize", "--gallery", gal, "--source", video,
                                env={"EDGEEMBED_RECONNECT_TIMEOUT": bad}), "EDGEEMBED_RECONNECT_TIMEOUT must be seconds >= 0")
    assert run_cli("recognize", "--gallery", gal, "--source", video, env={"EDGEEMBED_RECONNECT_TIMEOUT": "inf"}).returncode == 0


def test_help_on_every_command():
    for cmd in (["--help"], ["inspect", "--help"], ["embed", "--help"], ["enroll", "--help"], ["gallery", "list", "--help"],
                ["recognize", "--help"], ["eval", "--help"], ["demo", "--help"]):
        proc = run_cli(*cmd)
        assert proc.returncode == 0 and "usage: edgeembed" in proc.stdout


def test_python_dash_m_edgeembed_is_the_command():
    """For a venv whose bin/ is not on PATH (a systemd unit naming only its python): same output, same exit codes."""
    model = MODELS / "mobilenet_v2_1.0_224_int8.tflite"
    for args in (["inspect", str(model), "--json"], ["inspect", "nope.tflite"]):
        by_m = subprocess.run([sys.executable, "-m", "edgeembed", *args], capture_output=True, text=True, cwd=REPO)
        by_cli = run_cli(*args)
        assert (by_m.returncode, by_m.stdout, by_m.stderr) == (by_cli.returncode, by_cli.stdout, by_cli.stderr)
    assert by_m.returncode == 2 and by_m.stderr.startswith("edgeembed: error: ")


def test_import_never_loads_heavy_modules():
    code = ("import sys, edgeembed, edgeembed.cli, edgeembed.gallery, edgeembed.evaluate; "
            "edgeembed.cli.build_parser(); "
            "bad = [m for m in ('tensorflow', 'torch', 'picamera2', 'keras') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_demo_runs_on_bundled_pictures(tmp_path):
    proc = run_cli("demo", "--model", V1_EMBED, "--workdir", tmp_path, "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    summary = lines[-1]
    assert summary["queries"] == 20 and summary["correct"] >= 18
    assert all(not r["correct"] or r["label"] == r["expected"] for r in lines[:-1])


def test_more_pictures_into_a_gallery_with_its_own_settings_or_a_named_refusal(tmp_path):
    """A gallery enrolled with --mean/--std/--color-order: adding with the same option again works (it was
    refused as 'that file has changed'); another value is refused by name, and nothing stored changes."""
    g = tmp_path / "g"
    run_cli("enroll", DATA / "coil20" / "obj01", "--label", "obj01", "--gallery", g, "--model", V1_EMBED, "--mean",
            "127.5", "--std", "127.5", "--color-order", "BGR", "--quiet", check=True)
    p = run_cli("enroll", DATA / "coil20" / "obj02", "--label", "obj02", "--gallery", g, "--color-order", "BGR",
                "--quiet")
    assert p.returncode == 0, p.stderr
    before = run_cli("gallery", "list", "--gallery", g, "--json", check=True).stdout
    assert json.loads(before)["labels"] == {"obj01": 72, "obj02": 72}
    p = run_cli("enroll", DATA / "coil20" / "obj03", "--label", "obj03", "--gallery", g, "--mean", "0", "--quiet")
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "--mean 0 (the gallery's: 127.5)" in p.stderr and "changed" not in p.stderr, p.stderr
    assert run_cli("gallery", "list", "--gallery", g, "--json", check=True).stdout == before


def test_tensorflow_backend_prints_only_the_answer():
    """--backend tensorflow: TensorFlow's own absl/oneDNN lines on import stayed on the user's terminal."""
    import pytest

    pytest.importorskip("tensorflow")
    p = run_cli("embed", REPO / "models" / "mobilenet_v2_1.0_224_int8.tflite", DATA / "coral-images" / "parrot.jpg",
                "--backend", "tensorflow", "--json")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert len(json.loads(p.stdout)["embedding"]) == 1280


def test_an_object_enrolled_under_a_second_label_is_pointed_out(tmp_path):
    """Image mode: a COIL object enrolled again under another name gets a note naming the label and entry it would
    be recognized as; 20 objects, 4 views each, get none."""
    obj = sorted((DATA / "coil20" / "obj01").iterdir())
    gallery = tmp_path / "g"
    run_cli("enroll", obj[0], "--label", "mug", "--gallery", gallery, "--quiet", check=True)
    p = run_cli("enroll", obj[1], "--label", "cup", "--gallery", gallery, "--json", "--quiet", check=True)
    [alike] = json.loads(p.stdout)["look_alikes"]
    assert alike["recognized_as"] == "mug" and alike["entry"] == 1 and alike["label"] == "cup" and alike["new_entry"] == 2
    assert "(entry #2), enrolled as 'cup', is recognized as 'mug' (entry #1" in p.stderr

    views = tmp_path / "views"
    for d in sorted((DATA / "coil20").iterdir()):
        if d.is_dir():
            (views / d.name).mkdir(parents=True)
            for f in sorted(d.iterdir())[::18]:
                (views / d.name / f.name).write_bytes(f.read_bytes())
    p = run_cli("enroll", views, "--gallery", tmp_path / "g2", "--quiet")
    assert p.returncode == 0 and "note:" not in p.stderr, p.stderr


def test_a_classifiers_softmax_output_is_named_as_such():
    """A classifier used through its softmax recognizes poorly (coral MobileNetV2: recall@1 0.69 on COIL-20 against
    1.00 for its embedding-extractor export) and nothing said so; a quantized softmax has TFLite's fixed 1/256 scale."""
    p = run_cli("inspect", MODELS / "mobilenet_v2_1.0_224_quant.tflite", check=True)
    assert "looks like a classifier's class probabilities" in p.stderr, p.stderr
    for model in (V1_EMBED, MODELS / "mobilefacenet.tflite", REPO / "models" / "mobilenet_v2_1.0_224_int8.tflite"):
        assert "class probabilities" not in run_cli("inspect", model, check=True).stderr


def test_a_write_refused_by_the_system_says_what_to_do():
    """A read-only mount and a missing permission get their own fix (an existing gallery on a read-only card was
    told to "choose a writable place")."""
    import errno

    from edgeembed.cli import _system_error

    ro = _system_error(OSError(errno.EROFS, "Read-only file system", "/mnt/card/G/vectors.f32"))
    assert ro == ("cannot write (/mnt/card/G/vectors.f32): Read-only file system; mount it read-write (or use a "
                  "writable place) and run again (nothing half-written was kept)")
    denied = _system_error(OSError(errno.EACCES, "Permission denied", "/srv/G/gallery.sqlite"))
    assert "run as the user who owns it, or choose a writable place" in denied


def test_eval_reads_a_users_folder_as_enroll_does_and_says_what_it_changed(tmp_path):
    """eval on the folder a user enrols from: pictures in sub-folders of a class count, "Zoë" spelled two ways
    (a Mac's folder and a typed one) is one class, a class of K pictures or fewer is said to have no query, an
    unreadable picture names --skip-bad (which leaves it out), and a FAR no stranger count can measure is said."""
    import unicodedata

    ds = tmp_path / "photos"
    views = {"obj01": range(0, 72, 9), "obj02": range(0, 72, 9), "obj03": range(0, 72, 9), "obj04": (0, 36)}
    for obj, vs in views.items():
        for v in vs:
            (ds / obj).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(DATA / "coil20" / obj / f"{v:03d}.png", ds / obj / f"{v:03d}.png")
    nested = ds / "obj05" / "2023"  # a class whose pictures are all one level down
    nested.mkdir(parents=True)
    for v in range(0, 72, 9):
        shutil.copyfile(DATA / "coil20" / "obj05" / f"{v:03d}.png", nested / f"{v:03d}.png")
    for form, vs in (("NFC", range(0, 36, 9)), ("NFD", range(36, 72, 9))):
        d = ds / unicodedata.normalize(form, "Zoë")
        d.mkdir()
        for v in vs:
            shutil.copyfile(DATA / "coil20" / "obj06" / f"{v:03d}.png", d / f"{v:03d}.png")
    r = json.loads(run_cli("eval", V1_EMBED, ds, "--gallery-per-class", "2", "--json", "--quiet", check=True).stdout)
    assert r["classes"] == 6 and r["gallery_only_classes"] == ["obj04"]
    assert r["gallery_size"] == 12 and r["queries"] == 4 * 6 + 6  # obj05's 8 pictures in 2023/ count; Zoë's 8 are one class
    text = run_cli("eval", V1_EMBED, ds, "--gallery-per-class", "2", "--quiet", check=True).stdout
    assert "note: 1 class with 2 picture(s) or fewer went wholly into the gallery, with no query of their own: obj04" in text
    assert "note: FAR 0.01 is below what" in text and "the figure is that of FAR 0" in text
    # one unreadable picture: one line naming --skip-bad; with it, left out and listed
    cut = ds / "obj01" / "0.jpg"  # sorts first: obj01's gallery pick
    cut.write_bytes((DATA / "coral-images" / "parrot.jpg").read_bytes()[:3000])
    bad = run_cli("eval", V1_EMBED, ds, "--gallery-per-class", "2", "--quiet")
    assert bad.returncode == 2 and "0.jpg" in bad.stderr and "(or --skip-bad leaves such pictures out)" in bad.stderr
    r2 = json.loads(run_cli("eval", V1_EMBED, ds, "--gallery-per-class", "2", "--json", "--quiet", "--skip-bad",
                            check=True).stdout)
    assert [s["image"] for s in r2["skipped"]] == [str(cut)]
    # the split is made again without it: obj01 enrols its next picture, every figure as without the file
    same = ("classes", "gallery_size", "queries", "recall@1", "recall@5", "open_set")
    assert {key: r2[key] for key in same} == {key: r[key] for key in same}
    # enrolling the same folder gives the classes eval measured (it said "under 7 labels" for 6)
    e = json.loads(run_cli("enroll", "--model", V1_EMBED, "--gallery", tmp_path / "g", ds, "--skip-bad", "--json",
                           "--quiet", check=True).stdout)
    assert len(e["labels"]) == r["classes"] == 6


def test_eval_never_counts_a_query_without_a_face_as_found(tmp_path):
    """Face mode, 3 people: a query with no face is a miss at every rank (recall@5 counted it a hit whenever there
    were 5 classes or fewer), and the text says how many pictures had no face."""
    ds = tmp_path / "people"
    for person in ("s1", "s2", "s3"):
        (ds / person).mkdir(parents=True)
        for k in (1, 2, 3, 4):
            shutil.copy(DATA / "orl-faces" / person / f"{k}.pgm", ds / person / f"{k}.pgm")
    for person, obj in (("s1", "obj01"), ("s2", "obj02")):  # a picture of an object filed under a person
        shutil.copy(DATA / "coil20" / obj / "000.png", ds / person / "9.png")
    face = REPO / "models" / "dlib_face_resnet_v1_int8.tflite"
    r = json.loads(run_cli("eval", face, ds, "--json", "--quiet", check=True).stdout)
    assert r["no_face"] == 2 and r["queries"] == 3 * 3 + 2
    assert r["recall@5"] == round(9 / 11, 6) and r["recall@1"] <= r["recall@5"]
    text = run_cli("eval", face, ds, "--quiet", check=True).stdout
    assert "note: no face found in 2 of 14 pictures" in text


def test_an_interrupted_command_without_a_gallery_does_not_speak_of_one():
    """Ctrl-C in eval said "the gallery is as it was": the gallery module is imported by every command, so being
    imported is not having a gallery; having opened one is."""
    code = ("import edgeembed.recognizer, edgeembed.gallery as g; from edgeembed.cli import _interrupted_line; "
            "print(_interrupted_line()); g.GALLERY_OPENED = True; print(_interrupted_line())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["interrupted; nothing half-written was kept",
                   "interrupted before any gallery change: the gallery is as it was; nothing half-written was kept"]
