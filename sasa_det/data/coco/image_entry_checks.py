"""The checks of a COCO json's ``images`` section (the entries, not the files: those are
:mod:`~sasa_det.data.coco.image_file_checks`).

Each image needs an integer ``id`` (unique), a ``file_name`` that is a non-empty string used by no other image,
and ``height`` / ``width`` that are positive ints.
"""

from __future__ import annotations

from collections import defaultdict

from sasa_det.data.coco.json_values import is_int, records_with_ids
from sasa_det.data.coco.problems import Problem

__all__ = ["image_entry_problems"]


def image_entry_problems(images: list, file: str) -> tuple[list[Problem], dict[int, dict], dict[int, list[int]]]:
    """Problems of the ``images`` list, each naming the image's position (dropping it removes the problem).

    Returns:
        ``(problems, valid, positions)``: the valid images by id (an image whose id appears twice is not
        valid), and the positions in the list of every integer image id.
    """
    problems: list[Problem] = []
    valid: dict[int, dict] = {}
    id_positions: dict[int, list[int]] = defaultdict(list)
    file_positions: dict[str, list[int]] = defaultdict(list)
    for index, img in records_with_ids(images, file, "images", problems, id_positions):
        if isinstance(img.get("file_name"), str) and img["file_name"]:
            file_positions[img["file_name"]].append(index)
        found = _entry_problems(img, index, file)
        problems += found
        if not found:
            valid[img["id"]] = img
    problems += _duplicate_problems(images, id_positions, file_positions, valid, file)
    return problems, valid, id_positions


def _entry_problems(img: dict, index: int, file: str) -> list[Problem]:
    """Problems of one image entry that has an integer id: its file name and size."""
    record = f"image id {img['id']}"
    problems = []
    if not isinstance(img.get("file_name"), str) or not img["file_name"]:
        problems.append(
            Problem(
                file,
                record,
                f"has no 'file_name' string ({img.get('file_name')!r})",
                "set file_name to the image's path relative to the image folder",
                "images",
                index,
            )
        )
    for key in ("height", "width"):
        if not is_int(img.get(key)) or img[key] <= 0:
            problems.append(
                Problem(
                    file,
                    record,
                    f"has {key}={img.get(key)!r}; every image needs 'id', 'file_name', 'height' and 'width' (positive ints)",
                    f"set {key} to the image's size in pixels",
                    "images",
                    index,
                )
            )
    return problems


def _duplicate_problems(
    images: list,
    id_positions: dict[int, list[int]],
    file_positions: dict[str, list[int]],
    valid: dict[int, dict],
    file: str,
) -> list[Problem]:
    """Every entry of an id that appears twice (removed from ``valid``), and every later entry of a file name."""
    problems = []
    for image_id, positions in id_positions.items():
        if len(positions) > 1:
            valid.pop(image_id, None)
            problems += [
                Problem(
                    file,
                    f"image id {image_id}",
                    f"appears twice in 'images' (positions {positions}); image ids must be unique",
                    "give each image its own id",
                    "images",
                    i,
                )
                for i in positions
            ]
    for name, positions in file_positions.items():
        for i in positions[1:]:
            problems.append(
                Problem(
                    file,
                    f"image id {images[i]['id']}",
                    f"uses file_name {name!r} like image id {images[positions[0]]['id']}",
                    "remove the duplicate image entry",
                    "images",
                    i,
                )
            )
    return problems
