"""Reading and checking COCO-format data: a split read, checked and fixed into packed per-image records with a
report of what was fixed or dropped, the check cache, and the dataset that serves the records.

Nothing is imported here: the checks need neither torch nor Lightning (only :mod:`.dataset` does), and the
package-level names live in :mod:`sasa_det.data`.
"""
