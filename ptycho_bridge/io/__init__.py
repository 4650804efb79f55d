"""Untrusted bytes, no format knowledge: the bounded zip container, the inert pickle reader, HDF5 guards, atomic writes."""
