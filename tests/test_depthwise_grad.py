"""training/depthwise.py: large depthwise convs' channels_last weight gradient and 1x1 depthwise convs as a
multiply give torch's own outputs and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mobileclip_deploy.models.mci import MCI0, MCi
from mobileclip_deploy.training.depthwise import (
    ChannelScaleConv2d,
    DepthwiseConv2d,
    is_channel_scale,
    is_large_depthwise,
    use_fast_depthwise,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [  # in_chs, out_chs, kernel, stride, padding, dilation, bias, input size
    (8, 8, 7, 1, 3, 1, True, (19, 23)),
    (8, 16, 7, 2, 3, 1, False, (19, 23)),  # channel multiplier 2, stride 2 (MCi's PatchEmbed)
    (8, 16, 7, 2, 3, 1, True, (20, 22)),  # even sizes: the last row and column reach no output
    (6, 6, 5, 3, 1, 1, True, (17, 16)),  # stride 3, padding smaller than the kernel
    (6, 6, 5, 1, 2, 1, True, (19, 23)),
    (4, 4, (1, 11), 1, (0, 5), 1, False, (1, 77)),  # MCt's text-token kernel
    (4, 8, 5, 2, 4, 2, True, (21, 18)),  # dilated, strided
    (4, 4, 5, 2, 6, 1, False, (12, 12)),  # padding larger than the kernel
]


SCALE_CASES = [  # 1x1 depthwise (MobileOne's scale branch): channels, stride, bias, input size
    (8, 1, False, (19, 23)),
    (8, 2, False, (19, 23)),  # odd sizes: the last row and column are kept
    (6, 2, True, (20, 22)),
    (5, (1, 3), True, (9, 13)),
]


@pytest.mark.parametrize("in_chs,out_chs,kernel,stride,padding,dilation,bias,size",
                         CASES + [(c, c, 1, s, 0, 1, b, size) for c, s, b, size in SCALE_CASES])
def test_gradients_match_torch(in_chs, out_chs, kernel, stride, padding, dilation, bias, size) -> None:
    torch.manual_seed(0)
    ref = nn.Conv2d(in_chs, out_chs, kernel, stride, padding, dilation, groups=in_chs, bias=bias).double()
    fast = copy.deepcopy(ref)
    assert use_fast_depthwise(fast) == 1
    assert type(fast) is (ChannelScaleConv2d if kernel == 1 else DepthwiseConv2d)
    x = torch.randn(3, in_chs, *size, dtype=torch.float64)
    grads = []
    for conv in (ref, fast):
        xi = x.clone().requires_grad_()
        out = conv(xi)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        grads.append([out.detach(), xi.grad, conv.weight.grad] + ([conv.bias.grad] if bias else []))
    for a, b in zip(*grads, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_swaps_only_large_and_1x1_depthwise_convs_and_keeps_the_state_dict() -> None:
    torch.manual_seed(0)
    model = MCi(MCI0, 32).double().train()  # float64: the comparison sees the gradient math, not rounding
    before = {k: v.clone() for k, v in model.state_dict().items()}
    large = [n for n, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1 and max(m.kernel_size) > 3]
    scales = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)
              and m.groups == m.in_channels == m.out_channels > 1 and m.kernel_size == (1, 1)]
    ref = copy.deepcopy(model)
    assert use_fast_depthwise(model) == len(large) + len(scales) and large and scales
    assert [n for n, m in model.named_modules() if type(m) is DepthwiseConv2d] == large
    assert [n for n, m in model.named_modules() if type(m) is ChannelScaleConv2d] == scales
    assert not any(is_large_depthwise(m) or is_channel_scale(m) for m in model.modules())  # the rest: torch's own
    state = model.state_dict()
    assert list(state) == list(before) and all(torch.equal(state[k], before[k]) for k in before)

    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    for m in (ref, model):
        m(x).square().sum().backward()
    for (name, p), q in zip(ref.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=name)
    with torch.no_grad():  # eval and no-grad forwards take torch's own path
        torch.testing.assert_close(model.eval()(x), ref.eval()(x))


def test_trainer_uses_it_on_cpu(tmp_path, shared_dir) -> None:
    from distill_fakes import make_data

    from mobileclip_deploy import create_model
    from mobileclip_deploy.training import distributed
    from mobileclip_deploy.training.loop import DistillConfig, Trainer
    from mobileclip_deploy.training.repmixer import SharedStatsRepMixer

    data = make_data(shared_dir / "data" / "imagenet-samples", n=2)
    cfg = DistillConfig(student="mobileclip-s0", data="hand-made", out=str(tmp_path), steps=1, batch_size=2)
    trainer = Trainer(cfg, data, create_model("mobileclip-s0"), distributed.DistEnv(0, 0, 1, torch.device("cpu")))
    kinds = {type(m) for m in trainer.student.modules() if isinstance(m, nn.Conv2d) and m.groups > 1}
    assert {DepthwiseConv2d, ChannelScaleConv2d, nn.Conv2d} <= kinds
    assert any(type(m) is SharedStatsRepMixer for m in trainer.student.modules())
