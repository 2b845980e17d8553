"""MCi image encoders (MobileCLIP-S0/S1/S2, MobileCLIP2-S0/S2/S3/S4) and their reparameterizable blocks.

Module and parameter names follow timm's `fastvit_mci*` (the open_clip layout); the official layout is a pure
renaming handled by `mobileclip_deploy.layouts`. Every multi-branch block has a `reparameterize()` that folds
it, in eval mode, into one convolution (math in ../shared/reference/architecture.md, section 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mobileclip_deploy.models.attention import multi_head_attention

Kernel = int | tuple[int, int]


def _pair(k: Kernel) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else tuple(k)  # type: ignore[return-value]


def _same_padding(k: Kernel) -> tuple[int, int]:
    kh, kw = _pair(k)
    return kh // 2, kw // 2


# ----------------------------------------------------------------------------------------------- fold math
def fold_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv (no bias) followed by eval-mode BN == one conv with scaled weight and a bias."""
    t = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return weight * t.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * t


def identity_kernel(channels: int, groups: int, kernel: Kernel, like: torch.Tensor) -> torch.Tensor:
    """The kernel of a conv that returns its input: a centred one-hot per output channel."""
    kh, kw = _pair(kernel)
    in_per_group = channels // groups
    k = torch.zeros(channels, in_per_group, kh, kw, dtype=like.dtype, device=like.device)
    idx = torch.arange(channels, device=like.device)
    k[idx, idx % in_per_group, kh // 2, kw // 2] = 1.0
    return k


def pad_to(kernel: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-pad a smaller kernel centrally so parallel branches with 'same' padding can be summed."""
    ph, pw = (size[0] - kernel.shape[2]) // 2, (size[1] - kernel.shape[3]) // 2
    return F.pad(kernel, [pw, pw, ph, ph])


def make_reparam_conv(*, in_chs: int, out_chs: int, kernel: Kernel, stride: int,
                      groups: int, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=_same_padding(kernel), groups=groups, bias=True,
                     device=weight.device, dtype=weight.dtype)
    conv.weight.copy_(weight)
    conv.bias.copy_(bias)
    return conv


# ----------------------------------------------------------------------------------------------- blocks
class ConvNorm(nn.Module):
    """Conv without bias followed by BatchNorm: one branch of a MobileOne block (`conv`, `bn`)."""

    def __init__(self, in_chs: int, out_chs: int, kernel: Kernel, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, _same_padding(kernel), groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        return fold_bn(self.conv.weight, self.bn)


class SqueezeExcite(nn.Module):
    """Channel gate: mean-pool, 1x1 reduce, ReLU, 1x1 expand, sigmoid (pooling by mean so exports stay shape-free)."""

    def __init__(self, channels: int, rd_ratio: float) -> None:
        super().__init__()
        hidden = int(channels * rd_ratio)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class LayerScale2d(nn.Module):
    def __init__(self, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init * torch.ones(dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class MobileOneBlock(nn.Module):
    """Train time: sum of kxk conv-BN branches, an optional 1x1 conv-BN 'scale' branch and an identity BN.

    The official code decides on the scale branch from the first kernel dimension only, so the text encoder's
    (1 x 11) blocks get none; `use_scale_branch` keeps that quirk explicit.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel: Kernel, stride: int = 1, groups: int = 1, *,
                 num_conv_branches: int = 1, use_scale_branch: bool = True, use_se: bool = False,
                 use_act: bool = True) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.kernel = in_chs, out_chs, _pair(kernel)
        self.stride, self.groups = stride, groups
        self.identity = nn.BatchNorm2d(out_chs) if in_chs == out_chs and stride == 1 else None
        self.conv_kxk = (nn.ModuleList(ConvNorm(in_chs, out_chs, kernel, stride, groups)
                                       for _ in range(num_conv_branches)) if num_conv_branches else None)
        self.conv_scale = (ConvNorm(in_chs, out_chs, 1, stride, groups)
                           if use_scale_branch and self.kernel[0] > 1 else None)
        self.se = SqueezeExcite(out_chs, 1 / 16) if use_se else nn.Identity()
        self.act = nn.GELU() if use_act else nn.Identity()
        self.reparam_conv: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.se(self.reparam_conv(x)))
        out = self.identity(x) if self.identity is not None else 0
        if self.conv_scale is not None:
            out = out + self.conv_scale(x)
        if self.conv_kxk is not None:
            for branch in self.conv_kxk:
                out = out + branch(x)
        return self.act(self.se(out))

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single kernel and bias equal to the sum of all branches (before SE and activation)."""
        if self.reparam_conv is not None:
            return self.reparam_conv.weight, self.reparam_conv.bias
        ref = next(self.parameters())
        weight = ref.new_zeros(self.out_chs, self.in_chs // self.groups, *self.kernel)
        bias = ref.new_zeros(self.out_chs)
        branches: list[tuple[torch.Tensor, torch.Tensor]] = []
        if self.conv_kxk is not None:
            branches += [b.folded() for b in self.conv_kxk]
        if self.conv_scale is not None:
            branches.append(self.conv_scale.folded())
        if self.identity is not None:
            branches.append(fold_bn(identity_kernel(self.in_chs, self.groups, self.kernel, ref), self.identity))
        for w, b in branches:
            weight = weight + pad_to(w, self.kernel)
            bias = bias + b
        return weight, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        weight, bias = self.fused_kernel_bias()
        self.reparam_conv = make_reparam_conv(in_chs=self.in_chs, out_chs=self.out_chs, kernel=self.kernel,
                                              stride=self.stride, groups=self.groups, weight=weight, bias=bias)
        self.identity = self.conv_kxk = self.conv_scale = None


class ReparamLargeKernelConv(nn.Module):
    """Parallel 7x7 and 3x3 grouped conv-BN (RepLKNet style), then optional SE and GELU."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, groups: int, small_kernel: int = 3,
                 use_se: bool = False) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.kernel, self.stride, self.groups = in_chs, out_chs, kernel, stride, groups
        self.large_conv: ConvNorm | None = ConvNorm(in_chs, out_chs, kernel, stride, groups)
        self.small_conv: ConvNorm | None = ConvNorm(in_chs, out_chs, small_kernel, stride, groups)
        self.se = SqueezeExcite(out_chs, 0.25) if use_se else nn.Identity()
        self.act = nn.GELU()
        self.reparam_conv: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            out = self.reparam_conv(x)
        else:
            out = self.large_conv(x) + self.small_conv(x)
        return self.act(self.se(out))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        wl, bl = self.large_conv.folded()
        ws, bs = self.small_conv.folded()
        self.reparam_conv = make_reparam_conv(in_chs=self.in_chs, out_chs=self.out_chs, kernel=self.kernel,
                                              stride=self.stride, groups=self.groups,
                                              weight=wl + pad_to(ws, (self.kernel, self.kernel)), bias=bl + bs)
        self.large_conv = self.small_conv = None


class RepMixer(nn.Module):
    """Token mixer y = x + s * (mixer(x) - norm(x)); folds to ONE depthwise conv: W = I + s(Wm - Wn)."""

    def __init__(self, dim: int, kernel: Kernel = 3, layer_scale_init: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.kernel = dim, _pair(kernel)
        self.norm: MobileOneBlock | None = MobileOneBlock(dim, dim, kernel, groups=dim, num_conv_branches=0,
                                                          use_scale_branch=False, use_act=False)
        self.mixer: MobileOneBlock | None = MobileOneBlock(dim, dim, kernel, groups=dim, use_act=False)
        self.layer_scale: LayerScale2d | None = LayerScale2d(dim, layer_scale_init)
        self.reparam_conv: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.layer_scale(self.mixer(x) - self.norm(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        wm, bm = self.mixer.fused_kernel_bias()
        wn, bn = self.norm.fused_kernel_bias()
        s = self.layer_scale.gamma
        weight = identity_kernel(self.dim, self.dim, self.kernel, wm) + s.unsqueeze(-1) * (wm - wn)
        bias = s.reshape(-1) * (bm - bn)
        self.reparam_conv = make_reparam_conv(in_chs=self.dim, out_chs=self.dim, kernel=self.kernel, stride=1,
                                              groups=self.dim, weight=weight, bias=bias)
        self.norm = self.mixer = self.layer_scale = None


class ConvMlp(nn.Module):
    """ConvFFN: depthwise conv-BN, 1x1 expand, GELU, 1x1 project (the BN stays unfolded, as in both code bases)."""

    def __init__(self, dim: int, hidden: int, kernel: Kernel = 7) -> None:
        super().__init__()
        self.conv = ConvNorm(dim, dim, kernel, groups=dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))


class RepMixerBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, kernel: Kernel = 3, mlp_kernel: Kernel = 7) -> None:
        super().__init__()
        self.token_mixer = RepMixer(dim, kernel)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), mlp_kernel)
        self.layer_scale = LayerScale2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.layer_scale(self.mlp(x))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of an NCHW map (MCi3/MCi4 attention blocks)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Attention(nn.Module):
    """MHSA over the H*W tokens, head dim 32 (see models/attention.py for why it is written out)."""

    def __init__(self, dim: int, head_dim: int = 32) -> None:
        super().__init__()
        self.num_heads = dim // head_dim
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # B, N, C
        out = multi_head_attention(self.qkv(tokens), self.num_heads)
        return self.proj(out).transpose(1, 2).reshape(b, c, h, w)


class AttentionBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, norm: str) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim) if norm == "bn" else LayerNorm2d(dim, eps=1e-5)
        self.token_mixer = Attention(dim)
        self.layer_scale_1 = LayerScale2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale_2 = LayerScale2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale_1(self.token_mixer(self.norm(x)))
        return x + self.layer_scale_2(self.mlp(x))


class RepConditionalPosEnc(nn.Module):
    """RepCPE: y = x + dwconv7x7(x) + b; folds to one depthwise conv with W + I."""

    def __init__(self, dim: int, kernel: int = 7) -> None:
        super().__init__()
        self.dim, self.kernel = dim, kernel
        self.pos_enc: nn.Conv2d | None = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim, bias=True)
        self.reparam_conv: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.pos_enc(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        w = self.pos_enc.weight + identity_kernel(self.dim, self.dim, self.kernel, self.pos_enc.weight)
        self.reparam_conv = make_reparam_conv(in_chs=self.dim, out_chs=self.dim, kernel=self.kernel, stride=1,
                                              groups=self.dim, weight=w, bias=self.pos_enc.bias)
        self.pos_enc = None


class PatchEmbed(nn.Module):
    """Downsampling between stages: 7x7/3x3 large-kernel conv (stride 2, 2x channels), then a 1x1 MobileOne."""

    def __init__(self, in_chs: int, out_chs: int, use_se: bool) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            ReparamLargeKernelConv(in_chs, out_chs, 7, stride=2, groups=in_chs, use_se=use_se),
            MobileOneBlock(out_chs, out_chs, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Stage(nn.Module):
    def __init__(self, in_chs: int, dim: int, depth: int, *, downsample: bool, se_downsample: bool,
                 attention: bool, mlp_ratio: float, norm: str) -> None:
        super().__init__()
        self.downsample = PatchEmbed(in_chs, dim, se_downsample) if downsample else nn.Identity()
        self.pos_emb = RepConditionalPosEnc(dim) if attention else nn.Identity()
        self.blocks = nn.Sequential(*(AttentionBlock(dim, mlp_ratio, norm) if attention
                                      else RepMixerBlock(dim, mlp_ratio) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pos_emb(self.downsample(x)))


@dataclass(frozen=True)
class MCiConfig:
    """One MCi image encoder, as data (architecture.md section 3)."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    mlp_ratio: float
    attention_stages: tuple[int, ...]
    se_downsample: tuple[bool, ...]  # per stage; stage 0 has no downsampling
    norm: str = "bn"  # attention-block norm: "bn" (MCi0-2) or "ln" (MCi3/4)
    stem_scale_branch: bool = True
    head_bias: bool = True  # timm/open_clip head has a bias; the official `head.proj` does not


MCI0 = MCiConfig((2, 6, 10, 2), (64, 128, 256, 512), 3.0, (3,), (False, False, True, True))
MCI1 = MCiConfig((4, 12, 20, 4), (64, 128, 256, 512), 3.0, (3,), (False, False, True, True))
MCI2 = MCiConfig((4, 12, 24, 4), (80, 160, 320, 640), 3.0, (3,), (False, False, True, True))
MCI3 = MCiConfig((2, 12, 24, 4, 2), (96, 192, 384, 768, 1536), 4.0, (3, 4), (False,) * 5, "ln", False)
MCI4 = MCiConfig((2, 12, 24, 4, 4), (128, 256, 512, 1024, 2048), 4.0, (3, 4), (False,) * 5, "ln", False)


class MCi(nn.Module):
    """FastViT-style hybrid: conv stem, RepMixer stages, attention stage(s), final conv, pooled projection."""

    def __init__(self, cfg: MCiConfig, embed_dim: int) -> None:
        super().__init__()
        c0 = cfg.widths[0]
        self.stem = nn.Sequential(
            MobileOneBlock(3, c0, 3, stride=2, use_scale_branch=cfg.stem_scale_branch),
            MobileOneBlock(c0, c0, 3, stride=2, groups=c0, use_scale_branch=cfg.stem_scale_branch),
            MobileOneBlock(c0, c0, 1),
        )
        stages, prev = [], c0
        for i, (depth, dim) in enumerate(zip(cfg.depths, cfg.widths)):
            stages.append(Stage(prev, dim, depth, downsample=i > 0, se_downsample=cfg.se_downsample[i],
                                attention=i in cfg.attention_stages, mlp_ratio=cfg.mlp_ratio, norm=cfg.norm))
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.final_conv = MobileOneBlock(prev, 2 * prev, 3, groups=prev, use_se=True)
        self.head = PooledHead(2 * prev, embed_dim, cfg.head_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.final_conv(self.stages(self.stem(x))))


class PooledHead(nn.Module):
    """Global average pool, then the projection to the CLIP embedding (`head.fc`)."""

    def __init__(self, in_chs: int, embed_dim: int, bias: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(in_chs, embed_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3), keepdim=True).flatten(1))  # keepdim: XNNPACK only takes 4-D means
