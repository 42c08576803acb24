"""§2.1 facts about the real MNIST arrays (skipped with a reason when the data is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from dl_ch2_tools.mnist import MNISTError, load_mnist, preprocess


@pytest.fixture(scope="module")
def mnist():  # type: ignore[no-untyped-def]
    try:
        return load_mnist(download=False)
    except MNISTError as exc:
        pytest.skip(f"MNIST not available locally (run `dl-ch2 data`): {str(exc)[:120]}")


@pytest.mark.mnist
def test_keras_load_data_shapes_and_labels(mnist) -> None:  # type: ignore[no-untyped-def]
    (train_images, train_labels), (test_images, test_labels) = mnist
    assert train_images.shape == (60000, 28, 28) and train_images.dtype == np.uint8
    assert train_labels.shape == (60000,) and test_labels.shape == (10000,)
    assert test_images.shape == (10000, 28, 28) and test_images.dtype == np.uint8
    assert train_labels[:3].tolist() == [5, 0, 4] and train_labels[-3:].tolist() == [5, 6, 8]
    assert test_labels[:3].tolist() == [7, 2, 1] and test_labels[-3:].tolist() == [4, 5, 6]
    assert int(train_labels[4]) == 9
    x = preprocess(train_images)
    assert x.shape == (60000, 784) and x.dtype == np.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0


@pytest.mark.mnist
def test_torchvision_reads_the_real_files(mnist) -> None:  # type: ignore[no-untyped-def]
    tv = pytest.importorskip("torchvision.datasets", reason="torchvision not installed")
    from dl_ch2_tools.mnist import default_root

    (train_images, train_labels), _ = mnist
    ds = tv.MNIST(str(default_root()), train=True, download=False)
    assert np.array_equal(ds.data.numpy(), train_images)
    assert np.array_equal(ds.targets.numpy(), train_labels)
