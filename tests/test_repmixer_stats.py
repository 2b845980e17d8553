"""training/repmixer.py: RepMixer with one shared BatchNorm pass trains exactly like RepMixer as written."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mobileclip_deploy.models.mci import MCI0, MCi, RepMixer
from mobileclip_deploy.models.text import TextConfig, TextTransformer
from mobileclip_deploy.training.repmixer import SharedStatsRepMixer, share_repmixer_statistics

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize(module: nn.Module, seed: int) -> None:
    """BN weights, biases and (pairwise equal) running statistics away from their initial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g, dtype=m.weight.dtype) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=m.bias.dtype))
        for m in module.modules():
            if isinstance(m, RepMixer):
                m.layer_scale.gamma.copy_(torch.randn(m.layer_scale.gamma.shape, generator=g, dtype=torch.float64))
                for bn in (m.mixer.identity, m.norm.identity):
                    bn.running_mean.copy_(torch.linspace(-1, 1, bn.num_features, dtype=torch.float64))
                    bn.running_var.copy_(torch.linspace(0.5, 2, bn.num_features, dtype=torch.float64))
                    bn.num_batches_tracked.fill_(3)


def _train_steps(module: nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Outputs, input gradients and parameter gradients of each step, then every buffer."""
    seen = []
    for x in inputs:
        x = x.clone().requires_grad_()
        out = module(x)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        seen += [out.detach(), x.grad] + [p.grad.clone() for p in module.parameters()]
        module.zero_grad(set_to_none=True)
    return seen + [b.clone() for b in module.buffers()]


@pytest.mark.parametrize("momentum", [0.1, None])  # None: cumulative average over num_batches_tracked
def test_matches_repmixer_over_steps(momentum) -> None:
    ref = RepMixer(6, 3).double().train()
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum
    _randomize(ref, 0)
    fast = copy.deepcopy(ref)
    assert share_repmixer_statistics(fast) == 1 and type(fast) is SharedStatsRepMixer
    inputs = [torch.randn(3, 6, 9, 11, dtype=torch.float64) * 2 + 1 for _ in range(3)]
    for a, b in zip(_train_steps(ref, inputs), _train_steps(fast, inputs), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    assert torch.equal(fast.norm.identity.running_mean, fast.mixer.identity.running_mean)


def test_unequal_running_statistics_fall_back_to_the_block_as_written() -> None:
    ref = RepMixer(4, 3).double().train()
    _randomize(ref, 1)
    with torch.no_grad():
        ref.norm.identity.running_mean.add_(0.5)  # e.g. a checkpoint whose two BNs drifted apart
    fast = copy.deepcopy(ref)
    share_repmixer_statistics(fast)
    inputs = [torch.randn(2, 4, 7, 7, dtype=torch.float64)]
    for a, b in zip(_train_steps(ref, inputs), _train_steps(fast, inputs), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    assert not torch.equal(fast.norm.identity.running_mean, fast.mixer.identity.running_mean)


def test_eval_and_reparameterize_are_unchanged() -> None:
    ref = RepMixer(5, 3).double()
    _randomize(ref, 2)
    fast = copy.deepcopy(ref)
    share_repmixer_statistics(fast)
    x = torch.randn(2, 5, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(fast.eval()(x), ref.eval()(x), rtol=0, atol=0)
    fast.reparameterize()
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-10, atol=1e-12)


def test_whole_towers_train_alike_and_keep_their_state_dict() -> None:
    torch.manual_seed(0)
    towers = [(MCi(MCI0, 32), lambda: torch.rand(2, 3, 64, 64, dtype=torch.float64)),
              (TextTransformer(TextConfig(width=64, heads=2, layers=1, context_length=12, vocab_size=50, mct=True), 32),
               lambda: torch.randint(1, 50, (3, 12)))]
    for tower, make_input in towers:
        tower = tower.double().train()
        _randomize(tower, 3)
        ref = copy.deepcopy(tower)
        expected = [n for n, m in tower.named_modules() if isinstance(m, RepMixer)]
        assert share_repmixer_statistics(tower) == len(expected) > 0
        assert [n for n, m in tower.named_modules() if type(m) is SharedStatsRepMixer] == expected
        assert list(tower.state_dict()) == list(ref.state_dict())
        x = make_input()
        for m in (ref, tower):
            m(x).square().sum().backward()
        for (name, p), q in zip(ref.named_parameters(), tower.parameters(), strict=True):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=name)
        for (name, b), c in zip(ref.named_buffers(), tower.buffers(), strict=True):
            torch.testing.assert_close(c, b, rtol=1e-9, atol=1e-12, msg=name)
