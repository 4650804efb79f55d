"""ONNX: export a network to an ONNX graph (no TF/torch) and run it with ONNX Runtime. onnx is imported lazily."""
