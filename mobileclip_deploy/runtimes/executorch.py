"""The ExecuTorch Python runtime (`.pte`): XNNPACK-delegated programs run here, Core ML-delegated ones do not."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np

from mobileclip_deploy.runtimes import Runner, Runtime, register, require

DTYPES = {3: np.int32, 4: np.int64, 6: np.float32}  # ExecuTorch ScalarType codes of the towers' inputs


def load(path: Path, threads: int = 1) -> Runner:
    import torch

    require("executorch", "export", "ExecuTorch")
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime as EtRuntime

    # The XNNPACK threadpool is process-wide; set it before loading so the method uses it.
    portable_lib._unsafe_reset_threadpool(threads)
    method = EtRuntime.get().load_program(str(path)).load_method("forward")
    meta = method.metadata.input_tensor_meta(0)
    code = meta.dtype()
    if code not in DTYPES:
        raise ValueError(f"unsupported input dtype code {code}")
    return Runner(lambda x: method.execute((torch.from_numpy(x),))[0].numpy(), list(meta.sizes()), DTYPES[code],
                  {"name": "executorch", "version": version("executorch"), "delegate": "XnnpackBackend"})


register(Runtime("executorch", (".pte",), load, extra="export", title="ExecuTorch"))
