"""Multi-head attention as every backend can take it: slices, 3-D batched matmuls and softmax.

`F.scaled_dot_product_attention` lowers to a "safe softmax" XNNPACK cannot run, and 4-D `@` lowers to
`expand_copy` + `bmm`, and `chunk` to `split_copy`, none of which XNNPACK delegates: each left a portable-kernel
island between delegate partitions (MobileCLIP-S0's text tower had 26 partitions, 14 with this form).
"""

from __future__ import annotations

import torch


def multi_head_attention(qkv: torch.Tensor, heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention over `qkv` (B×N×3C, the fused q/k/v projection); returns B×N×C before the output projection."""
    b, n, c3 = qkv.shape
    c = c3 // 3
    d = c // heads

    def split_heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, n, heads, d).transpose(1, 2).reshape(b * heads, n, d)

    q, k, v = split_heads(qkv[..., :c]), split_heads(qkv[..., c : 2 * c]), split_heads(qkv[..., 2 * c :])
    scores = torch.bmm(q * d**-0.5, k.transpose(1, 2))
    if mask is not None:
        scores = scores + mask
    out = torch.bmm(torch.softmax(scores, dim=-1), v)
    return out.reshape(b, heads, n, d).transpose(1, 2).reshape(b, n, c)
