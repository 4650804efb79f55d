"""Backends (TensorFlow/Keras, PyTorch, ONNX). Each submodule imports its framework lazily; this package imports none."""
