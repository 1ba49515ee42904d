"""The Embedder on real models: consistency across input forms, outputs, lifetime, errors."""
import cv2
import numpy as np
import pytest

from conftest import DATA, MODELS, V1_EMBED, V1_TINY
from edgeembed import Embedder, EmbedderOptions, cosine_similarity, read_image
from edgeembed.errors import BackendError, InputError, ModelError
from tflite_builder import custom_op_model

PARROT = DATA / "coral-images" / "parrot.jpg"


def test_path_bgr_and_rgb_give_the_same_embedding(v1_embedder):
    by_path = v1_embedder.embed(PARROT)
    by_rgb = v1_embedder.embed(read_image(PARROT))
    by_bgr = v1_embedder.embed(cv2.imread(str(PARROT)), color="BGR")
    assert cosine_similarity(by_path, by_rgb) >= 0.9999
    assert cosine_similarity(by_path, by_bgr) >= 0.9999
    assert by_path.vector.dtype == np.float32 and len(by_path) == 1024
    assert abs(np.linalg.norm(by_path.vector) - 1) < 1e-5


def test_different_pictures_differ_and_views_agree(v1_embedder):
    cat, parrot = v1_embedder.embed_many([DATA / "coral-images" / "cat.bmp", PARROT])
    flipped = v1_embedder.embed(read_image(PARROT)[:, ::-1])
    assert cosine_similarity(parrot, flipped) > cosine_similarity(parrot, cat) + 0.1


def test_int8_embedding_on_request():
    with Embedder.create_from_options(EmbedderOptions(V1_EMBED, quantize=True, num_threads=1)) as emb:
        e = emb.embed(PARROT)
    assert e.quantized.dtype == np.int8
    assert cosine_similarity(e.vector, e.quantized.astype(np.float32)) > 0.999


def test_uint8_output_is_dequantized_once():
    with Embedder.create_from_options(EmbedderOptions(V1_EMBED, l2_normalize=False, num_threads=1)) as emb:
        e = emb.embed(PARROT)
        raw = emb.raw_output().reshape(-1)
        scale, zp = emb.interpreter.get_output_details()[0]["quantization"]
    assert np.allclose(e.vector, (raw.astype(np.float32) - zp) * scale)


def test_classifier_output_selection_and_defaults():
    with Embedder.create_from_model_path(V1_TINY, num_threads=1) as emb:
        assert emb.dim == 1001 and emb.input_format.height == 128
        with pytest.raises(ModelError, match="has 1 output, output index"):
            emb._select_output(3)
        with pytest.raises(ModelError, match="no output named 'nope'"):
            emb._select_output("nope")
    # A model with standard TFLITE_METADATA: normalisation read from it.
    with Embedder.create_from_model_path(MODELS / "tf2_mobilenet_v2_1.0_224_ptq.tflite", num_threads=1) as emb:
        assert emb.spec.source == "tflite-metadata" and emb.spec.preprocessing.std[0] == pytest.approx(127.5)


def test_defaults_without_metadata(v1_embedder):
    # No metadata, uint8 input: raw pixels (mean = zero point, std = 1/scale) reach the model.
    assert v1_embedder.spec.source == "defaults" and v1_embedder.spec.preprocessing.mean[0] == 128
    rgb = read_image(PARROT)
    tensor = v1_embedder.preprocessor(rgb)
    assert tensor.dtype == np.uint8 and np.array_equal(tensor[0], v1_embedder.preprocessor.resized(rgb))


def test_float_model_and_overrides():
    opts = EmbedderOptions(MODELS / "mobilefacenet.tflite", mean=0, std=1, num_threads=1)
    with Embedder.create_from_options(opts) as emb:
        assert emb.input_format.dtype == np.float32 and emb.dim == 128
        assert emb.spec.preprocessing.mean == (0.0, 0.0, 0.0)
        other = Embedder.create_from_model_path(MODELS / "mobilefacenet.tflite", num_threads=1)
        assert other.fingerprint != emb.fingerprint  # preprocessing is part of the model's identity
        other.close()


def test_close_and_context_manager():
    with Embedder.create_from_model_path(V1_TINY, num_threads=1) as emb:
        emb.embed(PARROT)
    with pytest.raises(InputError, match="closed"):
        emb.embed(PARROT)


def test_one_embedder_shared_by_threads_gives_each_its_own_answer():
    """An app that hands one Embedder to several threads (a web handler, a camera callback) gets the same
    vectors as one thread would: LiteRT's interpreter mixes tensors of concurrent calls, so calls take turns."""
    from concurrent.futures import ThreadPoolExecutor

    pictures = sorted((DATA / "imagenet-sample").iterdir())[:24]
    with Embedder.create_from_model_path(V1_EMBED, num_threads=1) as emb:
        alone = [emb.embed(p).vector for p in pictures]
        with ThreadPoolExecutor(4) as pool:
            shared = list(pool.map(lambda p: emb.embed(p).vector, pictures * 3))
    for i, v in enumerate(shared):
        assert np.array_equal(v, alone[i % len(pictures)]), i


def test_api_misuse_is_one_clear_error():
    with Embedder.create_from_model_path(V1_TINY, num_threads=1) as emb:
        rgb = read_image(PARROT)
        with pytest.raises(InputError, match=r"one picture, got a batch of shape \(2, .*use embed_many"):
            emb.embed(np.stack([rgb, rgb]))
        assert len(emb.embed_many(np.stack([rgb, rgb]))) == 2
        with pytest.raises(InputError, match="one path .*use embed"):
            emb.embed_many(str(PARROT))
    for call in (emb.describe, emb.raw_output):
        with pytest.raises(InputError, match="closed"):
            call()
    with pytest.raises(InputError, match="num_threads must be an integer"):
        Embedder.create_from_model_path(V1_TINY, num_threads="4")
    assert Embedder.create_from_model_path(V1_TINY, color_order="bgr").spec.preprocessing.color_order == "BGR"
    assert Embedder.create_from_model_path(V1_TINY, mean=0, std=1).spec.preprocessing.std == (1.0, 1.0, 1.0)


def test_a_std_typed_in_0_to_1_units_is_refused_where_it_is_typed():
    """ImageNet's values as PyTorch code writes them (0..1 units) gave silently wrong embeddings (ORL recall@1 0.93
    instead of 0.997, false accepts 0.355); they are refused on the command line and by the converter, while a
    gallery enrolled with them before still opens (its stored values are taken as they are)."""
    from conftest import run_cli

    p = run_cli("embed", V1_TINY, PARROT, "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225")
    assert p.returncode == 2 and "looks like 0..1 units" in p.stderr and "multiply both by 255" in p.stderr, p.stderr
    from converters.checks import check_preprocessing

    with pytest.raises(InputError, match="looks like 0..1 units"):
        check_preprocessing({"std": [0.229, 0.224, 0.225]})
    with Embedder.create_from_model_path(V1_TINY, std=(0.229, 0.224, 0.225)) as emb:  # what such a gallery reopens with
        assert emb.spec.preprocessing.std == pytest.approx((0.229, 0.224, 0.225))


def test_model_errors(tmp_path):
    bad = tmp_path / "text.tflite"
    bad.write_text("hello")
    etpu = tmp_path / "etpu.tflite"
    etpu.write_bytes(custom_op_model())
    with pytest.raises(ModelError, match="not found"):
        Embedder.create_from_model_path(tmp_path / "none.tflite")
    with pytest.raises(ModelError, match="not a TFLite model"):
        Embedder.create_from_model_path(bad)
    with pytest.raises(ModelError, match="compiled for the Coral Edge TPU"):
        Embedder.create_from_model_path(etpu)
    with pytest.raises(BackendError, match="Edge TPU delegate"):
        Embedder.create_from_model_path(etpu, delegate="edgetpu")
    with pytest.raises(BackendError, match="unknown backend"):
        Embedder.create_from_model_path(V1_TINY, backend="nope")


def test_tflite_runtime_under_numpy_2_is_refused_in_one_line(monkeypatch):
    """tflite-runtime 2.14 (its last release) imports under numpy 2 but crashes inside Interpreter() with a
    SystemError: it is passed over by 'auto' and refused by name, with the fix."""
    import importlib.metadata

    from edgeembed import backends

    if int(np.__version__.split(".")[0]) < 2:
        pytest.skip("numpy 1.x here: tflite-runtime 2.14 runs")
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "2.14.0" if d == "tflite-runtime" else real(d))
    with pytest.raises(BackendError, match=r"built for numpy 1\.x .*pip install 'numpy<2'"):
        backends.load_backend("tflite_runtime")
    assert backends._numpy_mismatch("ai_edge_litert") is None


def test_tensorflow_backend_embeds_as_litert():
    """The third backend (full TensorFlow's tf.lite) runs the shipped int8 model and agrees with LiteRT."""
    pytest.importorskip("tensorflow")
    from conftest import REPO

    model = REPO / "models" / "mobilenet_v2_1.0_224_int8.tflite"
    with Embedder.create_from_model_path(model) as lite, Embedder.create_from_model_path(model, backend="tensorflow") as tf:
        assert (lite.backend, tf.backend) == ("ai_edge_litert", "tensorflow")
        for picture in (PARROT, DATA / "coral-images" / "cat.bmp"):
            assert cosine_similarity(lite.embed(picture), tf.embed(picture)) >= 0.9999
        assert tf.behaviour_fingerprint() == lite.behaviour_fingerprint()


def test_input_size_left_open(tmp_path):
    """A Keras model exported with an open batch runs (batch set to 1); one whose picture size is open is refused
    by name (XNNPACK's 'failed to reshape runtime' said nothing of the cause)."""
    tf = pytest.importorskip("tensorflow")

    def export(shape, batch, path):
        inp = tf.keras.Input(shape=shape, batch_size=batch)
        out = tf.keras.layers.GlobalAveragePooling2D()(tf.keras.layers.Conv2D(8, 3, activation="relu")(inp))
        model = tf.keras.Model(inp, out)
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        return path

    open_batch = export((96, 96, 3), None, tmp_path / "open_batch.tflite")
    with Embedder.create_from_model_path(open_batch) as emb:
        assert emb.dim == 8 and np.isfinite(emb.embed(PARROT).vector).all()
    open_size = export((None, None, 3), None, tmp_path / "open_size.tflite")
    with pytest.raises(ModelError, match=r"takes inputs of any size .*export it with a fixed input size"):
        Embedder.create_from_model_path(open_size)


def test_grey_input_model_is_refused_with_the_fix(tmp_path):
    """A model taking grey (1, H, W, 1) pictures: one line that says what to change, not only what was expected."""
    tf = pytest.importorskip("tensorflow")

    inp = tf.keras.Input(shape=(64, 64, 1), batch_size=1)
    out = tf.keras.layers.GlobalAveragePooling2D()(tf.keras.layers.Conv2D(8, 3, activation="relu")(inp))
    path = tmp_path / "grey.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, out)).convert())
    with pytest.raises(ModelError, match=r"got \[\(1, 64, 64, 1\)\]; a grey .* needs a 3-channel input in front"):
        Embedder.create_from_model_path(path)
