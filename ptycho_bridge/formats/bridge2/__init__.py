"""The bridge-2 archive format (docs/archive-format.md): layout constants, reader, writer, verifier side by side."""
