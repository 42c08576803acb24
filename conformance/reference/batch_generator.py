"""§2.5.1 BatchGenerator in NumPy: in order, last partial batch kept, optional seeded shuffle."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from conformance.reference._checks import require_positive_int

__all__ = ["BatchGenerator", "num_batches"]


def num_batches(num_samples: int, batch_size: int) -> int:
    require_positive_int("batch_size", batch_size)
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    return math.ceil(num_samples / batch_size)


class BatchGenerator:
    """§2.5.1: ``next()`` and iteration yield ``(images, labels)``; StopIteration at the end."""

    def __init__(
        self,
        images: Any,
        labels: Any,
        batch_size: int = 128,
        *,
        shuffle: bool = False,
        rng: np.random.Generator | None = None,
    ) -> None:
        require_positive_int("batch_size", batch_size)
        n_images, n_labels = len(images), len(labels)
        if n_images != n_labels:
            raise ValueError(
                f"images and labels must have the same length, got {n_images} images "
                f"(shape {tuple(np.shape(images))}) and {n_labels} labels "
                f"(shape {tuple(np.shape(labels))})"
            )
        if n_images == 0:
            raise ValueError("images and labels are empty: nothing to batch")
        if shuffle:
            perm = (rng if rng is not None else np.random.default_rng()).permutation(n_images)
            images, labels = np.asarray(images)[perm], np.asarray(labels)[perm]
        self.index = 0
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.num_batches = num_batches(n_images, batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def next(self) -> tuple[Any, Any]:
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
