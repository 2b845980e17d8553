"""The banded form of wide depthwise convs (ExecuTorch XNNPACK export) computes the same function."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mobileclip_deploy.exporters.depthwise_bands import BandedDepthwiseConv, split_wide_depthwise


@pytest.mark.parametrize("kernel,stride,padding,size", [(7, 1, 3, 16), (7, 2, 3, 17), (9, 1, 4, 12), ((7, 3), 1, (3, 1), 10),
                                                        (7, 1, 0, 15), (7, 2, 3, 8)])
def test_banded_conv_matches_the_wide_conv(kernel, stride, padding, size) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, kernel, stride, padding, groups=8).eval()
    x = torch.randn(2, 8, size, size + 3)
    banded = BandedDepthwiseConv(conv)
    assert all(w.shape[2] * w.shape[3] <= 25 for w in banded.weights)
    with torch.no_grad():
        torch.testing.assert_close(banded(x), conv(x), rtol=1e-5, atol=1e-5)


def test_split_replaces_only_wide_depthwise_convs() -> None:
    tower = nn.Sequential(nn.Conv2d(4, 4, 7, padding=3, groups=4), nn.Conv2d(4, 4, 5, padding=2, groups=4),
                          nn.Conv2d(4, 8, 7, padding=3), nn.Conv2d(8, 8, 7, padding=3, groups=8, bias=False)).eval()
    split = split_wide_depthwise(tower)
    assert [type(m).__name__ for m in split] == ["BandedDepthwiseConv", "Conv2d", "Conv2d", "BandedDepthwiseConv"]
    assert all(isinstance(m, nn.Conv2d) for m in tower)  # the original is left alone
    x = torch.randn(1, 4, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(split(x), tower(x), rtol=1e-5, atol=1e-5)
