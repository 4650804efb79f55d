"""``python -m ptycho_bridge``: the same as the ``ptycho-bridge`` command."""

from ptycho_bridge.cli import main

main()
