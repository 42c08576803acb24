"""§2.5.1: BatchGenerator keeps the last partial batch, goes in order, shuffles only on request."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dl_ch2 import BatchGenerator, num_batches


def test_mnist_sized_epoch_has_469_batches_last_of_96() -> None:
    images = torch.arange(60000).reshape(60000, 1)
    labels = torch.arange(60000)
    gen = BatchGenerator(images, labels, batch_size=128)
    assert gen.num_batches == len(gen) == 469 == num_batches(60000, 128)
    batches = list(gen)
    assert len(batches) == 469
    assert [len(b[0]) for b in batches[:-1]] == [128] * 468
    assert len(batches[-1][0]) == len(batches[-1][1]) == 96
    # in order, nothing skipped or repeated
    assert torch.equal(torch.cat([b[1] for b in batches]), labels)
    assert torch.equal(torch.cat([b[0] for b in batches]).ravel(), labels)


def test_book_next_method_then_stop() -> None:
    gen = BatchGenerator(np.arange(10), np.arange(10) * 2, batch_size=4)
    x0, y0 = gen.next()
    assert x0.tolist() == [0, 1, 2, 3] and y0.tolist() == [0, 2, 4, 6]
    assert gen.index == 4
    gen.next()
    x2, _ = gen.next()
    assert x2.tolist() == [8, 9]
    with pytest.raises(StopIteration):
        gen.next()


def test_shuffle_is_seeded_permutation_and_off_by_default() -> None:
    x = torch.arange(50)
    default = torch.cat([b[0] for b in BatchGenerator(x, x, 7)])
    assert torch.equal(default, x)
    a = BatchGenerator(x, x * 10, 7, shuffle=True, generator=torch.Generator().manual_seed(1))
    b = BatchGenerator(x, x * 10, 7, shuffle=True, generator=torch.Generator().manual_seed(1))
    xa = [batch for batch in a]
    xb = [batch for batch in b]
    sa = torch.cat([p[0] for p in xa])
    assert torch.equal(sa, torch.cat([p[0] for p in xb]))
    assert not torch.equal(sa, x)
    assert torch.equal(sa.sort().values, x)  # a permutation
    assert torch.equal(torch.cat([p[1] for p in xa]), sa * 10)  # pairs stay together


def test_shuffle_numpy_arrays() -> None:
    x = np.arange(20)
    g = BatchGenerator(x, -x, 6, shuffle=True, generator=torch.Generator().manual_seed(0))
    xs, ys = zip(*list(g), strict=True)
    allx = np.concatenate(xs)
    assert sorted(allx.tolist()) == list(range(20))
    np.testing.assert_array_equal(np.concatenate(ys), -allx)


@pytest.mark.parametrize("batch_size", [1, 3, 10, 11, 1000])
def test_num_batches_is_ceil(batch_size: int) -> None:
    x = torch.zeros(10)
    batches = list(BatchGenerator(x, x, batch_size))
    assert len(batches) == -(-10 // batch_size)
    assert sum(len(b[0]) for b in batches) == 10


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"same length.*10 images.*9 labels"):
        BatchGenerator(torch.zeros(10, 2), torch.zeros(9), 4)
    with pytest.raises(ValueError, match="empty"):
        BatchGenerator(torch.zeros(0, 2), torch.zeros(0), 4)
    with pytest.raises(ValueError, match="batch_size"):
        BatchGenerator(torch.zeros(3), torch.zeros(3), 0)
    with pytest.raises(TypeError, match="batch_size"):
        BatchGenerator(torch.zeros(3), torch.zeros(3), 2.0)  # type: ignore[arg-type]


def test_shuffling_draws_on_the_generator_s_device_whatever_the_default_device() -> None:
    # a CPU generator under another default device (here "meta", which needs no GPU; on a
    # GPU machine, torch.set_default_device("cuda")) must still give the CPU draw
    x = torch.arange(10.0).reshape(5, 2)
    y = torch.arange(5)
    expected = torch.randperm(5, generator=torch.Generator().manual_seed(3))
    with torch.device("meta"):
        batches = BatchGenerator(
            x, y, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(3)
        )
    images, labels = batches.next()
    assert labels.device.type == "cpu"
    assert labels.tolist() == expected.tolist()
    assert images.tolist() == x[expected].tolist()
