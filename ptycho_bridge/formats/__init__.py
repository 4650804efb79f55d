"""Archive formats: era detection, the reader interface, and the bridge-2 format (layout, read, write, verify)."""
