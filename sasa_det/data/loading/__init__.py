"""Loading COCO-format detection data for training and evaluation: the data module, the resumable and sharded
samplers, batch collation and the transforms.

Nothing is imported here; the package-level names live in :mod:`sasa_det.data`.
"""
