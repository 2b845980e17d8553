"""Core AI's Linux reference runtime (`.aimodel`, from the coreai-core wheel).

It executes the asset's program op by op on the host CPU, so it proves the program's arithmetic (fp16 included: it
computes fp16 programs in fp16) before a phone is at hand. It is not the OS runtime: no Neural Engine, no compiled
fusions, and its host timings are not iPhone latency.
"""

from __future__ import annotations

import asyncio
import weakref
from importlib.metadata import version
from pathlib import Path

import numpy as np

from mobileclip_deploy.runtimes import Runner, Runtime, register, require

FUNCTION = "main"  # the batch-1 entrypoint; further batch sizes are `main_b<N>` entrypoints of the same asset
DTYPES = {"float32": np.float32, "int32": np.int32, "float16": np.float16}
INFO = "Core AI's Linux reference runtime (coreai-core): checks the program's arithmetic; not a latency figure"


def load(path: Path, threads: int = 1, function: str = FUNCTION) -> Runner:
    """A synchronous Runner over the asynchronous runtime: one event loop per runner keeps the executable open.

    `threads` is accepted for the common signature; the reference runtime has no thread setting."""
    require("coreai", "coreai", "Core AI")
    from coreai.authoring.asset import AIModelAsset
    from coreai.runtime import NDArray

    loop = asyncio.new_event_loop()
    context = AIModelAsset.load(str(path)).executable()
    model = loop.run_until_complete(context.__aenter__())
    fn = model.load_function(function)
    (name,), (output,) = fn.desc.input_names, fn.desc.output_names
    descriptor = fn.desc.input_descriptor(name)

    def run(x: np.ndarray) -> np.ndarray:
        return loop.run_until_complete(fn(inputs={name: NDArray(x)}))[output].numpy()

    runner = Runner(run, list(descriptor.shape), DTYPES[descriptor.dtype],
                    {"runtime": "coreai", "version": version("coreai-core"), "executor": INFO, "function": function})
    weakref.finalize(runner, _close, loop, context)  # the executable lives as long as the runner
    return runner


def _close(loop: asyncio.AbstractEventLoop, context) -> None:
    loop.run_until_complete(context.__aexit__(None, None, None))
    loop.close()


register(Runtime("coreai", (".aimodel",), load, extra="coreai", not_latency=(
    "Core AI's Linux reference runtime checks a program's arithmetic; its host timings are not iPhone latency "
    "(no Neural Engine, no compiled-model fusions)")))
