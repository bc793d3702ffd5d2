"""Datasets, transforms and data modules: COCO-format detection data, the synthetic shapes set, and
image-folder classification data."""

from sasa_det.data.coco import CocoDetectionDataset
from sasa_det.data.coco_records import CocoRecords, DatasetChecks, ImageRecord, load_checked_coco, load_coco_quietly
from sasa_det.data.collate import collate_detection
from sasa_det.data.datamodule import CocoDataModule, CocoDataOptions
from sasa_det.data.image_folder import ImageFolderDataModule, make_image_folder_dataset
from sasa_det.data.shapes import SHAPE_NAMES, make_shapes_dataset
from sasa_det.data.transforms import build_train_transforms, build_val_transforms
from sasa_det.data.validation import DatasetError, DatasetReport, check_num_classes

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
    "ImageRecord",
    "build_train_transforms",
    "build_val_transforms",
    "check_num_classes",
    "collate_detection",
    "load_checked_coco",
    "load_coco_quietly",
    "make_image_folder_dataset",
    "make_shapes_dataset",
]
