"""§2.2: ranks, slicing, batches and the real-world data tensor shapes."""

from __future__ import annotations

import pytest
import torch

from dl_ch2 import data_representations as dr


def test_ranks_of_the_chapter_examples() -> None:
    assert dr.scalar_example().ndim == 0 and dr.scalar_example().shape == ()
    v = dr.vector_example()
    # a 5-dimensional vector (five entries) is a rank-1 tensor (erratum: 1st ed. shows 4 entries)
    assert v.ndim == 1 and v.shape == (5,)
    m = dr.matrix_example()
    assert m.ndim == 2 and m.shape == (3, 5)
    assert m[0].tolist() == [5, 78, 2, 34, 0] and m[:, 0].tolist() == [5, 6, 7]
    r3 = dr.rank3_example()
    assert r3.ndim == 3 and r3.shape == (3, 3, 5) and r3.dtype == torch.int64


def test_slicing_three_ways_and_crops() -> None:
    images = torch.randint(
        0, 256, (200, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    a, b, c = dr.slice_three_ways(images)
    assert a.shape == b.shape == c.shape == (90, 28, 28)
    assert torch.equal(a, b) and torch.equal(b, c) and torch.equal(a[0], images[10])
    br = dr.bottom_right_crop(images)
    assert br.shape == (200, 14, 14) and torch.equal(br, images[:, 14:, 14:])
    cc = dr.centered_crop(images)
    assert cc.shape == (200, 14, 14) and torch.equal(cc, images[:, 7:-7, 7:-7])


def test_batch_n() -> None:
    x = torch.arange(1000)
    assert torch.equal(dr.batch(x, 0), x[:128])
    assert torch.equal(dr.batch(x, 3), x[384:512])
    assert dr.batch(x, 7).shape == (1000 - 7 * 128,)
    with pytest.raises(ValueError, match="past the 1000 samples"):
        dr.batch(x, 8)
    with pytest.raises(ValueError, match="batch_size"):
        dr.batch(x, 0, batch_size=0)


def test_data_tensor_examples() -> None:
    by_kind: dict[str, list[dr.DataTensorExample]] = {}
    for e in dr.DATA_TENSOR_EXAMPLES:
        by_kind.setdefault(e.kind, []).append(e)
        assert len(e.axes) == e.rank
    assert {e.rank for e in by_kind["vector"]} == {2}
    assert {e.rank for e in by_kind["timeseries"]} == {3}
    assert {e.rank for e in by_kind["image"]} == {4}
    assert {e.rank for e in by_kind["video"]} == {5}
    shapes = {e.shape for e in dr.DATA_TENSOR_EXAMPLES}
    assert {
        (100000, 3),
        (500, 20000),
        (250, 390, 3),
        (1000000, 280, 128),
        (128, 256, 256, 1),
        (128, 3, 256, 256),
        (4, 240, 144, 256, 3),
    } <= shapes
    for e in by_kind["timeseries"]:
        assert e.axes[1] == "timesteps"  # time is axis 1 by convention


def test_video_batch_size() -> None:
    assert dr.video_batch_elements() == 106_168_320
    (video,) = [e for e in dr.DATA_TENSOR_EXAMPLES if e.kind == "video"]
    assert video.num_elements == 106_168_320
    nbytes = dr.video_batch_bytes(torch.float32)
    assert nbytes == 106_168_320 * 4 == 424_673_280
    assert round(nbytes / 2**20) == 405  # the book's "405 MB" is MiB
    assert dr.video_batch_bytes(torch.float16) == nbytes // 2
