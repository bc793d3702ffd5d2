"""The GPU check's ``environment`` section: versions, the GPU, and the packages a bare PyTorch image lacks."""

from __future__ import annotations

import importlib.util
import platform
from collections.abc import Iterator

__all__ = ["EXTRA_PACKAGES", "MISSING_PACKAGE_HINT", "environment"]

#: The packages this project needs that a bare PyTorch image (torch, torchvision, Lightning) lacks.
EXTRA_PACKAGES = {"omegaconf": "omegaconf", "pycocotools": "pycocotools", "faster_coco_eval": "faster-coco-eval"}
MISSING_PACKAGE_HINT = (
    "On a machine without network: download the wheels elsewhere with "
    "`pip download --no-deps --only-binary=:all: --python-version 3.12 -d wheels omegaconf pycocotools "
    "faster-coco-eval antlr4-python3-runtime`, copy the folder, then "
    "`pip install --no-index --no-deps wheels/*.whl` (or `--target DIR` and `PYTHONPATH=DIR`)."
)


def environment(settings: dict) -> Iterator[dict]:
    """Versions and the GPU."""
    import torch

    record = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    triton = importlib.util.find_spec("triton")
    if triton is not None:
        import triton as triton_module

        record["triton"] = triton_module.__version__
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        record.update(
            gpu=properties.name,
            capability=f"{properties.major}.{properties.minor}",
            memory_gib=round(properties.total_memory / 2**30, 1),
            gpus=torch.cuda.device_count(),
        )
    missing = [package for module, package in EXTRA_PACKAGES.items() if importlib.util.find_spec(module) is None]
    record["missing_packages"] = missing
    if missing:
        record["install"] = MISSING_PACKAGE_HINT
    yield record
