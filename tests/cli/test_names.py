"""One vocabulary: backends ``pytorch``/``tensorflow`` with aliases ``torch``/``tf``; engines keep their names."""

from __future__ import annotations

import click
import pytest

from ptycho_bridge.cli.names import BackendChoice, normalise_backend
from ptycho_bridge.ops.engines import ENGINE_NAMES


@pytest.mark.parametrize("given,canonical", [("torch", "pytorch"), ("tf", "tensorflow"), ("PyTorch", "pytorch"),
                                             ("tensorflow", "tensorflow")])
def test_backend_aliases(given: str, canonical: str) -> None:
    assert BackendChoice().convert(given, None, None) == canonical
    assert normalise_backend(given) == canonical


def test_unknown_backend_is_a_usage_error() -> None:
    with pytest.raises(click.BadParameter):
        BackendChoice().convert("keras", None, None)


def test_engine_names() -> None:
    assert set(ENGINE_NAMES) == {"torch", "keras", "onnx"}
