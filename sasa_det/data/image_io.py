"""Robust image reading: every Pillow mode becomes 8-bit RGB, EXIF orientation applied.

What each stored mode becomes (:func:`to_rgb_array`):

- ``RGB``: unchanged. ``L`` / ``1`` (grayscale, bilevel): the gray value copied to the three channels.
- ``P`` / ``PA`` (palette): the palette looked up (``Image.convert``); palette transparency is dropped.
- ``RGBA`` / ``LA`` / ``RGBa`` / ``La``: the **alpha channel is dropped** and the stored colour kept,
  as torchvision's ``decode_image(mode=RGB)`` and detectron2's ``read_image(format="RGB")`` do, so
  an image looks the same to a model trained here and to those libraries' inference code.
- ``CMYK``: converted by Pillow (JPEG Adobe inversion is handled by its decoder); ``YCbCr``, ``LAB``,
  ``HSV``: converted by Pillow.
- 16-bit (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, and ``I`` as Pillow opens 16-bit PNG/TIFF):
  **scaled** from 0..65535 to 0..255 (``round(v / 257)``), not clipped (``Image.convert("RGB")``
  would clip every value above 255 to white). ``I`` values outside 0..65535 are clipped to it.
- ``F`` (32-bit float): values taken as 0..1 and scaled to 0..255 (clipped).

EXIF orientation: the stored pixels are rotated/flipped as the EXIF ``Orientation`` tag says
(``ImageOps.exif_transpose``), i.e. the image is used *as image viewers and annotation tools display
it*. Boxes drawn in a labelling tool are in that displayed frame, which is why detectron2's
``read_image`` and torchvision's ``decode_image(apply_exif_orientation=True)`` apply it; a COCO
``height``/``width`` is therefore compared with the size **after** orientation.

Truncated files are errors (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left off): a half-grey image is
never passed silently to a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "ImageHeader",
    "ImageReadError",
    "conversion_note",
    "exif_orientation",
    "load_rgb_image",
    "read_image_header",
    "to_rgb_array",
]

# EXIF Orientation values 5..8 swap width and height (rotations by 90/270 degrees, transposes).
_SWAPS_SIDES = {5, 6, 7, 8}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_DROPS_ALPHA = {"RGBA", "LA", "RGBa", "La", "PA"}
_ORIENTATION_TAG = 0x0112
# Bytes read from the end of a JPEG when looking for its end-of-image marker (header check).
_JPEG_TAIL = 4096
_PNG_END = b"IEND\xaeB`\x82"


class ImageReadError(OSError):
    """An image file that cannot be read: missing, not an image, or truncated."""


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an image file says.

    Attributes:
        height, width: size **after** EXIF orientation (the size of :func:`load_rgb_image`'s output).
        mode: Pillow mode of the stored pixels (``RGB``, ``L``, ``I;16``, ``CMYK``, ...).
        orientation: EXIF orientation tag (1 = none; 2..8 rotate/flip).
        format: Pillow format name (``JPEG``, ``PNG``, ...).
    """

    height: int
    width: int
    mode: str
    orientation: int
    format: str


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag of an open image (1 when absent or invalid)."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a malformed EXIF block must not make the image unreadable
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def conversion_note(mode: str, orientation: int) -> list[str]:
    """Human-readable list of what :func:`load_rgb_image` does to an image of this mode/orientation."""
    notes = []
    if mode != "RGB":
        how = (
            "scaled from 16 bits" if mode in _SIXTEEN_BIT else "alpha dropped" if mode in _DROPS_ALPHA else "converted"
        )
        notes.append(f"mode {mode} -> RGB ({how})")
    if orientation != 1:
        notes.append(f"EXIF orientation {orientation} applied")
    return notes


def _check_tail(path: Path, image_format: str) -> None:
    """Cheap truncation test: JPEG and PNG files end with a known marker."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if image_format == "JPEG":
            f.seek(max(0, size - _JPEG_TAIL))
            ok = b"\xff\xd9" in f.read()
        elif image_format == "PNG":
            f.seek(max(0, size - 64))
            ok = _PNG_END in f.read()
        else:
            return
    if not ok:
        raise ImageReadError(f"{str(path)!r} is truncated (its {image_format} end marker is missing)")


def read_image_header(path: str | os.PathLike, decode: bool = False) -> ImageHeader:
    """Read an image's size, mode and EXIF orientation; optionally decode every pixel.

    Without ``decode`` only the header is parsed, plus a check that a JPEG/PNG file ends with its
    end marker (catches most truncated files at the cost of reading a few KiB). With ``decode`` the
    whole image is decoded, which also catches corrupt data inside the file.

    Raises:
        ImageReadError: the file is missing, is not an image Pillow can open, or is truncated/corrupt;
            the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{str(path)!r} does not exist")
    try:
        with Image.open(path) as image:
            orientation = exif_orientation(image)
            width, height = image.size
            mode, image_format = image.mode, str(image.format)
            if decode:
                image.load()
    except ImageReadError:
        raise
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise ImageReadError(f"{str(path)!r} cannot be read as an image: {err}") from err
    if not decode:
        _check_tail(path, image_format)
    if orientation in _SWAPS_SIDES:
        width, height = height, width
    return ImageHeader(height=int(height), width=int(width), mode=mode, orientation=orientation, format=image_format)


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB pixels of an (already oriented) Pillow image of any mode (module docstring)."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)
    if mode in _SIXTEEN_BIT:
        values = np.asarray(image).astype(np.float64)
        gray = np.round(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        gray = np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def load_rgb_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file into ``uint8 [H, W, 3]`` RGB with EXIF orientation applied.

    Raises:
        ImageReadError: missing, unreadable or truncated file (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{str(path)!r} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            oriented = ImageOps.exif_transpose(image) if exif_orientation(image) != 1 else image
            array = to_rgb_array(oriented)
    except Exception as err:
        raise ImageReadError(f"{str(path)!r} cannot be decoded: {err}") from err
    return np.array(array, dtype=np.uint8, order="C", copy=True)
