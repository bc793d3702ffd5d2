"""Dataset formats: converters from Pascal VOC and YOLO to a COCO instances json, the COCO writer they share,
export of a COCO split to VOC, and the train/validation split of a COCO file.

None of them imports torch; nothing is imported here.
"""
