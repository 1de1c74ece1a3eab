"""The dataset class shared by the embedded procedural datasets: lazy drawing, a bounded cache, fixed splits."""

from __future__ import annotations

import torch

from ..errors import MobileNetError


class ProceduralDataset(torch.utils.data.Dataset):
    """One split of a procedural dataset at one resolution, drawn lazily by ``renderer`` and cached as uint8.

    ``renderer`` has ``splits`` (split name -> (size, stream id)), ``label(index)`` and
    ``render(split, index, resolution) -> (uint8 array [R, R, 3], label)``; subclasses set ``class_names``.
    ``size`` takes a prefix of the split (labels go round-robin, so a prefix stays class-balanced); images past
    ``cache_bytes`` are redrawn each time.
    """

    class_names: tuple[str, ...] = ()

    def __init__(self, renderer, split: str, resolution: int, transform=None, size: int | None = None,
                 cache_bytes: int = 2 << 30):
        if split not in renderer.splits:
            raise MobileNetError(f"unknown split {split!r}; expected one of {', '.join(renderer.splits)}")
        full = renderer.splits[split][0]
        self.split, self.resolution, self.transform = split, int(resolution), transform
        self.size = full if size is None else min(int(size), full)
        self.renderer = renderer
        self.class_names = list(self.class_names)
        self.labels = [renderer.label(i) for i in range(self.size)]
        self._cache: dict[int, torch.Tensor] = {}
        self._cache_left = cache_bytes

    def __len__(self) -> int:
        return self.size

    def image(self, index: int) -> torch.Tensor:
        """Image ``index`` as a uint8 tensor ``[3, R, R]`` (no transform)."""
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} images")
        cached = self._cache.get(index)
        if cached is None:
            array, _ = self.renderer.render(self.split, index, self.resolution)
            cached = torch.from_numpy(array).permute(2, 0, 1)
            if self._cache_left >= cached.numel():
                self._cache[index] = cached
                self._cache_left -= cached.numel()
        return cached

    def __getitem__(self, index: int):
        x = self.image(index)
        return (x if self.transform is None else self.transform(x)), self.labels[index]
