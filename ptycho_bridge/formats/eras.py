"""Era readers, one module per archive family; :data:`READERS` is the detection order."""

from converters.pytorch.read import (
    LightningCheckpointReader,
    TorchBundleReader,
    TorchJsonReader,
)
from converters.tensorflow.read import TfModelManagerReader
from ptycho_bridge.formats.base import EraReader
from ptycho_bridge.formats.bridge2.read import BridgeReader

READERS: tuple[type[EraReader], ...] = (
    BridgeReader,
    TorchJsonReader,
    TfModelManagerReader,
    TorchBundleReader,
    LightningCheckpointReader,
)

__all__ = ["EraReader", "READERS", "BridgeReader", "TfModelManagerReader", "TorchBundleReader",
           "TorchJsonReader", "LightningCheckpointReader"]
