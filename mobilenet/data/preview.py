"""A contact sheet of an embedded dataset: one row per class, so a person can see what each label looks like."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import MobileNetError


def contact_sheet(name: str, out: str | Path, per_class: int = 8, resolution: int = 64, split: str = "train",
                  scale: int = 1) -> Path:
    """Draws ``per_class`` images of every class of embedded dataset ``name`` into one PNG, a row per class, the
    class name at the left of its row.

    Args:
        name: an embedded dataset ("patterns", "shapes").
        out: the PNG to write.
        per_class: images per row.
        resolution: side of each image as drawn (the dataset draws natively at any side).
        split: the split the images come from.
        scale: nearest-neighbour enlargement of each image (to look at small resolutions).
    """
    from .load import EMBEDDED

    if name not in EMBEDDED:
        raise MobileNetError(f"unknown embedded dataset {name!r}; available: {', '.join(EMBEDDED)}")
    dataset = EMBEDDED[name][0](split, resolution)
    classes = len(dataset.class_names)
    if per_class * classes > len(dataset):
        raise MobileNetError(f"the {split} split has {len(dataset)} images, fewer than {per_class} per class")
    side, label_w = resolution * scale, 110
    sheet = Image.new("RGB", (label_w + per_class * (side + 2), classes * (side + 2)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, class_name in enumerate(dataset.class_names):
        y = c * (side + 2)
        draw.text((4, y + side // 2 - 6), class_name, fill="black")
        # Labels go round-robin, so image c + k * classes is the k-th image of class c.
        for k in range(per_class):
            image = dataset.image(c + k * classes).permute(1, 2, 0).numpy()
            tile = Image.fromarray(np.ascontiguousarray(image))
            if scale > 1:
                tile = tile.resize((side, side), Image.NEAREST)
            sheet.paste(tile, (label_w + k * (side + 2), y))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
