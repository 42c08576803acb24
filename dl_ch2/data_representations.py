"""§2.2 Data representations for neural networks.

Ranks of the chapter's example tensors (§2.2.1-2.2.4), slicing MNIST (§2.2.6), data
batches (§2.2.7) and the shapes of real-world data tensors (§2.2.8-2.2.12).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import torch

from dl_ch2._checks import require_positive_int

__all__ = [
    "DATA_TENSOR_EXAMPLES",
    "DataTensorExample",
    "batch",
    "bottom_right_crop",
    "centered_crop",
    "matrix_example",
    "rank3_example",
    "scalar_example",
    "slice_three_ways",
    "vector_example",
    "video_batch_bytes",
    "video_batch_elements",
]

T = TypeVar("T")


def scalar_example() -> torch.Tensor:
    """§2.2.1: a scalar (rank-0 tensor), ``ndim == 0``, shape ()."""
    return torch.tensor(12)


def vector_example() -> torch.Tensor:
    """§2.2.2: a vector with five entries: a 5-dimensional vector, but a rank-1 tensor.

    Erratum: the 1st edition prints [12, 3, 6, 14] (four entries) and calls it
    5-dimensional; the 2nd edition's array has the fifth entry 7.
    """
    return torch.tensor([12, 3, 6, 14, 7])


def matrix_example() -> torch.Tensor:
    """§2.2.3: a (3, 5) matrix; first row [5, 78, 2, 34, 0], first column [5, 6, 7]."""
    return torch.tensor([[5, 78, 2, 34, 0], [6, 79, 3, 35, 1], [7, 80, 4, 36, 2]])


def rank3_example() -> torch.Tensor:
    """§2.2.4: three copies of the matrix example packed into a rank-3 tensor, (3, 3, 5)."""
    return torch.stack([matrix_example()] * 3)


# --- §2.2.6 Manipulating tensors -----------------------------------------------------------


def slice_three_ways(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """§2.2.6: ``images[10:100]``, ``images[10:100, :, :]`` and ``images[10:100, 0:28, 0:28]``.

    On MNIST's (60000, 28, 28) training images all three have shape (90, 28, 28) and
    equal values.
    """
    if images.ndim != 3:
        raise ValueError(f"images must have rank 3 (N, H, W), got shape {tuple(images.shape)}")
    return images[10:100], images[10:100, :, :], images[10:100, 0:28, 0:28]


def bottom_right_crop(images: torch.Tensor, size: int = 14) -> torch.Tensor:
    """§2.2.6: the bottom-right ``size`` x ``size`` pixels of every image (``[:, 14:, 14:]``)."""
    require_positive_int("size", size)
    if images.ndim < 3 or images.shape[-2] < size or images.shape[-1] < size:
        raise ValueError(
            f"images must have shape (N, H, W) with H, W >= size={size}, got {tuple(images.shape)}"
        )
    return images[:, images.shape[1] - size :, images.shape[2] - size :]


def centered_crop(images: torch.Tensor, size: int = 14) -> torch.Tensor:
    """§2.2.6: a centred ``size`` x ``size`` patch, ``[:, 7:-7, 7:-7]`` for 28x28 and 14."""
    require_positive_int("size", size)
    if images.ndim < 3:
        raise ValueError(f"images must have shape (N, H, W), got {tuple(images.shape)}")
    h, w = images.shape[1], images.shape[2]
    if (h - size) % 2 or (w - size) % 2 or h < size or w < size:
        raise ValueError(
            f"a centred {size}x{size} crop needs H - size and W - size even and >= 0, "
            f"got images of shape {tuple(images.shape)}"
        )
    top, left = (h - size) // 2, (w - size) // 2
    return images[:, top : top + size, left : left + size]


# --- §2.2.7 The notion of data batches -----------------------------------------------------


def batch(images: T, n: int, batch_size: int = 128) -> T:
    """§2.2.7: the n-th batch along the samples axis: ``images[128 * n : 128 * (n + 1)]``."""
    require_positive_int("batch_size", batch_size)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    length = len(images)  # type: ignore[arg-type]
    if batch_size * n >= length:
        raise ValueError(
            f"batch n={n} starts at sample {batch_size * n}, past the {length} samples"
        )
    return images[batch_size * n : batch_size * (n + 1)]  # type: ignore[index, no-any-return]


# --- §2.2.8-2.2.12 Real-world examples of data tensors ------------------------------------


@dataclass(frozen=True)
class DataTensorExample:
    """One of §2.2's real-world data tensors: its kind, the axes and an example shape."""

    kind: str
    description: str
    axes: tuple[str, ...]
    shape: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def num_elements(self) -> int:
        return math.prod(self.shape)


DATA_TENSOR_EXAMPLES: tuple[DataTensorExample, ...] = (
    DataTensorExample(
        "vector",
        "actuarial: age, ZIP code, income of 100,000 people",
        ("samples", "features"),
        (100000, 3),
    ),
    DataTensorExample(
        "vector",
        "word counts of 500 documents over a 20,000-word dictionary",
        ("samples", "features"),
        (500, 20000),
    ),
    DataTensorExample(
        "timeseries",
        "250 trading days of 390 minutes, 3 prices per minute",
        ("samples", "timesteps", "features"),
        (250, 390, 3),
    ),
    DataTensorExample(
        "timeseries",
        "1,000,000 tweets of 280 one-hot characters from 128",
        ("samples", "timesteps", "features"),
        (1000000, 280, 128),
    ),
    DataTensorExample(
        "image",
        "128 grayscale 256x256 images, channels-last",
        ("samples", "height", "width", "channels"),
        (128, 256, 256, 1),
    ),
    DataTensorExample(
        "image",
        "128 colour 256x256 images, channels-last",
        ("samples", "height", "width", "channels"),
        (128, 256, 256, 3),
    ),
    DataTensorExample(
        "image",
        "128 grayscale 256x256 images, channels-first",
        ("samples", "channels", "height", "width"),
        (128, 1, 256, 256),
    ),
    DataTensorExample(
        "image",
        "128 colour 256x256 images, channels-first",
        ("samples", "channels", "height", "width"),
        (128, 3, 256, 256),
    ),
    DataTensorExample(
        "video",
        "4 clips of 60 s at 4 frames/s (240 frames), 144x256, RGB",
        ("samples", "frames", "height", "width", "channels"),
        (4, 240, 144, 256, 3),
    ),
)


def video_batch_elements(
    clips: int = 4, seconds: int = 60, fps: int = 4, height: int = 144, width: int = 256
) -> int:
    """§2.2.12: values in a batch of RGB clips; 106,168,320 for the book's (4, 240, 144, 256, 3)."""
    for name, v in (
        ("clips", clips),
        ("seconds", seconds),
        ("fps", fps),
        ("height", height),
        ("width", width),
    ):
        require_positive_int(name, v)
    return clips * seconds * fps * height * width * 3


def video_batch_bytes(dtype: torch.dtype = torch.float32, **kwargs: int) -> int:
    """§2.2.12: bytes of the video batch in ``dtype``: 424,673,280 in float32.

    That is 405 MiB (2**20 bytes) or 425 MB: the book's "405 MB" means mebibytes.
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    return video_batch_elements(**kwargs) * itemsize
