"""The Python API as an app developer uses it: wrong calls get an edgeembed error that says what came, never a bare
numpy/sqlite exception or a silent wrong answer (the mistakes found by an audit of the API, stop 23)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import DATA, REPO
from edgeembed import Embedder
from edgeembed.errors import GalleryError, ImageError, InputError, SourceError
from edgeembed.gallery import Gallery
from edgeembed.recognizer import create_gallery, enroll, open_gallery_embedder

MOBILENET = REPO / "models" / "mobilenet_v2_1.0_224_int8.tflite"
LITE0 = REPO / "models" / "efficientnet_lite0_int8.tflite"
COIL = DATA / "coil20"
PARROT = DATA / "coral-images" / "parrot.jpg"


@pytest.fixture(scope="module")
def emb():
    with Embedder.create_from_model_path(MOBILENET, num_threads=2) as e:
        yield e


def test_pictures_in_every_form_and_the_wrong_ones(emb):
    by_path = emb.embed(PARROT)
    # an encoded picture's bytes (a camera's JPEG, an HTTP body) embed as the file does
    assert float(emb.embed(PARROT.read_bytes()).vector @ by_path.vector) > 0.9999
    assert len(emb.embed_many([PARROT.read_bytes(), str(PARROT)])) == 2
    rgb = cv2.cvtColor(cv2.imread(str(PARROT)), cv2.COLOR_BGR2RGB)
    # one picture given to embed_many was embedded row by row, as hundreds of grey pictures
    with pytest.raises(InputError, match=r"got one picture of shape \(\d+, \d+, 3\); use embed"):
        emb.embed_many(rgb)
    assert len(emb.embed_many(rgb[None])) == 1
    with pytest.raises(InputError, match=r"got one picture of shape \(40, 30, 2\)"):  # grey + alpha, as Pillow's LA
        emb.embed_many(np.zeros((40, 30, 2), np.uint8))
    big_endian = (rgb.astype(np.uint16) * 257).astype(">u2")  # Pillow's I;16B: a uint16 in the other byte order
    assert float(emb.embed(big_endian).vector @ emb.embed(rgb).vector) > 0.9999
    for wrong, match in ((None, "got NoneType"), (3.5, "got float")):
        with pytest.raises(InputError, match=match):
            emb.embed(wrong)
    with pytest.raises(InputError, match="embed_many takes a list of pictures, got NoneType"):
        emb.embed_many(None)
    with pytest.raises(InputError, match=r"got \(50,\)"):
        emb.embed(np.zeros(50, np.uint8))
    with pytest.raises(InputError, match="GRAY needs"):  # a colour picture said to be grey
        emb.embed(rgb, color="GRAY")
    with pytest.raises(InputError, match="mean must be 1 or 3 numbers"):
        Embedder.create_from_model_path(MOBILENET, mean="abc")


def test_gallery_calls_with_wrong_arguments_say_so_and_change_nothing(tmp_path, emb):
    g = create_gallery(tmp_path / "g", emb, "image")
    one = emb.embed(COIL / "obj01" / "000.png")
    g.add(["obj01"], one.vector[None])
    assert g.recognize(one).label == g.recognize(one.vector[None]).label == "obj01"  # (dim,) or (1, dim)
    for query in (None, "obj01", one.vector[None, None], one.vector[:100]):
        with pytest.raises(InputError, match="a query must be one embedding"):
            g.recognize(query)
    with pytest.raises(InputError, match="must be numbers, got dtype complex64"):
        g.recognize(one.vector.astype(np.complex64))
    for threshold in (True, 1.5, "0.7"):  # True was taken as 1.0: a 0.8 match came back unknown
        with pytest.raises(InputError, match="threshold is a cosine similarity"):
            g.recognize(one, threshold=threshold)
        with pytest.raises(InputError, match="threshold is a cosine similarity"):
            g.set_threshold(threshold)
    with pytest.raises(InputError, match="an entry id is an integer"):
        g.remove_entry("abc")
    with pytest.raises(InputError, match="2 labels need 2 sources"):
        g.add(["a", "b"], np.stack([one.vector, one.vector]), sources=["x"])
    assert len(g) == 1 and g.labels() == {"obj01": 1}
    # another model of the same dimension: its Embeddings are refused, not compared (no error, wrong answers)
    with Embedder.create_from_model_path(LITE0, num_threads=2) as lite:
        assert lite.dim == emb.dim
        with pytest.raises(GalleryError, match="comes from another model"):
            g.recognize(lite.embed(COIL / "obj01" / "000.png"))
        with pytest.raises(GalleryError, match="comes from another model"):  # nor enrolled
            g.add(["obj02", "obj02"], [emb.embed(COIL / "obj02" / "000.png"), lite.embed(COIL / "obj02" / "018.png")])
    assert len(g) == 1
    g.add(["obj02"], [emb.embed(COIL / "obj02" / "000.png")])  # Embeddings of the gallery's model are taken as they are
    assert g.labels() == {"obj01": 1, "obj02": 1}
    with open_gallery_embedder(g) as own:  # the gallery's own model, through the way that checks it
        assert g.recognize(own.embed(COIL / "obj01" / "009.png")).label == "obj01"
    # closed: one clear error instead of sqlite3.ProgrammingError, or answers that no longer follow other writers
    g.close()
    g.close()  # twice is fine
    for call in (lambda: len(g), g.labels, lambda: g.recognize(one), lambda: g.add(["b"], one.vector[None])):
        with pytest.raises(GalleryError, match="is closed; open it again"):
            call()
    assert 0 < g.threshold <= 1  # what was read last still reads (the command line prints it after closing)
    with Gallery.open(tmp_path / "g") as again:
        assert len(again) == 2


def test_sources_are_kept_as_absolute_file_paths_and_tags_as_they_are(tmp_path, monkeypatch):
    from edgeembed.recognizer import stored_source

    (tmp_path / "camera0").mkdir()
    (tmp_path / "shot.jpg").write_bytes(PARROT.read_bytes())
    monkeypatch.chdir(tmp_path)
    assert stored_source("shot.jpg") == str(tmp_path / "shot.jpg")  # the same file from any directory
    assert [stored_source(t) for t in ("camera0", "camera1", None)] == ["camera0", "camera1", None]  # a folder's name too


def test_face_enrolment_of_a_picture_without_a_face_names_it(tmp_path):
    from edgeembed.face import FacePipeline, FaceRecognizer

    with FacePipeline.create() as pipe:
        g = create_gallery(tmp_path / "faces", pipe.embedder.embedder, "face")
        items = [("s1", DATA / "orl-faces" / "s1" / "1.pgm"), ("owl", DATA / "coral-images" / "owl.jpg")]
        with pytest.raises(ImageError, match=r"owl.jpg: nothing to enrol in it \(no face found\)"):
            enroll(g, pipe.embed_one, items, show_progress=False)  # was TypeError from np.isfinite(None)
        assert len(g) == 0
        report = enroll(g, pipe.embed_one, items, skip_bad=True, show_progress=False)
        assert report["enrolled"] == 1 and "no face found" in report["skipped"][0]["reason"]
        with pytest.raises(InputError, match="threshold is a cosine similarity"):
            FaceRecognizer(pipe, g, threshold=True)
        with pytest.raises(InputError, match=r"face crops must be \(N, 150, 150, 3\) uint8"):
            pipe.embedder.embed_crops(np.zeros((1, 50, 50, 3), np.uint8))
    with FacePipeline.create() as pipe2, FaceRecognizer(pipe2, Gallery.open(tmp_path / "faces")) as rec:
        assert rec.recognize(DATA / "orl-faces" / "s1" / "2.pgm")[0].label == "s1"
    with pytest.raises(GalleryError, match="is closed"):  # the recognizer closed its gallery
        len(rec.gallery)


def _clip(path, objects=("obj03", "obj05"), views=10):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 128))
    for obj in objects:
        for v in range(0, views * 5, 5):
            w.write(cv2.imread(str(COIL / obj / f"{v:03d}.png")))
    w.release()
    return path


def test_sources_open_when_read_and_start_over_after_close(tmp_path, emb):
    from edgeembed.outputs.video import AnnotatedVideoSink
    from edgeembed.pipeline import ImageProcessor, Pipeline
    from edgeembed.smoothing import TrackSmoother
    from edgeembed.sources import OpenCVSource, open_source

    clip = _clip(tmp_path / "clip.avi")
    g = create_gallery(tmp_path / "g", emb, "image")
    g.add(["obj03", "obj05"], np.stack([emb.embed(COIL / o / "000.png").vector for o in ("obj03", "obj05")]))
    # a source never opened: the pipeline processed 0 frames without a word
    stats = Pipeline(open_source(str(clip)), ImageProcessor(emb, g), TrackSmoother(3)).run()
    assert stats.frames == 20
    # iterated again after close: a recording starts over at frame 0, time 0 (it counted on: 20, 2.0 s)
    src = open_source(str(clip))
    first = [(f.index, f.time) for f in src]
    src.close()
    assert [(f.index, f.time) for f in src] == first and first[0] == (0, 0.0)
    src.close()
    with pytest.raises(SourceError, match="cannot open camera 7"):  # was 'dropped; reconnecting' for 60 s
        OpenCVSource("7", reconnect_timeout=3).read()
    with pytest.raises(SourceError, match="the source is empty"):  # was the current folder's pictures
        open_source("")
    # a frame after close: the finished video was started over (40 frames became 1)
    out = tmp_path / "annotated.avi"
    sink, kept = AnnotatedVideoSink(str(out)), _Keep()
    with open_source(str(clip)) as src:
        Pipeline(src, ImageProcessor(emb, g), TrackSmoother(3), [sink, kept]).run()
    sink.close()
    size = out.stat().st_size
    with pytest.raises(InputError, match="is closed"):
        sink.on_frame(*kept.last)
    sink.close()
    assert out.stat().st_size == size and int(cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT)) == 20


class _Keep:
    """A sink that keeps the last frame's record, to hand a real one to another sink."""

    def on_frame(self, record, rgb):
        self.last = (record, rgb)

    def on_event(self, event):
        pass

    def close(self):
        pass
