"""Runs inside the arm64 guest (qemu-user): load each artifact, run its inputs, save outputs and kernel evidence.

Standalone on purpose: the guest has only numpy and the runtimes of its groups (onnxruntime, executorch, ai_edge_litert),
not this package.
Usage: python guest_runner.py JOB.json RESULT.json. JOB lists artifacts with their runtime, input/output names
and .npy paths; RESULT gets, per artifact, the output .npy path, the emulated seconds (the check's cost, not a
latency) and what the runtime reveals about the kernels that ran.
"""

import json
import os
import sys
import time

import numpy as np

FAULT_ENV = "MOBILECLIP_ARM64_FAULT"  # test hook: perturb outputs on the ARM side only


def _perturb(out):
    scale = float(os.environ.get(FAULT_ENV) or 0)
    if scale:
        noise = np.random.default_rng(0).standard_normal(out.shape).astype(out.dtype)
        out = out + scale * np.abs(out).max() * noise
    return out


def _onnxruntime(job, profile_dir):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(profile_dir, "ort")
    start = time.perf_counter()
    session = ort.InferenceSession(job["artifact"], options, providers=["CPUExecutionProvider"])
    loaded = time.perf_counter()
    x = np.load(job["input"])
    out = np.concatenate([session.run([job["output_name"]], {job["input_name"]: x[i:i + 1]})[0] for i in range(len(x))])
    ran = time.perf_counter()
    ops = {}
    with open(session.end_profiling()) as fh:
        for event in json.load(fh):
            args = event.get("args") or {}
            if event.get("cat") == "Node" and "op_name" in args:
                ops[args["op_name"]] = args.get("provider", "")
    evidence = {"operators": sorted(ops), "providers": sorted(set(ops.values())),
                "kernel_families": "not observable: ONNX Runtime's profiler names operators, not the MLAS kernels "
                                   "it picked for this CPU"}
    return out, loaded - start, ran - loaded, evidence


def _executorch(job, profile_dir):
    import torch  # noqa: F401 - the executorch wheel's extension libraries link against libtorch
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    start = time.perf_counter()
    module = _load_for_executorch(job["artifact"], enable_etdump=True)
    loaded = time.perf_counter()
    x = np.load(job["input"])
    out = np.concatenate([module.forward([torch.from_numpy(x[i:i + 1])])[0].numpy() for i in range(len(x))])
    ran = time.perf_counter()
    etdump = os.path.join(profile_dir, os.path.basename(job["artifact"]) + ".etdp")
    module.write_etdump_result_to_file(etdump)
    return out, loaded - start, ran - loaded, {"etdump": etdump}


def _litert(job, profile_dir):
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    start = time.perf_counter()
    interpreter = Interpreter(model_path=job["artifact"], num_threads=1)  # XNNPACK, as apps get it by default
    interpreter.allocate_tensors()
    key = next(iter(interpreter.get_signature_list()))
    runner = interpreter.get_signature_runner(key)
    loaded = time.perf_counter()
    x = np.load(job["input"])
    out = np.concatenate([runner(**{job["input_name"]: x[i:i + 1]})[job["output_name"]] for i in range(len(x))])
    ran = time.perf_counter()
    ops = interpreter._get_ops_details()  # noqa: SLF001 - the delegated node list (one DELEGATE per partition)
    with open(job["artifact"], "rb") as fh:
        model = schema.Model.GetRootAs(fh.read(), 0)
    names = [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]
    evidence = {"xnnpack_partitions": sum(op["op_name"] == "DELEGATE" for op in ops),
                "reduced_precision_metadata": "reduced_precision_support" in names,
                "kernel_families": "not observable: LiteRT reports XNNPACK partitions, not the ARM kernels in them"}
    return out, loaded - start, ran - loaded, evidence


RUNNERS = {"onnxruntime": _onnxruntime, "executorch": _executorch, "litert": _litert}


def main(job_path, result_path):
    jobs = json.load(open(job_path))
    results = []
    for job in jobs["artifacts"]:
        t0 = time.perf_counter()
        try:
            run = RUNNERS[job["runtime"]]
            out, load_s, run_s, evidence = run(job, jobs["profile_dir"])
            np.save(job["output"], _perturb(out.astype(np.float32)))
            results.append({"file": job["file"], "ok": True, "emulated_load_s": round(load_s, 2),
                            "emulated_run_s": round(run_s, 2), "count": int(len(out)), "evidence": evidence})
        except Exception as exc:  # one broken artifact must not hide the others' results
            results.append({"file": job["file"], "ok": False, "error": f"{type(exc).__name__}: {exc}",
                            "emulated_run_s": round(time.perf_counter() - t0, 2)})
        with open(result_path + ".tmp", "w") as fh:
            json.dump({"results": results}, fh)
        os.replace(result_path + ".tmp", result_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
