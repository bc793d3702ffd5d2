"""Datasets, transforms and data modules: COCO-format detection data, the synthetic shapes set, and
image-folder classification data.

The package is in wings by job:

- :mod:`~sasa_det.data.coco`: reading and checking COCO-format data (the json checks per section, the image
  checks, the report, the check cache, the packed records);
- :mod:`~sasa_det.data.loading`: the dataset that serves the records, the data module and its options, the
  resumable and sharded samplers, collation, transforms;
- :mod:`~sasa_det.data.formats`: VOC / YOLO converters, the COCO writer, VOC export, the train/val split;
- :mod:`~sasa_det.data.image_io` (how every image is read), :mod:`~sasa_det.data.shapes` (the synthetic shapes
  set) and :mod:`~sasa_det.data.image_folder` (image-folder classification data).
"""

from sasa_det.lazy_names import lazy_names

_PROVIDED_BY = {
    "loading.dataset": "CocoDetectionDataset",
    "coco.split_records": "CocoRecords",
    "coco.reader": "DatasetChecks load_checked_coco load_coco_quietly",
    "coco.image_record": "ImageRecord",
    "coco.packed_records": "PackedRecords",
    "loading.collate": "collate_detection",
    "loading.coco_datamodule": "CocoDataModule",
    "loading.options": "CocoDataOptions ImageFolderDataOptions",
    "image_folder": "ImageFolderDataModule make_image_folder_dataset",
    "shapes": "SHAPE_NAMES ShapesOptions make_shapes_dataset",
    "loading.transforms": "build_train_transforms build_val_transforms",
    "coco.problems": "DatasetError",
    "coco.report": "DatasetReport",
    "coco.category_checks": "check_num_classes",
    "coco.check_dataset": "check_dataset check_splits",
    "coco.shared_records": "load_shared_records",
    "formats.convert_voc": "convert_voc",
    "formats.convert_yolo": "convert_yolo",
    "formats.export_voc": "export_voc",
    "formats.split": "split_coco",
}
__all__, __getattr__, __dir__ = lazy_names(__name__, globals(), _PROVIDED_BY)
