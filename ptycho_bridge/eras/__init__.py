"""Era readers, one module per archive family; :data:`READERS` is the detection order."""

from .base import EraReader
from .bridge import BridgeReader
from .tf_modelmanager import TfModelManagerReader
from .torch_bundle import LightningCheckpointReader, TorchBundleReader, TorchJsonReader

READERS: tuple[type[EraReader], ...] = (
    BridgeReader,
    TorchJsonReader,
    TfModelManagerReader,
    TorchBundleReader,
    LightningCheckpointReader,
)

__all__ = ["EraReader", "READERS", "BridgeReader", "TfModelManagerReader", "TorchBundleReader",
           "TorchJsonReader", "LightningCheckpointReader"]
