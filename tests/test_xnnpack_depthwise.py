"""The XNNPACK-shaped form of depthwise convs (ExecuTorch XNNPACK export) computes the same function."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mobileclip_deploy.exporters.xnnpack_depthwise import PIECE_TAPS, SplitDepthwiseConv, split_depthwise, tile_kernel


@pytest.mark.parametrize("half_h,half_w", [(3, 3), (3, 2), (2, 3), (3, 1), (3, 0), (2, 2)])
def test_tiling_covers_every_tap_once_with_small_centred_pieces(half_h: int, half_w: int) -> None:
    pieces = tile_kernel(half_h, half_w)
    taps = [(r, c) for rows, cols in pieces for r in rows for c in cols]
    assert sorted(taps) == [(r, c) for r in range(-half_h, half_h + 1) for c in range(-half_w, half_w + 1)]
    for rows, cols in pieces:
        assert len(rows) * len(cols) <= PIECE_TAPS
        for offsets in (rows, cols):
            assert offsets == tuple(sorted(offsets)) and offsets[0] == -offsets[-1]
            assert len({b - a for a, b in zip(offsets, offsets[1:])}) <= 1


def test_seven_by_seven_is_seven_pieces() -> None:
    assert [len(r) * len(c) for r, c in tile_kernel(3, 3)] == [9, 6, 6, 4, 8, 8, 8]


@pytest.mark.parametrize("multiplier,kernel,stride,size,bias", [
    (1, 7, 1, (16, 13), True), (1, 7, 2, (17, 12), True), (2, 7, 2, (16, 16), True), (2, 3, 2, (9, 8), True),
    (3, 7, 1, (10, 11), False), (1, (7, 5), 1, (12, 9), True), (2, (3, 7), 2, (11, 14), True)])
def test_split_conv_matches_the_original(multiplier, kernel, stride, size, bias) -> None:
    torch.manual_seed(0)
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    conv = nn.Conv2d(8, 8 * multiplier, k, stride, (k[0] // 2, k[1] // 2), groups=8, bias=bias).eval()
    split = SplitDepthwiseConv(conv)
    assert all(w.shape[2] * w.shape[3] <= PIECE_TAPS for w in split.weights) or k[0] * k[1] <= 25
    x = torch.randn(2, 8, *size)
    with torch.no_grad():
        torch.testing.assert_close(split(x), conv(x), rtol=1e-5, atol=1e-5)


def test_only_wide_or_multiplying_depthwise_convs_are_rewritten() -> None:
    tower = nn.Sequential(
        nn.Conv2d(4, 4, 7, padding=3, groups=4),  # wide: rewritten
        nn.Conv2d(4, 4, 5, padding=2, groups=4),  # 25 taps: XNNPACK's single-pass kernel already covers it
        nn.Conv2d(4, 8, 3, padding=1, groups=4),  # channel multiplier 2: rewritten
        nn.Conv2d(8, 8, 7, padding=0, groups=8),  # wide but not 'same' padded: centred pieces cannot reproduce it
        nn.Conv2d(8, 8, 7, padding=3),  # dense conv
        nn.Conv2d(8, 8, 7, padding=3, groups=8, bias=False)).eval()  # wide: rewritten
    split = split_depthwise(tower)
    assert [type(m).__name__ for m in split] == ["SplitDepthwiseConv", "Conv2d", "SplitDepthwiseConv", "Conv2d",
                                                 "Conv2d", "SplitDepthwiseConv"]
    assert all(isinstance(m, nn.Conv2d) for m in tower)  # the original is left alone
    x = torch.randn(1, 4, 14, 14)
    with torch.no_grad():
        torch.testing.assert_close(split(x), tower(x), rtol=1e-5, atol=1e-5)
