"""SA-1B data: conversion to TFRecord, synthetic SA-1B-format data, and the grain input pipeline.

See samjax/data/README.md. Modules: tfrecord (framing + CRC32C), example (tf.train.Example schema),
sa1b_format (validation of sa_N.jpg/json), sa1b (converter CLI), coco (COCO instances -> the same TFRecords),
synthetic (generator CLI), rle (COCO RLE),
preprocess (record -> fixed-shape arrays), source (grain TFRecord reader), pipeline (grain pipeline),
tfds (TFDS segment_anything interop), bench (throughput benchmark).
"""
