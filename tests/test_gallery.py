"""The gallery: search, editing, model binding, and atomic enrolment under SIGKILL."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, REPO, V1_EMBED, V1_TINY, run_cli
from edgeembed import Embedder
from edgeembed.errors import GalleryError
from edgeembed.gallery import Gallery, ModelBinding
from edgeembed.recognizer import binding_for


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _binding(dim=8, fp="abc"):
    return ModelBinding(model_path="/m.tflite", fingerprint=fp, dim=dim, preprocessing={})


def test_search_edit_and_reopen(tmp_path):
    rng = np.random.default_rng(0)
    g = Gallery.create(tmp_path / "g", _binding())
    v = _unit(rng, 6, 8)
    ids = g.add(["a", "a", "b", "b", "c", "c"], v, [f"s{i}" for i in range(6)])
    assert len(g) == 6 and g.labels() == {"a": 2, "b": 2, "c": 2}
    m = g.search(v[3], k=2)
    assert m[0].label == "b" and m[0].score == pytest.approx(1.0) and m[0].entry_id == ids[3]
    assert len(m) == 2 and m[1].label != "b"
    r = g.recognize(-v[3], threshold=0.99)
    assert r.label is None and not r.known  # below the threshold: unknown
    g.rename("a", "a")  # onto itself: nothing changes (it used to drop the label and orphan its entries)
    assert g.labels() == {"a": 2, "b": 2, "c": 2}
    g.rename("a", "alpha")
    g.rename("c", "b")  # merge
    assert g.labels() == {"alpha": 2, "b": 4}
    assert g.remove_label("alpha") == 2
    g.remove_entry(ids[2])
    assert g.compact() == 3
    g.close()
    with Gallery.open(tmp_path / "g") as g2:
        assert g2.labels() == {"b": 3}
        assert g2.search(v[4])[0].score == pytest.approx(1.0)  # vectors follow their entries through compaction
        with pytest.raises(GalleryError, match="not in gallery"):
            g2.remove_label("zzz")


def test_refuses_another_model(tmp_path):
    g = Gallery.create(tmp_path / "g", _binding(fp="one"))
    with pytest.raises(GalleryError, match="was built with model /m.tflite .* that file has changed since"):
        g.check_binding(_binding(fp="two"))  # the same path, other bytes: an upgraded model file
    other = ModelBinding(model_path="/other.tflite", fingerprint="two", dim=8, preprocessing={})
    with pytest.raises(GalleryError, match="was built with model .* but model /other.tflite .* was given"):
        g.check_binding(other)
    with pytest.raises(GalleryError, match="already exists"):
        Gallery.create(tmp_path / "g", _binding())
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "gallery.sqlite").write_text("garbage" * 100)
    with pytest.raises(GalleryError, match="not a readable gallery"):
        Gallery.open(tmp_path / "broken")


def test_rows_of_an_uncommitted_enrolment_are_ignored(tmp_path):
    """A process killed between appending vectors and committing leaves them invisible."""
    rng = np.random.default_rng(1)
    g = Gallery.create(tmp_path / "g", _binding())
    g.add(["a"] * 3, _unit(rng, 3, 8))
    g.close()
    script = f"""
import os, signal, sqlite3, numpy as np
from edgeembed.gallery import Gallery
g = Gallery.open({str(tmp_path / 'g')!r})
class Dying:
    def __init__(self, db): self.db = db
    def __enter__(self): return self.db.__enter__()
    def __exit__(self, *a): os.kill(os.getpid(), signal.SIGKILL)  # die right before COMMIT
    def __getattr__(self, n): return getattr(self.db, n)
g._db = Dying(g._db)
g.add(["b"] * 5, np.ones((5, 8), np.float32) / np.sqrt(8))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / "g" / "vectors.f32").stat().st_size == 8 * 4 * 8  # the 5 rows did reach the file
    with Gallery.open(tmp_path / "g") as g:
        assert len(g) == 3 and g.labels() == {"a": 3} and len(g.matrix) == 3
        g.add(["c"], _unit(rng, 1, 8))  # the next write cuts the dead rows off
        assert (tmp_path / "g" / "vectors.f32").stat().st_size == 4 * 4 * 8
        assert g.labels() == {"a": 3, "c": 1}


def _link_images(src: Path, dst: Path, names: list[str], label_of) -> None:
    for n in names:
        d = dst / label_of(n)
        d.mkdir(parents=True, exist_ok=True)
        os.symlink(src / n, d / n)


def _enrolment_reaching(gal, folder, fraction: float) -> subprocess.Popen:
    """Start `edgeembed enroll` and return once its progress lines report ``fraction`` of the pictures embedded.

    Waiting on the progress (not on a clock) puts the interruption at the same point on any machine.
    """
    # Ctrl-C as in a terminal: a test runner started in the background (CI, nohup, `cmd &`) passes on an
    # ignored SIGINT, and Python keeps ignoring it.
    proc = subprocess.Popen([sys.executable, "-m", "edgeembed.cli", "enroll", "--gallery", str(gal), str(folder)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stderr:
        m = re.search(r"\] (\d+)/(\d+) ", line)
        if m and int(m[1]) >= fraction * int(m[2]):
            return proc
    raise AssertionError(f"the enrolment ended (exit {proc.wait()}) before {fraction:.0%} of its pictures")


def test_imagenet_gallery_survives_sigkill_of_second_enrolment(tmp_path):
    """1000 images enrolled in one go; a second enrolment killed or interrupted half way changes nothing."""
    import json

    src = DATA / "imagenet-sample"
    names = sorted(os.listdir(src))
    assert len(names) == 1000
    first, second = tmp_path / "first", tmp_path / "second"
    _link_images(src, first, names, lambda n: n.split("_", 1)[1].rsplit(".", 1)[0])
    _link_images(src, second, names[:600], lambda n: "again_" + n.split("_", 1)[0])
    gal = tmp_path / "gallery"
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal, first, "--quiet", check=True)
    before = run_cli("gallery", "list", "--gallery", gal, "--json", check=True).stdout
    # SIGKILL a quarter of the way through the embedding: nothing of it is in the gallery.
    proc = _enrolment_reaching(gal, second, 0.25)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert run_cli("gallery", "list", "--gallery", gal, "--json", check=True).stdout == before
    # Ctrl-C at the same point: one line saying nothing was written (no gallery write had begun), exit 130,
    # gallery unchanged.
    proc = _enrolment_reaching(gal, second, 0.25)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "before any gallery change: the gallery is as it was" in err and "Traceback" not in err
    assert run_cli("gallery", "list", "--gallery", gal, "--json", check=True).stdout == before
    assert json.loads(before)["entries"] == 1000
    # SIGKILL once every picture is embedded, around the write: all of the enrolment or none of it.
    proc = _enrolment_reaching(gal, second, 1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    after = json.loads(run_cli("gallery", "list", "--gallery", gal, "--json", check=True).stdout)
    old = json.loads(before)
    if after != old:
        assert after["entries"] == 1600
        assert {k: v for k, v in after["labels"].items() if not k.startswith("again_")} == old["labels"]
        assert sum(v for k, v in after["labels"].items() if k.startswith("again_")) == 600
    # and the gallery still takes an enrolment
    run_cli("enroll", "--gallery", gal, first / names[0].split("_", 1)[1].rsplit(".", 1)[0], "--label", "one_more",
            "--quiet", check=True)
    assert json.loads(run_cli("gallery", "list", "--gallery", gal, "--json", check=True).stdout)["entries"] == after["entries"] + 1


def test_a_damaged_vector_file_is_refused_not_padded(tmp_path):
    """A vector file cut short or lost: enrolling more is refused with the gallery untouched (writing would
    pad the gap with zeros and give wrong answers from then on); compaction refuses it too."""
    rng = np.random.default_rng(2)
    g = Gallery.create(tmp_path / "g", _binding())
    g.add(["a", "b", "c"], _unit(rng, 3, 8))
    g.remove_label("c")
    g.close()
    vec = tmp_path / "g" / "vectors.f32"
    for damage in ("short", "missing"):
        vec.write_bytes(vec.read_bytes()[:40]) if damage == "short" else vec.unlink()
        db_before = (tmp_path / "g" / "gallery.sqlite").read_bytes()
        with Gallery.open(tmp_path / "g") as g:
            for action in (lambda: g.add(["d"], _unit(rng, 1, 8)), g.compact, lambda: g.matrix):
                with pytest.raises(GalleryError, match="committed rows: the gallery is damaged; restore"):
                    action()
        assert (tmp_path / "g" / "gallery.sqlite").read_bytes() == db_before
        assert (vec.stat().st_size == 40) if damage == "short" else not vec.exists()


def test_a_database_damaged_past_its_first_page_is_refused_on_open(tmp_path):
    """Damage in the entries or labels tables (not only in meta) is found when the gallery opens, instead of
    a traceback later or, worse, a listing of 0 labels and enrolments into a broken database."""
    rng = np.random.default_rng(3)
    g = Gallery.create(tmp_path / "g", _binding())
    g.add([f"label_{i}" for i in range(300)], _unit(rng, 300, 8), [f"/some/long/source/path/{i}.jpg" for i in range(300)])
    g.close()
    db = tmp_path / "g" / "gallery.sqlite"
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) >= 6 * page
    for i in range(3 * page + 8, 4 * page):  # a page past meta's
        data[i] = (i * 7) & 0xFF
    db.write_bytes(bytes(data))
    with pytest.raises(GalleryError, match="not a readable gallery database .*restore it from a backup"):
        Gallery.open(tmp_path / "g")


def _enrolments_waiting_on_the_lock(gal: Path, folders: list[Path], pictures: int) -> list[str]:
    """`enroll` of each folder into ``gal`` at once, held up by a third connection holding the write lock (as
    another enrolment committing on slow storage) until every one has embedded its ``pictures`` (its progress
    line says so); then released together. Their outputs, each checked to exit 0."""
    import sqlite3
    import time

    holder = sqlite3.connect(gal / "gallery.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    procs = [subprocess.Popen([sys.executable, "-m", "edgeembed.cli", "enroll", "--gallery", str(gal), str(f)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for f in folders]
    seen: dict = {proc: [] for proc in procs}
    for proc in procs:  # every one has embedded its pictures and now waits for the lock
        for line in proc.stderr:
            seen[proc].append(line)
            if re.search(rf"\] {pictures}/{pictures} ", line):
                break
    time.sleep(1.0)
    holder.execute("ROLLBACK")
    holder.close()
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, "".join(seen[proc]) + err
        outs.append(out)
    return outs


def test_two_enrolments_at_once_keep_every_entry_with_its_own_vector(tmp_path):
    """Two `enroll` processes writing to one gallery at the same moment (held up by a third holding the write
    lock, as slow storage would): both commit, one after the other, and every entry keeps its own vector."""
    import json
    import shutil

    gal = tmp_path / "gal"
    folders = {}
    for name, objs in (("seed", ("obj01", "obj02")), ("a", ("obj03", "obj04")), ("b", ("obj05", "obj06"))):
        for obj in objs:
            (tmp_path / name / obj).mkdir(parents=True)
            for view in range(0, 72, 12) if name == "seed" else range(0, 60, 2):  # 60 pictures: progress lines
                shutil.copyfile(DATA / "coil20" / obj / f"{view:03d}.png", tmp_path / name / obj / f"{view:03d}.png")
        folders[name] = tmp_path / name
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal, folders["seed"], "--quiet", check=True)
    _enrolments_waiting_on_the_lock(gal, [folders["a"], folders["b"]], 60)
    with Gallery.open(gal) as g, Embedder.create_from_model_path(V1_EMBED, num_threads=1) as emb:
        entries = g.entries()
        assert len(entries) == 132 and set(g.labels()) == {f"obj0{i}" for i in range(1, 7)}
        rows = dict(g._db.execute("SELECT id, row FROM entries"))
        stored = np.fromfile(gal / "vectors.f32", "<f4").reshape(-1, g.binding.dim)
        for e in entries:
            assert np.allclose(stored[rows[e["id"]]], emb.embed(e["source"]).vector, atol=1e-6), e
        assert g.threshold == json.loads(run_cli("gallery", "list", "--gallery", gal, "--json").stdout)["threshold"]


def test_binding_from_real_embedder(tmp_path):
    with Embedder.create_from_model_path(V1_TINY, num_threads=1) as emb:
        b = binding_for(emb)
        assert b.dim == 1001 and b.fingerprint == emb.fingerprint and Path(b.model_path).is_absolute()


def _copy_of_shipped_model_and_two_labels(tmp_path, model=None, source="mobilenet_v2_1.0_224_int8.tflite"):
    """The shipped model ``source`` copied to ``model`` (default tmp_path/model.tflite: a path the test may
    replace) and a folder of two labelled pictures: (shipped file, copy, folder)."""
    import shutil

    shipped = REPO / "models" / source
    model = Path(model or tmp_path / "model.tflite")
    model.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shipped, model)
    objects = tmp_path / "objects"
    for label, name in (("cat", "cat.bmp"), ("parrot", "parrot.jpg")):
        (objects / label).mkdir(parents=True)
        shutil.copyfile(DATA / "coral-images" / name, objects / label / name)
    return shipped, model, objects


def test_replaced_model_file_that_embeds_the_same_keeps_the_gallery(tmp_path):
    """An upgraded model file whose bytes changed but whose embeddings did not (new metadata, other edges)
    keeps the gallery working; one that embeds differently is still refused, and nothing is lost."""
    import shutil

    from edgeembed.tflite_file import read_tflite, write_metadata

    shipped, model, objects = _copy_of_shipped_model_and_two_labels(tmp_path)
    gal = tmp_path / "gal"
    assert run_cli("enroll", "--model", model, "--gallery", gal, objects, "--quiet").returncode == 0
    first = Gallery.open(gal)
    fp0, behaviour = first.binding.fingerprint, first.meta["behaviour"]
    first.close()

    # Same graph, one more metadata entry: other bytes, other fingerprint, the same embeddings.
    data = shipped.read_bytes()
    model.write_bytes(write_metadata(data, {"note": b"re-released"}, model.name))
    assert "note" in read_tflite(model.read_bytes()).metadata
    proc = run_cli("recognize", "--gallery", gal, "--source", DATA / "coral-images" / "parrot.jpg", "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"label": "parrot"' in proc.stdout
    g = Gallery.open(gal)
    assert g.binding.fingerprint != fp0 and g.meta["behaviour"] == behaviour and len(g) == 2
    assert [r["from"] for r in g.meta["rebinds"]] == [fp0]
    assert g.meta["behaviour_probes"]  # the probe embeddings themselves, for another backend's last digits
    g.close()

    # The same file run by another backend (tflite-runtime) embeds the probes within cosine 0.998, never bit for bit:
    # the hash then differs, and the probe embeddings the gallery kept decide (here the hash is what another backend
    # would have stored; the file is re-released once more)
    import sqlite3

    with sqlite3.connect(gal / "gallery.sqlite") as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'behaviour'", (json.dumps("0" * 20),))
    model.write_bytes(write_metadata(data, {"note": b"re-released again"}, model.name))
    proc = run_cli("recognize", "--gallery", gal, "--source", DATA / "coral-images" / "parrot.jpg", "--json")
    assert proc.returncode == 0 and '"label": "parrot"' in proc.stdout, proc.stderr
    with sqlite3.connect(gal / "gallery.sqlite") as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'behaviour'", (json.dumps(behaviour),))

    # Another model of the same dimension at that path embeds differently: refused as before, gallery intact.
    shutil.copyfile(REPO / "models" / "efficientnet_lite0_int8.tflite", model)
    proc = run_cli("recognize", "--gallery", gal, "--source", DATA / "coral-images" / "parrot.jpg", "--json")
    assert proc.returncode != 0 and "that file has changed since" in proc.stderr
    g = Gallery.open(gal)
    assert len(g) == 2 and g.meta["behaviour"] == behaviour
    g.close()

    # A model of another dimension at that path: the message says the file was replaced, not "omit --model".
    shutil.copyfile(REPO / "models" / "dlib_face_resnet_v1_int8.tflite", model)
    proc = run_cli("recognize", "--gallery", gal, "--source", DATA / "coral-images" / "parrot.jpg", "--json")
    assert proc.returncode == 2 and "replaced by a 128-d model" in proc.stderr and "omit --model" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    g = Gallery.open(gal)
    assert len(g) == 2 and g.binding.dim == 1280
    g.close()


def test_gallery_of_an_earlier_shipped_file_survives_the_upgrade(tmp_path):
    """A gallery enrolled with the MobileNetV2 file shipped before (commit 9de198b: same int8 graph, int8
    edges) stores that file's fingerprint and no behaviour value (older code). After the upgrade replaces the
    file at its path, the gallery keeps working and is re-bound; an unknown old fingerprint is still refused."""
    import json
    import sqlite3

    _, model, objects = _copy_of_shipped_model_and_two_labels(tmp_path)
    vectors = {}
    for old_fp in ("9740a3f74eabe7dd7fa1", "0123456789abcdef0123"):  # the earlier shipped file's, an unknown one
        gal = tmp_path / f"gal_{old_fp}"
        assert run_cli("enroll", "--model", model, "--gallery", gal, objects, "--quiet").returncode == 0
        # what the older code wrote: that file's fingerprint, no behaviour value (the embeddings are identical)
        with sqlite3.connect(gal / "gallery.sqlite") as db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'fingerprint'", (json.dumps(old_fp),))
            db.execute("DELETE FROM meta WHERE key IN ('behaviour', 'behaviour_probes')")
        db.close()
        vectors[old_fp] = (gal / "vectors.f32").read_bytes()

    known = tmp_path / "gal_9740a3f74eabe7dd7fa1"
    proc = run_cli("recognize", "--gallery", known, "--source", DATA / "coral-images" / "parrot.jpg", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["label"] == "parrot"
    with Embedder.create_from_model_path(model, num_threads=1) as emb:
        today = emb.behaviour_fingerprint()
    g = Gallery.open(known)
    assert g.binding.fingerprint != "9740a3f74eabe7dd7fa1" and g.meta["behaviour"] == today
    assert [r["from"] for r in g.meta["rebinds"]] == ["9740a3f74eabe7dd7fa1"] and len(g) == 2
    g.close()
    assert (known / "vectors.f32").read_bytes() == vectors["9740a3f74eabe7dd7fa1"]

    unknown = tmp_path / "gal_0123456789abcdef0123"
    proc = run_cli("recognize", "--gallery", unknown, "--source", DATA / "coral-images" / "parrot.jpg", "--json")
    assert proc.returncode == 2 and "that file has changed since" in proc.stderr
    assert "put the original model file back" in proc.stderr
    g = Gallery.open(unknown)
    assert g.binding.fingerprint == "0123456789abcdef0123" and "behaviour" not in g.meta
    g.close()
    assert (unknown / "vectors.f32").read_bytes() == vectors["0123456789abcdef0123"]


def test_gallery_follows_its_model_when_the_file_moves(tmp_path):
    """The gallery's model file moved (a new install, another disk): one --model with the same file re-binds
    the gallery to the new path, after which it needs no --model; another model is still refused, and nothing
    stored changes."""
    import json
    import shutil

    _, model, objects = _copy_of_shipped_model_and_two_labels(tmp_path, tmp_path / "old" / "model.tflite")
    gal = tmp_path / "gal"
    assert run_cli("enroll", "--model", model, "--gallery", gal, objects, "--quiet").returncode == 0
    vectors = (gal / "vectors.f32").read_bytes()
    moved = tmp_path / "new" / "model.tflite"
    moved.parent.mkdir()
    shutil.move(model, moved)
    parrot = DATA / "coral-images" / "parrot.jpg"

    proc = run_cli("recognize", "--gallery", gal, "--source", parrot, "--json")
    assert proc.returncode == 2 and "no longer there" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

    # another model of the same dimension, the gallery's own path gone: refused, with a fix that fits
    lite0 = tmp_path / "lite0.tflite"
    shutil.copyfile(REPO / "models" / "efficientnet_lite0_int8.tflite", lite0)
    proc = run_cli("recognize", "--gallery", gal, "--model", lite0, "--source", parrot, "--json")
    assert proc.returncode == 2 and "a copy of the gallery's own model" in proc.stderr and "omit --model" not in proc.stderr
    g = Gallery.open(gal)
    assert g.binding.model_path == str(model.resolve()) and "rebinds" not in g.meta
    g.close()

    proc = run_cli("recognize", "--gallery", gal, "--model", moved, "--source", parrot, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["label"] == "parrot"
    g = Gallery.open(gal)
    assert g.binding.model_path == str(moved.resolve()) and len(g) == 2
    assert g.meta["rebinds"][-1]["from_path"] == str(model.resolve())
    assert g.meta["rebinds"][-1]["from"] == g.meta["rebinds"][-1]["to"] == g.binding.fingerprint
    g.close()
    proc = run_cli("recognize", "--gallery", gal, "--source", parrot, "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["label"] == "parrot", proc.stderr
    assert (gal / "vectors.f32").read_bytes() == vectors


def test_gallery_finds_the_shipped_model_after_a_reinstall(tmp_path):
    """A gallery enrolled with a shipped model in an install that is gone (the old venv or clone deleted)
    finds the shipped file of the same name in this install and re-binds to it; a file of that name that
    embeds differently is refused in one line, and the gallery is left as it was."""
    import json
    import shutil

    name = "mobilenet_v2_1.0_224_int8.tflite"
    parrot = DATA / "coral-images" / "parrot.jpg"
    _, model, objects = _copy_of_shipped_model_and_two_labels(tmp_path, tmp_path / "old_venv" / name)
    gal = tmp_path / "gal"
    assert run_cli("enroll", "--model", model, "--gallery", gal, objects, "--quiet").returncode == 0
    shutil.rmtree(model.parent)
    proc = run_cli("recognize", "--gallery", gal, "--source", parrot, "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["label"] == "parrot", proc.stderr
    g = Gallery.open(gal)
    assert g.binding.model_path == str((REPO / "models" / name).resolve()) and len(g) == 2
    g.close()

    # an old install's file of that name that is another model (Lite0, also 1280-d)
    _, other, _ = _copy_of_shipped_model_and_two_labels(tmp_path / "b", tmp_path / "older_venv" / name,
                                                        source="efficientnet_lite0_int8.tflite")
    gal2 = tmp_path / "gal2"
    assert run_cli("enroll", "--model", other, "--gallery", gal2, objects, "--quiet").returncode == 0
    vectors = (gal2 / "vectors.f32").read_bytes()
    shutil.rmtree(other.parent)
    proc = run_cli("recognize", "--gallery", gal2, "--source", parrot, "--json")
    assert proc.returncode == 2 and "computes other embeddings" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    g = Gallery.open(gal2)
    assert g.binding.model_path == str(other.resolve()) and "rebinds" not in g.meta and len(g) == 2
    g.close()
    assert (gal2 / "vectors.f32").read_bytes() == vectors


def test_a_gallery_of_an_earlier_shipped_file_that_embeds_otherwise_is_told_how_to_get_it_back(tmp_path):
    """A gallery enrolled with the first shipped MobileNetV2 (commit 3a5bfcf: centre crop, another int8 graph)
    whose file a git pull replaced: the refusal gives the git command that brings that file back, and following it
    recognizes from the gallery as before. Needs the repository's history (a clone has it)."""
    import json
    import subprocess

    old = subprocess.run(["git", "-C", str(REPO), "show", "3a5bfcf:models/mobilenet_v2_1.0_224_int8.tflite"],
                         capture_output=True)
    if old.returncode != 0:
        pytest.skip("no git history here (a shallow clone or an installed copy)")
    _, model, objects = _copy_of_shipped_model_and_two_labels(tmp_path)
    model.write_bytes(old.stdout)
    gal = tmp_path / "gal"
    assert run_cli("enroll", "--model", model, "--gallery", gal, objects, "--quiet").returncode == 0
    shutil.copyfile(REPO / "models" / "mobilenet_v2_1.0_224_int8.tflite", model)  # the pull replaces the file
    vectors = (gal / "vectors.f32").read_bytes()
    proc = run_cli("recognize", "--gallery", gal, "--source", DATA / "coral-images" / "parrot.jpg", "--json")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    command = f"git -C {REPO} show 3a5bfcf:models/mobilenet_v2_1.0_224_int8.tflite > mobilenet_v2_1.0_224_int8-3a5bfcf.tflite"
    assert "as edgeembed shipped it at commit 3a5bfcf" in proc.stderr and f"`{command}`" in proc.stderr
    assert "--model mobilenet_v2_1.0_224_int8-3a5bfcf.tflite" in proc.stderr
    assert (gal / "vectors.f32").read_bytes() == vectors
    listed = run_cli("gallery", "list", "--gallery", gal)  # says so before a command that embeds is run
    assert listed.returncode == 0 and f"note: the model file this gallery was enrolled with ({model.resolve()}) " \
        "has changed since" in listed.stderr
    subprocess.run(command, shell=True, cwd=tmp_path, check=True)
    proc = run_cli("recognize", "--gallery", gal, "--model", tmp_path / "mobilenet_v2_1.0_224_int8-3a5bfcf.tflite",
                   "--source", DATA / "coral-images" / "parrot.jpg", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["label"] == "parrot" and r["score"] > 0.99
    # the gallery follows its own file to where it was brought back (its own path holds another file now), so the
    # next command needs no --model
    g = Gallery.open(gal)
    assert g.binding.model_path == str((tmp_path / "mobilenet_v2_1.0_224_int8-3a5bfcf.tflite").resolve())
    assert g.meta["rebinds"][-1]["from_path"] == str(model.resolve())
    g.close()
    proc = run_cli("recognize", "--gallery", gal, "--source", DATA / "coral-images" / "parrot.jpg", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["label"] == "parrot", proc.stderr
    assert (gal / "vectors.f32").read_bytes() == vectors
    listed = run_cli("gallery", "list", "--gallery", gal, "--json")
    assert json.loads(listed.stdout)["model_file"] == "same" and "note:" not in listed.stderr
    (tmp_path / "mobilenet_v2_1.0_224_int8-3a5bfcf.tflite").unlink()
    assert json.loads(run_cli("gallery", "list", "--gallery", gal, "--json").stdout)["model_file"] == "missing"


@pytest.mark.parametrize("name, earlier", [("mobilenet_v2_1.0_224_int8.tflite", "9740a3f74eabe7dd7fa1"),
                                           ("mobilenet_v2_1.0_224_int8.tflite", "007e1be22558023011b0"),
                                           ("efficientnet_lite0_int8.tflite", "ec4af7cba4fd7d6ef265"),
                                           ("efficientnet_lite0_int8.tflite", "3e9f0a903d7bd6d05bf3"),
                                           ("dlib_face_resnet_v1_int8.tflite", "3401fe45b0b2999dbd95"),
                                           ("dlib_face_resnet_v1_int8.tflite", "317363fea6b13f38288d")])
def test_earlier_shipped_files_name_what_todays_files_compute(name, earlier):
    """The table of earlier shipped files points at the behaviour of today's file of the same name: a
    reconversion that changes the embeddings must also change the table (or empty it). Every earlier file is in
    one table or the other, never both."""
    from edgeembed.shipped import EARLIER_SHIPPED_BEHAVIOUR, EARLIER_SHIPPED_FILES

    with Embedder.create_from_model_path(REPO / "models" / name, num_threads=1) as emb:
        today = emb.behaviour_fingerprint()
    assert EARLIER_SHIPPED_BEHAVIOUR[earlier] == today
    assert len(EARLIER_SHIPPED_BEHAVIOUR) == 6 and not set(EARLIER_SHIPPED_BEHAVIOUR) & set(EARLIER_SHIPPED_FILES)
    assert {name for _, name in EARLIER_SHIPPED_FILES.values()} == {p.name for p in (REPO / "models").glob("*.tflite")}


def test_a_running_reader_follows_enrolments_and_removals_by_other_processes(tmp_path):
    """A recognizer that keeps its gallery open (a camera running for days) sees a person enrolled or removed
    by another process from its next search on: removal matters for privacy, enrolment for use."""
    import threading

    coil = DATA / "coil20"
    g_path = tmp_path / "g"
    p = run_cli("enroll", "--model", V1_EMBED, "--gallery", g_path, "--label", "obj01",
                *sorted((coil / "obj01").iterdir())[:4], "--quiet")
    assert p.returncode == 0, p.stderr
    with Embedder.create_from_model_path(V1_EMBED, num_threads=1) as emb:
        q1 = emb.embed(sorted((coil / "obj01").iterdir())[36])
        q2 = emb.embed(sorted((coil / "obj02").iterdir())[36])
    reader = Gallery.open(g_path)  # opened on this thread, searched from another (a pipeline's worker)
    answers: list = []
    t = threading.Thread(target=lambda: answers.append(reader.recognize(q1)))
    t.start()
    t.join()
    assert answers[0].label == "obj01"
    assert reader.recognize(q2).label != "obj02"
    before = reader.threshold
    p = run_cli("enroll", "--gallery", g_path, "--label", "obj02", *sorted((coil / "obj02").iterdir())[:4], "--quiet")
    assert p.returncode == 0, p.stderr
    assert reader.recognize(q2).label == "obj02"  # no reopening
    assert reader.threshold != before and reader.threshold == Gallery.open(g_path).threshold  # the re-derived one
    p = run_cli("gallery", "remove", "--gallery", g_path, "obj01")
    assert p.returncode == 0, p.stderr
    r = reader.recognize(q1)
    assert r.label != "obj01" and all(m.label != "obj01" for m in r.matches)
    p = run_cli("gallery", "compact", "--gallery", g_path)  # switches vector files under the reader
    assert p.returncode == 0, p.stderr
    assert reader.recognize(q2).label == "obj02" and len(reader) == 4
    reader.close()


def test_labels_are_one_spelling_and_vectors_are_checked(tmp_path):
    """A name typed (composed) and the same name from a Mac folder (decomposed) are one label; vectors that
    cannot be compared (NaN, zero) are refused, and a query's length does not change its score."""
    import unicodedata

    from edgeembed.errors import InputError

    rng = np.random.default_rng(1)
    v = _unit(rng, 4, 8)
    g = Gallery.create(tmp_path / "g", _binding())
    typed, from_mac = "Zoë Müller", unicodedata.normalize("NFD", "Zoë Müller ")
    assert typed != from_mac.strip()
    g.add([typed, from_mac, "b", "b"], v)
    assert g.labels() == {typed: 2, "b": 2}
    assert len(g.entries(from_mac.strip())) == 2
    assert g.search(v[0] * 50)[0].score == pytest.approx(1.0)  # not 50
    g.add(["c"], v[2:3] * 3)  # stored with unit length
    assert g.search(v[2])[0].score == pytest.approx(1.0)
    bad = v[:1].copy()
    bad[0, 3] = np.nan
    for call, match in ((lambda: g.add(["d"], bad), "NaN"), (lambda: g.add(["d"], np.zeros((1, 8))), "all-zero"),
                        (lambda: g.recognize(bad[0]), "NaN"), (lambda: g.recognize(v[0], k=0), "k must be"),
                        (lambda: g.recognize(v[0], threshold=float("nan")), "threshold"),
                        (lambda: g.add(["d", "e"], v[:1]), r"must be \(2, 8\)")):
        with pytest.raises(InputError, match=match):
            call()
    assert len(g) == 5
    assert g.remove_label(from_mac) == 2 and g.labels() == {"b": 2, "c": 1}
    g.close()
    # a gallery written before labels were normalised: its spelling is kept, not doubled by a typed one
    old = Gallery.create(tmp_path / "old", _binding())
    old.add(["b"], v[1:2])
    with old._db:
        old._db.execute("INSERT INTO labels(name, created) VALUES (?, 0)", (from_mac.strip(),))
        old._db.execute("UPDATE entries SET label_id = (SELECT id FROM labels WHERE name = ?)", (from_mac.strip(),))
        old._db.execute("DELETE FROM labels WHERE name = 'b'")
    old.add([typed, "b"], v[[0, 3]])
    assert old.labels() == {from_mac.strip(): 2, "b": 1}
    # ... and it is found by the name as typed (list shows "Zoë Müller"; rename and remove said it was not there)
    assert old.rename(typed, "Zoe") == "renamed" and old.labels() == {"Zoe": 2, "b": 1}
    old.close()
    # entries stored unnormalised (an Embedder with l2_normalize=False, before vectors were checked) are
    # compared by direction like the rest
    vec_file = tmp_path / "old" / "vectors.f32"
    raw = np.fromfile(vec_file, "<f4") * 3.0
    raw.astype("<f4").tofile(vec_file)
    import sqlite3

    with sqlite3.connect(tmp_path / "old" / "gallery.sqlite") as db:  # that edgeembed recorded no last-row check
        db.execute("DELETE FROM meta WHERE key = 'last_row_check'")
    with Gallery.open(tmp_path / "old") as reopened:
        assert reopened.search(v[3])[0].score == pytest.approx(1.0, abs=1e-5)


def test_a_reload_is_one_snapshot_even_when_another_process_commits_in_the_middle(tmp_path, monkeypatch):
    """A reader reloading the gallery reads the row count, the vector file and the entries in one read
    transaction. Here another process tries to commit an enrolment right between the vector file and the
    entries: it has to wait, and the reader sees the gallery before or after it, never half of it (it was an
    IndexError: entries pointing past the vectors read)."""
    import time

    rng = np.random.default_rng(3)
    g_path = tmp_path / "g"
    v = _unit(rng, 6, 8)
    Gallery.create(g_path, _binding()).add(["a", "a", "b"], v[:3])
    reader = Gallery.open(g_path)
    assert reader.search(v[0])[0].label == "a"
    writer = subprocess.Popen([sys.executable, "-c", f"""
import sys, time, pathlib, numpy as np
sys.path.insert(0, {str(REPO)!r})
from edgeembed.gallery import Gallery
flag = pathlib.Path({str(tmp_path / "go")!r})
while not flag.exists():
    time.sleep(0.01)
g = Gallery.open({str(g_path)!r})
g.add(["c", "c", "c"], np.load({str(tmp_path / "v.npy")!r}))
g.close()
"""])
    np.save(tmp_path / "v.npy", v[3:])
    Gallery.open(g_path).add(["b"], v[5:6])  # a commit the reader has not seen: its next search reloads
    real_fromfile = np.fromfile

    def fromfile_then_let_the_writer_in(*args, **kwargs):
        out = real_fromfile(*args, **kwargs)
        (tmp_path / "go").touch()
        time.sleep(1.5)  # the other process's enrolment is ready to commit now
        return out

    monkeypatch.setattr(np, "fromfile", fromfile_then_let_the_writer_in)
    best = reader.search(v[5])[0]  # reloads: before the fix an IndexError
    monkeypatch.setattr(np, "fromfile", real_fromfile)
    assert best.label == "b" and best.score == pytest.approx(1.0)
    assert writer.wait(timeout=60) == 0
    assert reader.search(v[4])[0].label == "c" and reader.labels() == {"a": 2, "b": 2, "c": 3}
    reader.close()


def _coil_pictures(tmp_path, name, objs, views):
    import shutil

    for obj in objs:
        (tmp_path / name / obj).mkdir(parents=True)
        for view in views:
            shutil.copyfile(DATA / "coil20" / obj / f"{view:03d}.png", tmp_path / name / obj / f"{view:03d}.png")
    return tmp_path / name


def test_two_enrolments_creating_one_new_gallery_both_land(tmp_path):
    """Two `enroll` processes started together into a gallery that does not exist yet: one creates it, the other
    finds it and queues (each used to unlink the other's temporary database: one or both failed)."""
    a = _coil_pictures(tmp_path, "a", ("obj01",), range(0, 72, 6))
    b = _coil_pictures(tmp_path, "b", ("obj02",), range(0, 72, 6))
    for attempt in range(3):
        gal = tmp_path / f"gal{attempt}"
        procs = [subprocess.Popen([sys.executable, "-m", "edgeembed.cli", "enroll", "--model", str(V1_EMBED), "--gallery",
                                   str(gal), str(folder), "--quiet"], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for folder in (a, b)]
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
        with Gallery.open(gal) as g:
            assert g.labels() == {"obj01": 12, "obj02": 12}
        assert sorted(p.name for p in gal.iterdir()) == ["gallery.sqlite", "vectors.f32"]  # no temporary left


def test_one_folder_enrolled_twice_at_once_is_added_once(tmp_path):
    """Two `enroll` runs of the same folder waiting on the write lock together: the pictures already enrolled are
    checked under the lock, so the second skips them (it added them again, and the duplicates raised the threshold)."""
    gal = tmp_path / "gal"
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal, _coil_pictures(tmp_path, "seed", ("obj01", "obj02"),
                                                                         range(0, 72, 12)), "--quiet", check=True)
    pics = _coil_pictures(tmp_path, "p", ("obj03", "obj04"), range(0, 72, 2))  # 72: progress lines
    outs = _enrolments_waiting_on_the_lock(gal, [pics, pics], 72)
    reports = [int(re.search(r"enrolled (\d+) images?", out).group(1)) for out in outs]
    assert sorted(reports) == [0, 72], reports
    with Gallery.open(gal) as g:
        assert g.labels() == {"obj01": 6, "obj02": 6, "obj03": 36, "obj04": 36}


def test_a_gallery_whose_database_was_lost_is_not_overwritten(tmp_path):
    gal = tmp_path / "gal"
    pics = _coil_pictures(tmp_path, "p", ("obj01",), range(0, 72, 12))
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal, pics, "--quiet", check=True)
    vectors = (gal / "vectors.f32").read_bytes()
    (gal / "gallery.sqlite").rename(tmp_path / "elsewhere.sqlite")  # lost, or moved away by hand
    p = run_cli("enroll", "--model", V1_EMBED, "--gallery", gal, pics, "--quiet")
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "holds vectors.f32 but no gallery.sqlite" in p.stderr and "restore gallery.sqlite" in p.stderr
    assert (gal / "vectors.f32").read_bytes() == vectors and not (gal / "gallery.sqlite").exists()
    for args in (("gallery", "list", "--gallery", gal), ("recognize", "--gallery", gal, "--source", pics)):
        p = run_cli(*args)  # said the same way, not "no gallery at ...: create one with enroll" (which refuses)
        assert p.returncode == 2 and "holds vectors.f32 but no gallery.sqlite" in p.stderr, p.stderr


def test_a_damaged_vector_file_fails_list_and_compact_too(tmp_path):
    """`gallery list` and `gallery compact` exited 0 on a gallery whose vector file was gone, which every search
    and write refuses; list still shows the entries (what to enrol again from), then says so."""
    gal = tmp_path / "gal"
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal, _coil_pictures(tmp_path, "p", ("obj01",), range(0, 72, 12)),
            "--quiet", check=True)
    (gal / "vectors.f32").unlink()
    p = run_cli("gallery", "list", "--gallery", gal)
    assert p.returncode == 2 and "obj01: 6" in p.stdout and "vectors.f32 is missing" in p.stderr, p.stderr
    p = run_cli("gallery", "compact", "--gallery", gal)
    assert p.returncode == 2 and "vectors.f32 is missing" in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_a_creation_killed_before_its_rename_leaves_nothing_for_good(tmp_path):
    """A kill during a gallery's creation left its database copy (gallery.sqlite.<hex>.tmp, 32 KB) beside the
    gallery made by the next run, for good."""
    folder = tmp_path / "g"
    folder.mkdir()
    (folder / "gallery.sqlite.0a1b2c3d4e5f.tmp").write_bytes(b"\0" * 32768)  # what the kill left
    with Gallery.create(folder, _binding(dim=4)) as g:
        g.add(["a"], _unit(np.random.default_rng(6), 1, 4), [None])
    assert sorted(f.name for f in folder.iterdir()) == ["gallery.sqlite", "vectors.f32"]


def test_a_gallery_checked_after_another_process_compacted_it_is_not_called_damaged(tmp_path):
    """`gallery list` read the vector file's name as it was when the gallery was opened: a compaction committed
    by another process meanwhile made a healthy gallery 'damaged, restore from a backup'."""
    rng = np.random.default_rng(5)
    with Gallery.create(tmp_path / "g", _binding(dim=4)) as g:
        g.add(["a", "b", "c"], _unit(rng, 3, 4), [None] * 3)
    lister = Gallery.open(tmp_path / "g")
    assert lister.summary()["entries"] == 3
    with Gallery.open(tmp_path / "g") as other:
        other.remove_label("b")
        assert other.compact() == 1
    lister.check()
    assert lister.labels() == {"a": 1, "c": 1}
    lister.close()


def test_a_rebind_is_not_the_write_an_interrupted_command_reports(tmp_path):
    """A command that only re-binds a gallery to its moved model file, interrupted, said its 'gallery change was
    committed'."""
    import shutil

    from edgeembed import gallery as gallery_module
    from edgeembed.cli import _interrupted_line
    from edgeembed.recognizer import create_gallery, open_gallery_embedder

    model = tmp_path / "a.tflite"
    shutil.copy(V1_TINY, model)
    with Embedder.create_from_model_path(model, num_threads=1) as emb, create_gallery(tmp_path / "g", emb) as g:
        g.add(["owl"], [emb.embed(DATA / "coral-images" / "owl.jpg")])
    model.rename(tmp_path / "b.tflite")
    gallery_module.PENDING_WRITE = None
    with Gallery.open(tmp_path / "g") as g, open_gallery_embedder(g, tmp_path / "b.tflite", num_threads=1):
        assert Path(g.binding.model_path).name == "b.tflite"  # re-bound
    assert gallery_module.PENDING_WRITE is None and _interrupted_line() == \
        "interrupted before any gallery change: the gallery is as it was; nothing half-written was kept"


class _Interrupted:
    """A gallery's connection whose write transaction is interrupted at its end: after its commit went through
    (``committed``: Ctrl-C landing in the commit's last disk sync, which SQLite finishes before Python raises
    KeyboardInterrupt), or just before it (the transaction is rolled back)."""

    def __init__(self, db, committed: bool):
        self._real, self.committed = db, committed

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __enter__(self):
        return self._real.__enter__()

    def __exit__(self, *exc):
        if exc[0] is not None or not self._real.in_transaction:
            return self._real.__exit__(*exc)
        if self.committed:
            self._real.__exit__(None, None, None)
        else:
            self._real.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)
        raise KeyboardInterrupt


def test_an_interrupt_after_a_compaction_committed_keeps_its_vector_file(tmp_path):
    """Ctrl-C just after a compaction's commit deleted the new vector file the database now named: the gallery
    was lost ('vectors.<hex>.f32 is missing'). The command's last line now says whether the change went in."""
    from edgeembed import gallery as gallery_module
    from edgeembed.cli import _interrupted_line

    g = Gallery.create(tmp_path / "g", _binding(dim=4))
    rng = np.random.default_rng(3)
    g.add(["a", "b", "c"], _unit(rng, 3, 4), [None] * 3)
    g.remove_label("b")
    real = g._db
    g._db = _Interrupted(real, committed=True)
    with pytest.raises(KeyboardInterrupt):
        g.compact()
    g._db = real
    assert "was committed" in _interrupted_line() and gallery_module.last_write_committed() is True
    g.close()
    with Gallery.open(tmp_path / "g") as again:
        assert again.labels() == {"a": 1, "c": 1} and again.matrix.shape == (2, 4)
        assert (tmp_path / "g" / again.meta["vectors_file"]).exists()
    # interrupted before the commit: the gallery as it was, and said so
    g = Gallery.open(tmp_path / "g")
    real = g._db
    g._db = _Interrupted(real, committed=False)
    with pytest.raises(KeyboardInterrupt):
        g.add(["d"], _unit(rng, 1, 4), [None])
    g._db = real
    assert "not committed" in _interrupted_line() and gallery_module.last_write_committed() is False
    assert g.labels() == {"a": 1, "c": 1}
    g.close()


def test_compaction_never_names_its_copy_after_the_live_file_and_sweeps_old_copies(tmp_path, monkeypatch):
    """A board without a clock may give the same time at every boot: compaction once named its new file after the
    time and, at a repeat, wrote over and then deleted the live file. A copy left by a compaction killed before
    its commit (older than a minute) is removed by the next one."""
    import time

    monkeypatch.setattr(time, "time", lambda: 1700000000.123)  # the clock repeats
    g = Gallery.create(tmp_path / "g", _binding(dim=4))
    rng = np.random.default_rng(0)
    for round_ in range(3):
        g.add(["a", "b", "c"], rng.standard_normal((3, 4)).astype(np.float32), [None] * 3)
        g.remove_label("b")
        assert g.compact() == 1
    monkeypatch.undo()
    assert sorted(g.labels().items()) == [("a", 3), ("c", 3)] and g.matrix.shape == (6, 4)
    left = tmp_path / "g" / "vectors.0a1b2c3d4e5f.f32"  # as a compaction killed before its commit leaves it
    left.write_bytes(b"\0" * 64)
    g.add(["d"], rng.standard_normal((1, 4)).astype(np.float32), [None])
    g.remove_label("d")
    g.compact()
    assert not left.exists() and [f.name for f in (tmp_path / "g").glob("vectors*")] == [g.meta["vectors_file"]]
    assert g.matrix.shape == (6, 4)
    g.close()


def test_new_gallery_files_get_the_usual_permissions_and_older_writers_are_tolerated(tmp_path):
    """A recognizer running as another user reads the gallery: its files get the umask's permissions (temporary
    names made them 0600). A gallery enrolled into since by an earlier edgeembed (which does not record the
    vector file's check) keeps working."""
    import sqlite3
    import stat

    old_umask = os.umask(0o022)
    try:
        g = Gallery.create(tmp_path / "g", _binding(dim=4))
        rng = np.random.default_rng(1)
        g.add(["a", "b"], rng.standard_normal((2, 4)).astype(np.float32), [None] * 2)
        g.remove_label("b")
        g.compact()
    finally:
        os.umask(old_umask)
    for f in (tmp_path / "g").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    # ... inside a folder that is its owner's alone (faces are personal data): the owner lets others in, or not
    assert stat.S_IMODE((tmp_path / "g").stat().st_mode) == 0o700
    recorded = g._db.execute("SELECT value FROM meta WHERE key = 'last_row_check'").fetchone()[0]
    g.add(["c"], rng.standard_normal((1, 4)).astype(np.float32), [None])
    g.close()
    with sqlite3.connect(tmp_path / "g" / "gallery.sqlite") as db:  # what an earlier edgeembed's add leaves
        db.execute("UPDATE meta SET value = ? WHERE key = 'last_row_check'", (recorded,))
    with Gallery.open(tmp_path / "g") as again:
        assert again.labels() == {"a": 1, "c": 1} and again.matrix.shape == (2, 4)


@pytest.fixture
def full_disk(tmp_path):
    """A 2 MB tmpfs, as a full SD card: needs root and mount (CI here has both); skipped elsewhere."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({p.stderr.strip()})")
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_full_disk_says_so_and_keeps_the_gallery(tmp_path, full_disk):
    pics = _coil_pictures(tmp_path, "p", ("obj01", "obj02"), range(0, 72, 12))
    more = _coil_pictures(tmp_path, "more", ("obj03",), range(0, 72, 2))
    gal = full_disk / "g"
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal, pics, "--quiet", check=True)
    run_cli("gallery", "remove", "obj02", "--gallery", gal, check=True)  # its vectors erased: a new vector file
    vectors = next(gal.glob("vectors*.f32"))
    free = os.statvfs(full_disk).f_bavail * os.statvfs(full_disk).f_frsize
    (full_disk / "filler").write_bytes(b"\0" * max(0, free - 4096))
    size = vectors.stat().st_size
    p = run_cli("enroll", "--gallery", gal, more, "--quiet")
    assert p.returncode == 2 and "no space left" in p.stderr, p.stderr
    # the rows written before the disk filled are cut off again: they held the space the next removal needed
    assert vectors.stat().st_size == size
    for args in (("enroll", "--gallery", gal, more, "--quiet"), ("gallery", "compact", "--gallery", gal),
                 ("gallery", "rename", "obj01", "first", "--gallery", gal)):
        p = run_cli(*args)
        if p.returncode == 0:  # a write small enough to fit in the last block: nothing to report
            continue
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert "no space left on the device" in p.stderr and "damaged" not in p.stderr, p.stderr
    (full_disk / "filler").unlink()
    with Gallery.open(gal) as g:
        assert sum(g.labels().values()) == 6 and g.matrix.shape == (6, g.binding.dim)
    assert sorted(f.name for f in gal.iterdir()) == ["gallery.sqlite", vectors.name]  # no half-written copy


def test_another_gallerys_vector_file_is_refused(tmp_path):
    """A vector file copied over from another gallery (same model, as many rows or more) used to be read as this
    gallery's: every answer 'unknown', and an enrolment then re-derived the threshold from the wrong vectors."""
    mine, other = tmp_path / "mine", tmp_path / "other"
    run_cli("enroll", "--model", V1_EMBED, "--gallery", mine, _coil_pictures(tmp_path, "a", ("obj01",), range(0, 72, 12)),
            "--quiet", check=True)
    run_cli("enroll", "--model", V1_EMBED, "--gallery", other,
            _coil_pictures(tmp_path, "b", ("obj02", "obj03"), range(0, 72, 12)), "--quiet", check=True)
    before = (mine / "gallery.sqlite").read_bytes()
    (mine / "vectors.f32").write_bytes((other / "vectors.f32").read_bytes())
    for args in (("recognize", "--gallery", mine, "--source", DATA / "coil20" / "obj01" / "003.png"),
                 ("enroll", "--gallery", mine, tmp_path / "b", "--quiet")):
        p = run_cli(*args)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert "is not this gallery's vector file" in p.stderr
    assert (mine / "gallery.sqlite").read_bytes() == before
    # the refused enrolment left the foreign file as it was (a cleanup after failed adds once cut it to this
    # gallery's row count, destroying the file a user would recover from)
    assert (mine / "vectors.f32").read_bytes() == (other / "vectors.f32").read_bytes()
    # compaction keeps the record: a compacted gallery is checked as well
    run_cli("gallery", "remove", "obj02", "--gallery", other, check=True)
    run_cli("gallery", "compact", "--gallery", other, check=True)
    p = run_cli("recognize", "--gallery", other, "--source", DATA / "coil20" / "obj03" / "003.png", "--json", check=True)
    import json

    assert json.loads(p.stdout.splitlines()[0])["label"] == "obj03"


def test_a_compaction_stopped_before_its_sweep_never_removes_a_newer_live_file(tmp_path, monkeypatch):
    """A compaction held up between its commit and its clean-up (Ctrl-Z, a swapping board) while another process
    compacts again: the clean-up reads the live file's name under the write lock, so it removes the file it
    replaced, never the other compaction's new one (it used to keep the name it remembered)."""
    g = Gallery.create(tmp_path / "g", _binding(dim=4))
    rng = np.random.default_rng(2)
    g.add(["a", "b", "c"], rng.standard_normal((3, 4)).astype(np.float32), [None] * 3)
    g.remove_label("a")
    sweep = Gallery._sweep_vector_files

    def held_up(self):
        # meanwhile another process removes a label and compacts: a new live file
        code = ("from edgeembed.gallery import Gallery; g = Gallery.open(r'%s'); g.remove_label('b'); "
                "assert g.compact() == 1" % (tmp_path / "g"))
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
        for f in (tmp_path / "g").glob("vectors*.f32"):  # ... and this one stays stopped for two minutes
            os.utime(f, (f.stat().st_mtime - 120, f.stat().st_mtime - 120))
        sweep(self)

    monkeypatch.setattr(Gallery, "_sweep_vector_files", held_up)
    assert g.compact() == 1
    monkeypatch.undo()
    g.close()
    with Gallery.open(tmp_path / "g") as again:
        assert again.labels() == {"c": 1} and again.matrix.shape == (1, 4)
    assert len(list((tmp_path / "g").glob("vectors*.f32"))) == 1


@pytest.mark.parametrize("damage", ["bit", "nan", "ff_block"])
def test_a_damaged_row_inside_the_vector_file_is_refused(tmp_path, damage):
    """Only the last row used to be checked: a flipped bit, a NaN or a 4 KB block read back as 0xFF (a failing SD
    card) in any other row changed answers silently, and the next enrolment stored a threshold derived from it.
    Every committed row is now under a CRC-32 the gallery writes with them; nothing is changed when it fails."""
    gal = tmp_path / "g"
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal,
            _coil_pictures(tmp_path, "p", ("obj01", "obj02", "obj03"), range(0, 72, 6)), "--quiet", check=True)
    raw = bytearray((gal / "vectors.f32").read_bytes())
    if damage == "bit":
        raw[5 * 1024 * 4 + 30] ^= 0x04  # row 5 of 36, a mantissa bit: the vector is still finite and near unit
    elif damage == "nan":
        raw[5 * 1024 * 4:5 * 1024 * 4 + 4] = np.array([np.nan], "<f4").tobytes()
    else:
        raw[4096 * 3:4096 * 4] = b"\xff" * 4096
    (gal / "vectors.f32").write_bytes(bytes(raw))
    before = {f.name: f.read_bytes() for f in gal.iterdir()}
    for args in (("gallery", "list", "--gallery", gal),
                 ("recognize", "--gallery", gal, "--source", DATA / "coil20" / "obj01" / "003.png"),
                 ("enroll", "--gallery", gal, "--label", "x", DATA / "coil20" / "obj09" / "000.png", "--quiet"),
                 ("gallery", "remove", "obj03", "--gallery", gal), ("gallery", "compact", "--gallery", gal)):
        p = run_cli(*args)  # a removal too: it re-derives the threshold from the vectors
        assert p.returncode == 2 and p.stderr.count("\n") == 1, (args, p.stderr)
        assert "vectors.f32 is damaged" in p.stderr and "nothing was changed" in p.stderr, p.stderr
    assert {f.name: f.read_bytes() for f in gal.iterdir()} == before


def test_compaction_removes_only_its_own_vector_files(tmp_path):
    """A user's 'vectors (copy).f32' or 'vectors.backup.f32' in the gallery folder was swept as a stale copy."""
    gal = tmp_path / "g"
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal,
            _coil_pictures(tmp_path, "p", ("obj01", "obj02"), range(0, 72, 12)), "--quiet", check=True)
    for name in ("vectors (copy).f32", "vectors.backup.f32"):
        shutil.copy(gal / "vectors.f32", gal / name)
    run_cli("gallery", "remove", "obj02", "--gallery", gal, check=True)
    run_cli("gallery", "compact", "--gallery", gal, check=True)
    names = sorted(f.name for f in gal.iterdir())
    assert "vectors (copy).f32" in names and "vectors.backup.f32" in names and "vectors.f32" not in names, names
    with Gallery.open(gal) as g:
        assert g.labels() == {"obj01": 6} and g.matrix.shape == (6, 1024)


@pytest.mark.parametrize("key, value, needle", [("format_version", '"abc"', "meta: invalid literal"),
                                                ("threshold", '"high"', "meta: could not convert"),
                                                ("preprocessing", "{}", "records no mean, std"),
                                                ("entry_row", "99999", "points to row 99999"),
                                                ("rows", '"abc"', "rows must be a whole number"),
                                                ("rows", "1e400", "rows must be a whole number")])
def test_damaged_gallery_metadata_is_one_line(tmp_path, key, value, needle):
    """Hand-edited or damaged values in the database were Python tracebacks (exit 1)."""
    import sqlite3

    gal = tmp_path / "g"
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal,
            _coil_pictures(tmp_path, "p", ("obj01",), range(0, 72, 12)), "--quiet", check=True)
    with sqlite3.connect(gal / "gallery.sqlite") as db:
        if key == "entry_row":
            db.execute("UPDATE entries SET row = ? WHERE id = (SELECT MIN(id) FROM entries)", (int(value),))
        else:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
    before = (gal / "gallery.sqlite").read_bytes()
    for args in (("recognize", "--gallery", gal, "--source", DATA / "coil20" / "obj01" / "003.png"),
                 ("enroll", "--gallery", gal, "--label", "x", DATA / "coil20" / "obj09" / "000.png", "--quiet")):
        p = run_cli(*args)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and needle in p.stderr, (args, p.stderr)
    assert (gal / "gallery.sqlite").read_bytes() == before


def test_rows_of_an_add_whose_commit_failed_are_cut_off_again(tmp_path, monkeypatch):
    """A commit that fails after the rows were written (a full disk at the database, an I/O error) left them in the
    vector file, taking the space a removal then needed, while the line said nothing half-written was kept."""
    import sqlite3

    g = Gallery.create(tmp_path / "g", _binding(dim=4))
    rng = np.random.default_rng(3)
    g.add(["a", "b"], rng.standard_normal((2, 4)).astype(np.float32))
    size = (tmp_path / "g" / "vectors.f32").stat().st_size

    def failing_commit(self):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Gallery, "_mark_write", failing_commit)  # runs right after the rows are written
    with pytest.raises(sqlite3.OperationalError):
        g.add(["c"], rng.standard_normal((1, 4)).astype(np.float32))
    assert (tmp_path / "g" / "vectors.f32").stat().st_size == size
    monkeypatch.undo()
    assert g.labels() == {"a": 1, "b": 1} and g.matrix.shape == (2, 4)
    g.add(["c"], rng.standard_normal((1, 4)).astype(np.float32))
    assert g.labels() == {"a": 1, "b": 1, "c": 1}
    g.close()


def test_a_gallery_made_before_the_probes_were_kept_gets_them_from_its_own_model(tmp_path):
    """The tolerance for another backend's last digits needs the probe embeddings; a gallery enrolled before they were
    kept stores its own model's on its next open with that same model file."""
    import sqlite3

    gal = tmp_path / "g"
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal, _coil_pictures(tmp_path, "p", ("obj01",), range(0, 72, 24)),
            "--quiet", check=True)
    with sqlite3.connect(gal / "gallery.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key = 'behaviour_probes'")
    run_cli("recognize", "--gallery", gal, "--source", DATA / "coil20" / "obj01" / "003.png", check=True)
    with Gallery.open(gal) as g, Embedder.create_from_model_path(V1_EMBED) as emb:
        from edgeembed.gallery import decode_probes

        assert np.allclose(decode_probes(g.meta["behaviour_probes"], 1024), emb.behaviour_probes(), atol=1e-6)


def test_an_add_refused_before_writing_leaves_a_foreign_vector_file_alone(tmp_path):
    """Gallery.add refused on another gallery's vector file ('nothing was changed') used to cut that file to this
    gallery's row count in its cleanup: only an add that wrote rows cleans up after itself."""
    rng = np.random.default_rng(4)
    a, b = Gallery.create(tmp_path / "a", _binding(dim=4)), Gallery.create(tmp_path / "b", _binding(dim=4))
    a.add(["x"] * 3, rng.standard_normal((3, 4)).astype(np.float32))
    b.add(["y"] * 10, rng.standard_normal((10, 4)).astype(np.float32))
    b.close()
    foreign = (tmp_path / "b" / "vectors.f32").read_bytes()
    (tmp_path / "a" / "vectors.f32").write_bytes(foreign)
    with pytest.raises(GalleryError, match="not this gallery's vector file"):
        a.add(["z"], rng.standard_normal((1, 4)).astype(np.float32))
    assert (tmp_path / "a" / "vectors.f32").read_bytes() == foreign
    a.close()


@pytest.mark.parametrize("how", ["relative name", "absolute name", "symbolic link"])
def test_a_vector_file_outside_the_gallery_is_never_written(tmp_path, how):
    """A gallery restored from someone else's copy, or a folder others can write to, named a vector file outside
    itself ('../notes.txt', an absolute path) or held a link as vectors.f32: an enrolment cut that file to the row
    count and wrote vectors over it (a 900-byte text became 512 bytes of float32). Refused in one line, untouched."""
    import sqlite3

    gal, outside = tmp_path / "g", tmp_path / "notes.txt"
    outside.write_text("my notes\n" * 100)
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal,
            _coil_pictures(tmp_path, "p", ("obj01",), range(0, 72, 12)), "--quiet", check=True)
    run_cli("gallery", "remove", "--gallery", gal, "obj01", check=True)  # 0 rows: nothing to check the file against
    with sqlite3.connect(gal / "gallery.sqlite") as db:
        name = {"relative name": "../notes.txt", "absolute name": str(outside), "symbolic link": "vectors.f32"}[how]
        db.execute("INSERT OR REPLACE INTO meta VALUES ('vectors_file', ?)", (json.dumps(name),))
    if how == "symbolic link":
        for f in gal.glob("vectors*.f32"):
            f.unlink()
        (gal / "vectors.f32").symlink_to("../notes.txt")
    before = outside.read_bytes()
    for args in (("enroll", "--gallery", gal, "--label", "x", DATA / "coil20" / "obj09" / "000.png", "--quiet"),
                 ("gallery", "compact", "--gallery", gal), ("gallery", "list", "--gallery", gal)):
        p = run_cli(*args)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, (args, p.stderr)
        assert ("symbolic link" if how == "symbolic link" else "vectors_file must name a vector file") in p.stderr
    assert outside.read_bytes() == before


def test_removing_a_label_erases_its_vectors_from_the_gallerys_files(tmp_path):
    """Removing someone is forgetting them: their vectors stayed byte for byte in the vector file until a separate
    'gallery compact' nobody was told to run, and SQLite keeps deleted rows in free pages unless told otherwise."""
    import stat

    gal = tmp_path / "g"
    pics = _coil_pictures(tmp_path, "p", ("obj01", "obj02", "obj04"), range(0, 72, 12))
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal, pics, "--quiet", check=True)
    (gal / "vectors.f32").chmod(0o600)  # the owner's own tightening survives the rewrite
    with Gallery.open(gal) as g:
        rows = [r for (r,) in g._db.execute("SELECT e.row FROM entries e JOIN labels l ON l.id = e.label_id "
                                            "WHERE l.name = 'obj02'")]
        stored = (gal / g.meta["vectors_file"]).read_bytes()
        row_bytes = g.binding.dim * 4
        gone = [stored[r * row_bytes:(r + 1) * row_bytes] for r in rows]  # her vectors as the file holds them
        sources = [e["source"] for e in g.entries() if e["label"] == "obj02"]
        assert g._db.execute("PRAGMA secure_delete").fetchone()[0] == 1
    assert len(gone) == 6
    p = run_cli("gallery", "remove", "--gallery", gal, "obj02", "--json", check=True)
    assert json.loads(p.stdout)["erased_rows"] == 6 and p.stderr == ""
    files = [f for f in gal.iterdir() if f.is_file()]
    data = b"".join(f.read_bytes() for f in files)
    assert not any(row in data for row in gone)
    assert b"obj02" not in data and not any(s.encode() in data for s in sources)
    vec = next(f for f in files if f.suffix == ".f32")
    assert stat.S_IMODE(vec.stat().st_mode) == 0o600
    with Gallery.open(gal) as g:
        assert g.labels() == {"obj01": 6, "obj04": 6}


def test_a_label_with_control_characters_is_refused_and_an_older_one_is_shown_escaped(tmp_path):
    """A label comes from a folder name, so a folder of photos someone sends can carry ESC[2J (clear the screen), a
    window-title sequence or a newline that forges an output line. New labels refuse them; a label an older version
    stored is printed with escapes."""
    import sqlite3

    pics = _coil_pictures(tmp_path, "p", ("obj01",), range(0, 72, 24))
    bad = pics / "evil\x1b[2J\nenrolled 0 images"
    (pics / "obj01").rename(bad)
    gal = tmp_path / "g"
    p = run_cli("enroll", "--model", V1_EMBED, "--gallery", gal, pics, "--quiet")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "control characters" in p.stderr, p.stderr
    assert "\x1b" not in p.stderr and "rename that folder" in p.stderr
    assert not (gal / "gallery.sqlite").exists() or Gallery.open(gal).labels() == {}
    # an older gallery's label, as an edgeembed before the refusal stored it
    bad.rename(pics / "obj01")
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal, pics, "--quiet", check=True)
    with sqlite3.connect(gal / "gallery.sqlite") as db:
        db.execute("UPDATE labels SET name = ?", ("evil\x1b[2J\nforged",))
    p = run_cli("gallery", "list", "--gallery", gal, check=True)
    assert "\x1b" not in p.stdout and "evil\\x1b[2J\\nforged" in p.stdout, p.stdout
    p = run_cli("recognize", "--gallery", gal, "--source", DATA / "coil20" / "obj01" / "003.png", check=True)
    assert "\x1b" not in p.stdout and "evil\\x1b[2J\\nforged" in p.stdout, p.stdout
    p = run_cli("gallery", "rename", "--gallery", gal, "evil\x1b[2J\nforged", "bell\x07")
    assert p.returncode == 2 and "control characters" in p.stderr


def test_a_gallery_of_another_user_says_whose_it_is_and_how_to_share_it(tmp_path):
    """A new gallery's folder is its owner's alone: `sudo edgeembed enroll` then a service running as pi could not
    read it, and was told "cannot write ...; run as the user who owns it" (recognizing only reads)."""
    import contextlib
    import io
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root, to run a command as another user")
    import importlib

    from edgeembed.cli import main

    importlib.import_module("edgeembed.recognizer")  # loaded before the child drops to another user

    top = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        top.chmod(0o755)
        gal = top / "g"
        run_cli("enroll", "--model", V1_EMBED, "--gallery", gal,
                _coil_pictures(tmp_path, "p", ("obj01",), range(0, 72, 24)), "--quiet", check=True)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the service's user
            try:
                os.close(r)
                os.setgid(65534)
                os.setuid(65534)
                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    rc = main(["gallery", "list", "--gallery", str(gal)])
                os.write(w, json.dumps([rc, err.getvalue()]).encode())
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r) as f:
            rc, err = json.loads(f.read())
        os.waitpid(pid, 0)
        assert rc == 2 and err.count("\n") == 1, err
        assert f"cannot read {gal}: it belongs to root and is open to its owner only (mode 700" in err
        assert "run as root" in err and f"chmod 750 {gal}" in err and "sudo chown -R nobody" in err
    finally:
        shutil.rmtree(top)


def test_vector_file_names_of_earlier_versions_are_still_read(tmp_path):
    """Four earlier commits named a compacted vector file with mkstemp ('vectors.j9b9mc5z.f32'); the check of the
    name a database gives (no paths) called such a gallery damaged."""
    import sqlite3

    gal = tmp_path / "g"
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal,
            _coil_pictures(tmp_path, "p", ("obj01", "obj03"), range(0, 72, 12)), "--quiet", check=True)
    for name in ("vectors.j9b9mc5z.f32", "vectors.1764300000000.f32"):
        current = next(gal.glob("vectors*.f32"))
        current.rename(gal / name)
        with sqlite3.connect(gal / "gallery.sqlite") as db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'vectors_file'", (json.dumps(name),))
            check = json.loads(db.execute("SELECT value FROM meta WHERE key = 'last_row_check'").fetchone()[0])
            db.execute("UPDATE meta SET value = ? WHERE key = 'last_row_check'", (json.dumps({**check, "file": name}),))
        p = run_cli("recognize", "--gallery", gal, "--source", DATA / "coil20" / "obj03" / "003.png", "--json", check=True)
        assert json.loads(p.stdout.splitlines()[0])["label"] == "obj03"


def test_a_removal_whose_erasing_fails_says_the_removal_went_in(tmp_path, monkeypatch, capsys):
    """`gallery remove` commits the removal, then rewrites the vector file. When the rewrite fails (a locked
    database, a full disk) the run said "nothing was changed" and exit 2 while the label was gone."""
    import sqlite3

    from edgeembed.cli import main

    gal = tmp_path / "g"
    run_cli("enroll", "--model", V1_EMBED, "--gallery", gal,
            _coil_pictures(tmp_path, "p", ("obj01", "obj03"), range(0, 72, 12)), "--quiet", check=True)

    def locked(self):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(Gallery, "compact", locked)
    assert main(["gallery", "remove", "--gallery", str(gal), "obj03", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["removed_entries"] == 6 and result["erased_rows"] == 0 and "locked" in result["erase_error"]
    assert err.count("\n") == 1 and "still in" in err and "gallery compact" in err
    monkeypatch.undo()
    with Gallery.open(gal) as g:
        assert g.labels() == {"obj01": 6}
        assert g.compact() == 6


def test_a_face_galleries_older_label_with_control_characters_is_shown_escaped(tmp_path):
    """Face mode prints its still pictures' answers on its own path; the escaping had missed it."""
    import sqlite3

    people = tmp_path / "people" / "s1"
    people.mkdir(parents=True)
    for k in (1, 2, 3):
        shutil.copy(DATA / "orl-faces" / "s1" / f"{k}.pgm", people / f"{k}.pgm")
    gal = tmp_path / "faces"
    run_cli("enroll", "--mode", "face", "--gallery", gal, tmp_path / "people", "--quiet", check=True)
    with sqlite3.connect(gal / "gallery.sqlite") as db:  # as an edgeembed before the refusal stored it
        db.execute("UPDATE labels SET name = ?", ("eve\x1b[2J",))
    p = run_cli("recognize", "--gallery", gal, "--source", DATA / "orl-faces" / "s1" / "5.pgm", check=True)
    assert "\x1b" not in p.stdout and "eve\\x1b[2J" in p.stdout, p.stdout
