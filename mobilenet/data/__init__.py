"""Data for training and evaluation: the embedded "shapes" dataset, on-disk readers, transforms.

``load_data`` returns a ``DataBundle`` for the embedded dataset or a folder (class sub-folders or ImageNet layout,
CIFAR-10/100 python batches, MNIST IDX files); ``eval_transform`` and ``load_image`` prepare single images the way
evaluation does.
"""

from .load import DATA_FORMATS, EMBEDDED_DATASETS, DataBundle, detect_format, load_data
from .shapes import CLASS_NAMES as SHAPES_CLASSES
from .shapes import ShapesConfig, ShapesDataset
from .transforms import (
                         AUGMENTATIONS,
                         IMAGENET_MEAN,
                         IMAGENET_STD,
                         EvalTransform,
                         TrainTransform,
                         build_transform,
                         eval_transform,
                         load_image,
)

__all__ = [
    "AUGMENTATIONS", "DATA_FORMATS", "DataBundle", "EMBEDDED_DATASETS", "EvalTransform", "IMAGENET_MEAN",
    "IMAGENET_STD", "SHAPES_CLASSES", "ShapesConfig", "ShapesDataset", "TrainTransform", "build_transform",
    "detect_format", "eval_transform", "load_data", "load_image",
]
