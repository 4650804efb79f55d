"""ONNX: export a network to an ONNX graph (no TF/torch) and run it with ONNX Runtime. onnx is imported lazily.

Modules: ``layout`` (graph contract names, minimum opset), ``graph`` (GraphBuilder, OnnxExportError),
``network`` (the CNN op by op), ``reassembly`` (TF's reassembly stage), ``export`` (build_onnx,
save_onnx), ``engine`` (the engine protocol and ONNX Runtime sessions).
"""
