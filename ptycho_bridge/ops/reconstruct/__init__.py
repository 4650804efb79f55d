"""``reconstruct``: a scan dataset + a model archive → the stitched object, as upstream's TF inference does.

Modules, in pipeline order: :mod:`.npzfile` (zip-level ``.npz`` access), :mod:`.h5scan` (HDF5 scans: pure metadata
scan or libhdf5 in the isolated child), :mod:`.patterns` (chunked pattern reads), :mod:`.dataset` (validation), :mod:`.modelinfo` (archive facts), :mod:`.grouping`, :mod:`.normalise`,
:mod:`.merge` (per-group reassembly), :mod:`.stitch` (streaming canvas), :mod:`.pipeline`
(:func:`reconstruct`), :mod:`.outputs` (files and the report). The algorithm follows
``../shared/docs/upstream-inference.md``; differences from upstream are listed in ``docs/user-guide.md``.
"""
