"""Reading and checking COCO-format data: a split read, checked and fixed into packed per-image records with a
report of what was fixed or dropped, and the check cache. Nothing here needs torch or Lightning (the dataset
that serves the records is :mod:`sasa_det.data.loading.dataset`); the package-level names live in
:mod:`sasa_det.data`.
"""
