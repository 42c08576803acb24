"""§2.5.1 A batch generator.

``BatchGenerator`` walks through the data in order, ``batch_size`` samples at a time, and
keeps the last, partial batch: 60,000 samples at 128 give 469 batches, the last of 96.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from dl_ch2._checks import require_positive_int

__all__ = ["BatchGenerator", "num_batches"]


def num_batches(num_samples: int, batch_size: int) -> int:
    """Batches per epoch with the last partial batch kept: ``ceil(n / batch_size)``."""
    require_positive_int("batch_size", batch_size)
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    return math.ceil(num_samples / batch_size)


def _take(data: Any, index: torch.Tensor) -> Any:
    if isinstance(data, torch.Tensor):
        return data.index_select(0, index.to(data.device))
    return np.asarray(data)[index.numpy()]


class BatchGenerator:
    """§2.5.1: yields ``(images, labels)`` batches in order, the last partial one kept.

    Works on torch tensors and NumPy arrays. The book's ``next()`` method and the Python
    iterator protocol are both supported; after the last batch both raise StopIteration
    (the book's version would silently return empty batches). With ``shuffle=True`` the
    samples are permuted once, with ``generator``, when the generator is created (the book
    does not shuffle, so it is off by default); batches are then contiguous slices.
    """

    def __init__(
        self,
        images: Any,
        labels: Any,
        batch_size: int = 128,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        require_positive_int("batch_size", batch_size)
        n_images, n_labels = len(images), len(labels)
        if n_images != n_labels:
            raise ValueError(
                f"images and labels must have the same length, got {n_images} images "
                f"(shape {tuple(images.shape)}) and {n_labels} labels "
                f"(shape {tuple(labels.shape)})"
            )
        if n_images == 0:
            raise ValueError("images and labels are empty: nothing to batch")
        if shuffle:
            # drawn where the generator lives, not on torch's default device
            where = generator.device if generator is not None else torch.device("cpu")
            perm = torch.randperm(n_images, generator=generator, device=where)
            images, labels = _take(images, perm), _take(labels, perm)
        self.index = 0
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.num_batches = num_batches(n_images, batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def next(self) -> tuple[Any, Any]:
        """The book's method: the next batch, advancing ``index`` by ``batch_size``."""
        if self.index >= len(self.images):
            raise StopIteration
        images = self.images[self.index : self.index + self.batch_size]
        labels = self.labels[self.index : self.index + self.batch_size]
        self.index += self.batch_size
        return images, labels

    def __next__(self) -> tuple[Any, Any]:
        return self.next()

    def __iter__(self) -> BatchGenerator:
        return self
