"""RepMixer at train time with one BatchNorm pass where it has two over the same input.

RepMixer computes `x + s * (mixer(x) - norm(x))`, and both `mixer.identity` and `norm` (an identity branch only)
are BatchNorms of the same `x`: same batch statistics, so their difference is ONE batch norm of `x` with weight
`w_m - w_n` and bias `b_m - b_n`. While the two BNs' running statistics are equal (they start equal and see the
same batches) this form is exact, and both BNs get the same running-statistics update; otherwise the block runs
as written. The scale is applied as one `addcmul`. Measured in S0's image tower at batch 32, 1 thread, together
with depthwise.py's 1x1 multiply: forward and backward 14.2 -> 13.4 s. The Trainer uses it on CPU only, where it
was measured (on CUDA the per-forward equality checks would each wait for the device).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mobileclip_deploy.models.mci import RepMixer


def _same_statistics(a: nn.Module, b: nn.Module) -> bool:
    """Two plain, tracking BatchNorms with equal settings and equal running statistics."""
    return (type(a) is type(b) is nn.BatchNorm2d and a.training and b.training and a.affine and b.affine
            and a.track_running_stats and b.track_running_stats and a.eps == b.eps and a.momentum == b.momentum
            and torch.equal(a.num_batches_tracked, b.num_batches_tracked)
            and torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var))


class SharedStatsRepMixer(RepMixer):
    """A RepMixer whose two identity BatchNorms share one pass over the input during training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None or not _same_statistics(self.mixer.identity, self.norm.identity):
            return super().forward(x)
        a, b = self.mixer.identity, self.norm.identity
        a.num_batches_tracked.add_(1)
        b.num_batches_tracked.add_(1)
        factor = a.momentum if a.momentum is not None else 1.0 / float(a.num_batches_tracked)
        out = F.batch_norm(x, a.running_mean, a.running_var, a.weight - b.weight, a.bias - b.bias, True, factor,
                           a.eps)
        b.running_mean.copy_(a.running_mean)
        b.running_var.copy_(a.running_var)
        mixer = self.mixer
        for branch in ([mixer.conv_scale] if mixer.conv_scale is not None else []) + list(mixer.conv_kxk or []):
            out = out + branch(x)
        return torch.addcmul(x, out, self.layer_scale.gamma)


def share_repmixer_statistics(model: nn.Module) -> int:
    """Turn `model`'s train-time RepMixers into SharedStatsRepMixer in place (class swap); returns how many.

    Parameters, buffers, state_dict keys, `reparameterize()` and eval-mode forwards are unchanged. By construction
    `norm` is an identity BN only and `mixer` has no activation or SE, so every RepMixer qualifies.
    """
    mixers = [m for m in model.modules() if type(m) is RepMixer]
    for m in mixers:
        m.__class__ = SharedStatsRepMixer
    return len(mixers)
