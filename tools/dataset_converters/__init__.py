"""Converters from VOC XML, CSV and YOLO txt to COCO json (run them as
scripts; ``common`` holds what they share)."""
