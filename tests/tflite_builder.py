"""Write small but real .tflite flatbuffers for tests, with the `flatbuffers` package.

Used for the one model this machine cannot have: an Edge TPU-compiled model (the file in
../shared is empty). The model built here is what edgetpu_compiler emits in shape: a graph
whose work is one custom op named ``edgetpu-custom-op``.
"""
from __future__ import annotations

import flatbuffers

UINT8 = 3
CUSTOM = 32


def _vector_i32(b: flatbuffers.Builder, values: list[int]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependInt32(v)
    return b.EndVector()


def _vector_offsets(b: flatbuffers.Builder, offs: list[int]) -> int:
    b.StartVector(4, len(offs), 4)
    for o in reversed(offs):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def custom_op_model(custom_code: str = "edgetpu-custom-op", in_shape=(1, 224, 224, 3), out_shape=(1, 1001)) -> bytes:
    b = flatbuffers.Builder(1024)
    code = b.CreateString(custom_code)
    b.StartObject(4)  # OperatorCode
    b.PrependInt8Slot(0, CUSTOM, 0)
    b.PrependUOffsetTRelativeSlot(1, code, 0)
    b.PrependInt32Slot(2, 1, 1)
    b.PrependInt32Slot(3, CUSTOM, 0)
    opcode = b.EndObject()

    tensors = []
    for name, shape in (("input", in_shape), ("output", out_shape)):
        n = b.CreateString(name)
        s = _vector_i32(b, list(shape))
        b.StartObject(4)  # Tensor: shape, type, buffer, name
        b.PrependUOffsetTRelativeSlot(0, s, 0)
        b.PrependInt8Slot(1, UINT8, 0)
        b.PrependUint32Slot(2, 0, 0)
        b.PrependUOffsetTRelativeSlot(3, n, 0)
        tensors.append(b.EndObject())
    custom_options = b.CreateByteVector(b"\x00" * 16)
    ins, outs = _vector_i32(b, [0]), _vector_i32(b, [1])
    b.StartObject(6)  # Operator
    b.PrependUint32Slot(0, 0, 0)
    b.PrependUOffsetTRelativeSlot(1, ins, 0)
    b.PrependUOffsetTRelativeSlot(2, outs, 0)
    b.PrependUOffsetTRelativeSlot(5, custom_options, 0)
    op = b.EndObject()

    tvec = _vector_offsets(b, tensors)
    sg_in, sg_out = _vector_i32(b, [0]), _vector_i32(b, [1])
    ovec = _vector_offsets(b, [op])
    sg_name = b.CreateString("main")
    b.StartObject(5)  # SubGraph
    b.PrependUOffsetTRelativeSlot(0, tvec, 0)
    b.PrependUOffsetTRelativeSlot(1, sg_in, 0)
    b.PrependUOffsetTRelativeSlot(2, sg_out, 0)
    b.PrependUOffsetTRelativeSlot(3, ovec, 0)
    b.PrependUOffsetTRelativeSlot(4, sg_name, 0)
    subgraph = b.EndObject()

    b.StartObject(1)  # Buffer (empty, index 0 by convention)
    buf0 = b.EndObject()
    opcodes = _vector_offsets(b, [opcode])
    subgraphs = _vector_offsets(b, [subgraph])
    buffers = _vector_offsets(b, [buf0])
    desc = b.CreateString("edgetpu-like test model")
    b.StartObject(8)  # Model
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(1, opcodes, 0)
    b.PrependUOffsetTRelativeSlot(2, subgraphs, 0)
    b.PrependUOffsetTRelativeSlot(3, desc, 0)
    b.PrependUOffsetTRelativeSlot(4, buffers, 0)
    model = b.EndObject()
    b.Finish(model, file_identifier=b"TFL3")
    return bytes(b.Output())
