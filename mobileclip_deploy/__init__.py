"""mobileclip-deploy: rebuild, reparameterize, export, benchmark and bundle MobileCLIP models for phones."""

from __future__ import annotations

import os

from torch import nn

from mobileclip_deploy.preprocess import preprocess
from mobileclip_deploy.reparam import reparameterize
from mobileclip_deploy.tokenizer import tokenize

__version__ = "0.1.0"
__all__ = ["create_model", "reparameterize", "tokenize", "preprocess", "__version__"]


def create_model(name: str, checkpoint: str | os.PathLike[str] | None = None,
                 model_flag: str = "--model {}", synthetic_seed: int | None = None) -> nn.Module:
    """Build a variant in train-time form, load a checkpoint strictly if given, and return it in eval mode.

    Without a checkpoint the weights are PyTorch's default init (every input embeds to nearly one vector), or with
    `synthetic_seed` the synthetic weights of models/synthetic.py (inputs embed apart, as with trained weights; the
    model's `synthetic_weights` attribute names them). Neither is a trained model. `model_flag` spells the calling
    command's option for a model name, so a "looks like another variant" error names the right flag.
    """
    from mobileclip_deploy.checkpoint import load_checkpoint_into
    from mobileclip_deploy.models.clip import CLIP
    from mobileclip_deploy.registry import get_variant

    model = CLIP(get_variant(name))
    if checkpoint is not None:
        load_checkpoint_into(model, checkpoint, model_flag)
    elif synthetic_seed is not None:
        from mobileclip_deploy.models.synthetic import load_synthetic

        model.synthetic_weights = load_synthetic(model, synthetic_seed)
    return model.eval()
