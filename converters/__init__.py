"""Workstation-side converters: pretrained image models -> int8 .tflite embedding models.

Importing this package is cheap: TensorFlow and torch are imported only inside the functions
that need them, so ``edgeembed`` can register the ``convert`` command without loading them.
Reusable pieces: :mod:`converters.quantize` (Keras -> TFLite, calibration data),
:mod:`converters.fidelity` (float vs int8 agreement), :mod:`converters.metadata` (ModelSpec and
standard TFLite metadata inside the file), :mod:`converters.archs` (Keras architectures) and
:mod:`converters.torch_weights` (PyTorch state-dict import).
"""
