"""The pure-Python .tflite reader/writer: metadata round trip without changing inference."""
import json

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from conftest import MODELS, V1_EMBED
from edgeembed.errors import ModelError
from edgeembed.spec import METADATA_NAME, ModelSpec, Preprocessing
from edgeembed.tflite_file import read_tflite, write_metadata
from tflite_builder import custom_op_model


def _run(model: bytes) -> np.ndarray:
    it = Interpreter(model_content=model)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    x = np.random.default_rng(0).integers(0, 256, d["shape"], dtype=np.uint8)
    it.set_tensor(d["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()


@pytest.mark.parametrize("name", [V1_EMBED.name, "tf2_mobilenet_v2_1.0_224_ptq.tflite"])
def test_metadata_round_trip_keeps_inference_identical(name):
    data = (MODELS / name).read_bytes()
    before = read_tflite(data)
    spec = ModelSpec(preprocessing=Preprocessing(mean=(1, 2, 3), std=4, resize="letterbox"), architecture="x")
    out = write_metadata(data, {METADATA_NAME: spec.to_json().encode()})
    out = write_metadata(out, {METADATA_NAME: spec.to_json().encode(), "other": b"abc"})  # replace, not duplicate
    after = read_tflite(out)
    assert json.loads(after.metadata[METADATA_NAME]) == json.loads(spec.to_json())
    assert after.metadata["other"] == b"abc"
    for key, value in before.metadata.items():  # existing entries (e.g. TFLITE_METADATA) survive
        assert after.metadata[key] == value
    assert np.array_equal(_run(data), _run(out))


def test_edgetpu_model_is_recognised():
    info = read_tflite(custom_op_model())
    assert info.is_edgetpu and info.custom_ops == ["edgetpu-custom-op"]
    assert not read_tflite(V1_EMBED.read_bytes()).is_edgetpu


@pytest.mark.parametrize("data,needle", [(b"", "empty"), (b"hello world, not a model", "not a TFLite model"),
                                         (None, "corrupt")])
def test_bad_bytes_give_one_line(data, needle):
    if data is None:  # a real model cut short
        data = V1_EMBED.read_bytes()[:64]
    with pytest.raises(ModelError) as exc:
        read_tflite(data, "m.tflite")
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_damaged_and_packed_model_files_are_named_for_what_they_are():
    """A cut-off head, a cut-off body and a gzip/zip of a model each get their own words (the head was 'not a
    TFLite model ... got TFL3', the body leaked struct's 'unpack_from requires a buffer of at least ...')."""
    import gzip
    import io
    import zipfile

    data = V1_EMBED.read_bytes()
    with pytest.raises(ModelError, match=r"is truncated \(10 bytes"):
        read_tflite(data[:10], "m.tflite")
    with pytest.raises(ModelError, match=r"corrupt or truncated TFLite model \(it is [\d,]+ bytes but its contents need"):
        read_tflite(data[: len(data) // 2], "m.tflite")
    with pytest.raises(ModelError, match="gzip-compressed; unpack it first"):
        read_tflite(gzip.compress(data), "m.tflite")
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as z:
        z.writestr("m.tflite", data)
    with pytest.raises(ModelError, match="zip archive"):
        read_tflite(packed.getvalue(), "m.zip")
