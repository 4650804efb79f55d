"""Reader of upstream's SavedModel-era TF archives (``tf-savedmodel-1``), without TensorFlow or Keras.

Why a package: the era needs four wire formats (protobuf messages, a LevelDB table, a TensorBundle
checkpoint, Keras 2 config JSON) that no other era uses; each has its own bounded parser here, and
:mod:`.read` assembles them into the neutral :class:`~ptycho_bridge.model.BridgeArchive`.
"""
