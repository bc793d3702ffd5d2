"""Datasets, transforms and data modules: COCO-format detection data, the synthetic shapes set, and
image-folder classification data.

The names below are imported from their modules on first use (PEP 562), so the converters and the dataset
checks, which need neither torch nor Lightning, start in a fraction of a second.
"""

import importlib

_HOME = {
    "CocoDetectionDataset": "coco",
    "CocoRecords": "coco_records",
    "DatasetChecks": "coco_records",
    "ImageRecord": "image_record",
    "PackedRecords": "packed_records",
    "load_checked_coco": "coco_records",
    "load_coco_quietly": "coco_records",
    "collate_detection": "collate",
    "CocoDataModule": "datamodule",
    "CocoDataOptions": "datamodule",
    "ImageFolderDataModule": "image_folder",
    "ImageFolderDataOptions": "image_folder",
    "make_image_folder_dataset": "image_folder",
    "SHAPE_NAMES": "shapes",
    "make_shapes_dataset": "shapes",
    "build_train_transforms": "transforms",
    "build_val_transforms": "transforms",
    "DatasetError": "validation",
    "DatasetReport": "validation",
    "check_num_classes": "validation",
}


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))


__all__ = [
    "SHAPE_NAMES",
    "CocoDataModule",
    "CocoDataOptions",
    "CocoDetectionDataset",
    "CocoRecords",
    "DatasetChecks",
    "DatasetError",
    "DatasetReport",
    "ImageFolderDataModule",
    "ImageFolderDataOptions",
    "ImageRecord",
    "PackedRecords",
    "build_train_transforms",
    "build_val_transforms",
    "check_num_classes",
    "collate_detection",
    "load_checked_coco",
    "load_coco_quietly",
    "make_image_folder_dataset",
    "make_shapes_dataset",
]
