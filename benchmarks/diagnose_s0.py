#!/usr/bin/env python3
"""What `diagnose` costs and finds on a full-size tower: S0's image tower (synthetic weights) exported at fp32 as it
is and with its middle GELU computing ReLU, each artifact compared op by op with the clean folded tower.

    python benchmarks/diagnose_s0.py [--backends litert,coreai,onnx,executorch-xnnpack] [--model mobileclip-s0]
        [--work-dir DIR]

Prints, per backend, the conversion time, the diagnosis time and its verdict: the clean artifact must agree at every
compared module, the planted one must name the swapped activation (alone or with the conv the converter fused it
into). One thread; the times include loading the artifact and the PyTorch trace (and, for ExecuTorch XNNPACK, lowering
the twin the layers are localised on; its ReLU is planted in the lowering, see `relu_in_lowering`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from mobileclip_deploy import reparameterize
from mobileclip_deploy.exporters.backends import get_backend
from mobileclip_deploy.exporters.fold import fold_affine
from mobileclip_deploy.exporters.schemes import FP32
from mobileclip_deploy.exporters.wrappers import example_input, tower_module
from mobileclip_deploy.models.clip import CLIP
from mobileclip_deploy.models.synthetic import load_synthetic
from mobileclip_deploy.registry import get_variant
from mobileclip_deploy.verify.diagnose import diagnose


def export(backend: str, module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    if backend == "litert":
        from mobileclip_deploy.exporters.backends import litert

        litert.export(module, example, "image", "fp32", path, path.parent, {"benchmark": "diagnose"})
    elif backend == "coreai":
        from mobileclip_deploy.exporters.backends import coreai

        coreai.export_asset(module, example, "image", "fp32", path, {"benchmark": "diagnose"})
    elif backend == "onnx":
        from mobileclip_deploy.exporters import onnx as onnx_exp

        onnx_exp.export(module, example, "image", "fp32", path, None, path.parent)
    elif backend == "executorch-xnnpack":
        from mobileclip_deploy.exporters import executorch as et_exp

        et_exp.export(module, example, "fp32", "xnnpack", path, None)
    else:
        raise SystemExit(f"no exporter here for {backend}")


def with_relu(module: torch.nn.Module, name: str) -> torch.nn.Module:
    planted = copy.deepcopy(module)
    parent, _, leaf = name.rpartition(".")
    setattr(planted.get_submodule(parent), leaf, torch.nn.ReLU())
    return planted


@contextlib.contextmanager
def relu_in_lowering(backend: str, name: str) -> Iterator[bool]:
    """For ExecuTorch XNNPACK, whose diagnosis lowers a twin of the artifact from the clean tower, the ReLU is planted
    in the lowering (the depthwise rewrite that export and twin share) while the planted artifact is exported and
    diagnosed; yields whether it did (the other backends get the planted tower)."""
    if backend != "executorch-xnnpack":
        yield False
        return
    from mobileclip_deploy.exporters import executorch as et_exp

    original = et_exp.split_depthwise
    et_exp.split_depthwise = lambda module: with_relu(original(module), name)
    try:
        yield True
    finally:
        et_exp.split_depthwise = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobileclip-s0")
    parser.add_argument("--backends", default="litert,coreai")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    variant = get_variant(args.model)
    model = CLIP(variant)
    load_synthetic(model)
    tower = fold_affine(tower_module(reparameterize(model.eval()).eval(), "image", variant.image_size,
                                     variant.context_length))
    gelus = [name for name, m in tower.named_modules() if isinstance(m, torch.nn.GELU)]
    planted_name = gelus[len(gelus) // 2]
    planted = with_relu(tower, planted_name)
    x = np.random.default_rng(0).random((1, 3, variant.image_size, variant.image_size), dtype=np.float32)
    example = example_input("image", variant.image_size, variant.context_length)
    print(f"{args.model} image tower, planted ReLU at {planted_name}")
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        for name in args.backends.split(","):
            backend = get_backend(name)
            for label, module in (("clean", tower), ("planted", planted)):
                path = Path(work) / f"{name}_{label}{backend.suffix}"
                with relu_in_lowering(name if label == "planted" else "", planted_name) as in_lowering:
                    start = time.perf_counter()
                    export(name, tower if in_lowering else module, example, path)
                    converted = time.perf_counter() - start
                    start = time.perf_counter()
                    found = diagnose(backend, path, tower, x, FP32)
                    diagnosed = time.perf_counter() - start
                verdict = (f"no divergence at {found['compared']} compared modules" if found["module"] is None
                           else f"{found['module']} ({found['where']}, relative error {found['relative_error']:.3g})")
                print(f"{name:8} {label:8} convert {converted:6.1f} s  diagnose {diagnosed:6.1f} s"
                      f"  {verdict}")


if __name__ == "__main__":
    main()
