"""PyTorch: the torch-bundle-2, torch-json-1 and Lightning formats (read and write, no torch needed) and the torch engine."""
