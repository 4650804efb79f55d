"""The Python API behind ``ptycho_bridge.load_model`` / ``save_torch`` / ``save_keras`` (docs/api.md).

Why a package of its own: these functions sit above ``ops`` (they turn live framework objects into
what the operations take) and are re-exported lazily by ``ptycho_bridge/__init__.py``, so that
``import ptycho_bridge`` stays cheap and never imports torch or TensorFlow.
"""
