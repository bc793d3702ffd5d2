"""Datasets, transforms and data modules: COCO-format detection data, the synthetic shapes set, and
image-folder classification data.

The package is in wings by job:

- :mod:`~sasa_det.data.coco`: reading and checking COCO-format data (the json checks per section, the image
  checks, the report, the check cache, the packed records) and the dataset that serves the records;
- :mod:`~sasa_det.data.loading`: the data module, the resumable and sharded samplers, collation, transforms;
- :mod:`~sasa_det.data.formats`: VOC / YOLO converters, the COCO writer, VOC export, the train/val split;
- :mod:`~sasa_det.data.image_io` (how every image is read), :mod:`~sasa_det.data.shapes` (the synthetic shapes
  set) and :mod:`~sasa_det.data.image_folder` (image-folder classification data).

The names below are imported from their modules on first use (PEP 562), so the converters and the dataset
checks, which need neither torch nor Lightning, start in a fraction of a second.
"""

from sasa_det.lazy_names import lazy_names

_HOME = {
    "CocoDetectionDataset": "coco.dataset",
    "CocoRecords": "coco.split_records",
    "DatasetChecks": "coco.reader",
    "ImageRecord": "coco.image_record",
    "PackedRecords": "coco.packed_records",
    "load_checked_coco": "coco.reader",
    "load_coco_quietly": "coco.reader",
    "collate_detection": "loading.collate",
    "CocoDataModule": "loading.coco_datamodule",
    "CocoDataOptions": "loading.options",
    "ImageFolderDataModule": "image_folder",
    "ImageFolderDataOptions": "loading.options",
    "make_image_folder_dataset": "image_folder",
    "SHAPE_NAMES": "shapes",
    "make_shapes_dataset": "shapes",
    "build_train_transforms": "loading.transforms",
    "build_val_transforms": "loading.transforms",
    "DatasetError": "coco.problems",
    "DatasetReport": "coco.report",
    "check_num_classes": "coco.category_checks",
    "check_dataset": "coco.check_dataset",
    "check_splits": "coco.check_dataset",
    "load_shared_records": "coco.shared_records",
    "convert_voc": "formats.convert_voc",
    "convert_yolo": "formats.convert_yolo",
    "export_voc": "formats.export_voc",
    "split_coco": "formats.split",
}


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
    "check_dataset",
    "check_num_classes",
    "check_splits",
    "collate_detection",
    "convert_voc",
    "convert_yolo",
    "export_voc",
    "load_checked_coco",
    "load_coco_quietly",
    "load_shared_records",
    "make_image_folder_dataset",
    "make_shapes_dataset",
    "split_coco",
]
__getattr__, __dir__ = lazy_names(__name__, _HOME, globals())
