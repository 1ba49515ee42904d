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
