"""§2.5.3 ``fit``'s batches, epoch by epoch, and its check pass before any weight moves.

From tensors, the book's way: a fresh ``BatchGenerator`` per epoch (in order unless
``shuffle``), every image and label checked up front. From any iterable of ``(images,
labels)`` batches (a ``DataLoader``, a list of pairs), as a PyTorch loop takes them: the
iterable is iterated once per epoch, in its own order and batch size; each batch is moved
to the model's device (its labels checked where they come from, so a CPU DataLoader costs
no device sync) and checked before its step, and the first one before any weight moves.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import Any

import torch
from torch import nn

from dl_ch2._checks import (
    require_device,
    require_images,
    require_label_range,
    require_labels,
    require_positive_int,
    require_probabilities,
    require_tensor,
)
from dl_ch2._steps import modes
from dl_ch2.batch_generator import BatchGenerator, num_batches

__all__ = ["Batches", "check_pass"]

#: One batch as ``fit`` runs it: (index in the epoch, images, labels, the epoch's last?).
Batch = tuple[int, torch.Tensor, torch.Tensor, bool]


class Batches:
    """The batches of each epoch, checked; ``num_batches`` is None for an iterable of
    unknown length. ``sample`` and ``sample_labels`` are what the check pass looks at."""

    def __init__(
        self,
        images: object,
        labels: object,
        epochs: int,
        batch_size: int | None,
        shuffle: bool,
        generator: torch.Generator | None,
        weights: Sequence[torch.Tensor],
    ) -> None:
        self.weights = weights
        self.num_batches: int | None
        if isinstance(images, torch.Tensor):
            self._from_tensors(images, labels, batch_size, shuffle, generator)
        else:
            self._from_iterable(images, labels, epochs, batch_size, shuffle, generator)

    def _from_tensors(
        self,
        images: torch.Tensor,
        labels: object,
        batch_size: int | None,
        shuffle: bool,
        generator: torch.Generator | None,
    ) -> None:
        if labels is None:
            raise TypeError(
                "labels are missing: pass them with the images tensor (fit(model, images, "
                "labels, epochs)), or pass an iterable of (images, labels) batches as images"
            )
        self.batch_size = 128 if batch_size is None else batch_size  # the book's 128
        require_positive_int("batch_size", self.batch_size)
        self.images = require_images(images, self.weights)
        self.labels = require_labels(labels, images)
        if self.labels.device != images.device:
            require_device("labels", self.labels, images.device)
        self.shuffle, self.generator = shuffle, generator
        self.num_batches = num_batches(len(images), self.batch_size)
        self.sample, self.sample_labels = self.images[:1], self.labels
        self.data: Iterable[Any] | None = None

    def _from_iterable(
        self,
        data: object,
        labels: object,
        epochs: int,
        batch_size: int | None,
        shuffle: bool,
        generator: torch.Generator | None,
    ) -> None:
        if labels is not None or not isinstance(data, Iterable):
            raise (ValueError if labels is not None else TypeError)(
                f"images is a {type(data).__name__}: pass images as a torch.Tensor with "
                "labels, or an iterable of (images, labels) batches (a DataLoader, a list "
                "of pairs) with labels left out"
            )
        if batch_size is not None or shuffle or generator is not None:
            raise ValueError(
                "batch_size, shuffle and generator are for images given as tensors; an "
                "iterable of batches (a DataLoader) has its own: set them there"
            )
        self.pending: Iterator[Any] | None = iter(data)
        if self.pending is data and epochs > 1:
            raise ValueError(
                f"images is an iterator ({type(data).__name__}), which runs out after one "
                "epoch: pass a re-iterable (a DataLoader, a list of batches) or epochs=1"
            )
        first = next(self.pending, None)
        if first is None:
            raise ValueError(
                "images (an iterable of batches) yielded no batch: nothing to train on"
            )
        self.first = self._checked(first, 0)
        self.sample, self.sample_labels = self.first
        self.num_batches = len(data) if isinstance(data, Sized) else None
        self.data = data

    def _checked(self, batch: object, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """An (images, labels) pair on the model's device, of the model's dtype."""
        if not isinstance(batch, tuple | list) or len(batch) != 2:
            raise TypeError(
                "images must yield (images, labels) pairs, as a DataLoader over a "
                f"TensorDataset does; batch {index} is a {type(batch).__name__}"
            )
        x, y = batch
        labels = require_labels(y, require_tensor("images", x))  # where they are: no device sync
        device = self.weights[0].device
        return require_images(x.to(device), self.weights), labels.to(device)

    def epoch(self) -> Iterator[Batch]:
        """This epoch's batches, each with its index and whether it is the last."""
        if self.data is None:
            batch_generator = BatchGenerator(
                self.images,
                self.labels,
                self.batch_size,
                shuffle=self.shuffle,
                generator=self.generator,
            )
            for k in range(batch_generator.num_batches):
                images_batch, labels_batch = batch_generator.next()
                yield k, images_batch, labels_batch, k == batch_generator.num_batches - 1
            return
        yield from self._iterable_epoch()

    def _iterable_epoch(self) -> Iterator[Batch]:
        if self.pending is not None:  # epoch 0 goes on from the batch already checked
            batches: Iterator[Any] = itertools.chain([self.first], self.pending)
            self.pending = None
        else:
            batches = iter(self.data or ())
        current = next(batches, None)
        if current is None:
            raise ValueError("images (an iterable of batches) yielded no batch in this epoch")
        for k in itertools.count():
            following = next(batches, None)
            x, y = current if k == 0 and current is self.first else self._checked(current, k)
            yield k, x, y, following is None
            if following is None:
                return
            current = following


def check_pass(model: nn.Module, batches: Batches, probabilities: bool) -> None:
    """One forward pass on one image, in eval mode under ``torch.inference_mode()`` (a
    BatchNorm uses its running statistics, nothing is recorded, no weight moves): the
    model's width bounds the labels, and under the book's loss (``probabilities``) its
    outputs must be probabilities.
    """
    with modes(model, training=False), torch.inference_mode():
        predictions = model(batches.sample[:1])
    torch.clear_autocast_cache()  # the casts made under inference_mode are not for training
    require_label_range(batches.sample_labels, predictions.shape[-1])
    if probabilities:
        require_probabilities(predictions)
