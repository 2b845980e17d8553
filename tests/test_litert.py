"""The `litert` backend (`.tflite`) on the tiny MobileCLIP-S0-shaped model with golden-recipe weights: every scheme
of both towers converts and matches PyTorch on LiteRT's XNNPACK runtime, the metadata reads back through LiteRT's
flatbuffer schema, a planted defect fails the parity check the clean artifact passes, and a missing extra is one
message. One litert-torch conversion per tower (~20-40 s on the loaded CI host) is shared by the module.

Parity is judged with exporters/parity.compare against the precision-class thresholds (the common gate of
verify/gate.py is not in this branch yet)."""

from __future__ import annotations

import copy
import json
import shutil
import sys

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("litert_torch")

from mobileclip_deploy import runtimes
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters.backends import litert
from mobileclip_deploy.exporters.fold import fold_affine
from mobileclip_deploy.exporters.parity import compare
from mobileclip_deploy.exporters.schemes import DEFAULT_THRESHOLDS
from mobileclip_deploy.exporters.wrappers import example_input, tower_module
from mobileclip_deploy.tokenizer import tokenize
from helpers import TINY, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEMES = {s.name: s for s in litert.LiteRT.schemes if not s.rebuilds_as}  # auto: test_autoquant_litert.py
METADATA = {"variant": TINY.name, "preprocessing": {"resize": TINY.image_size}, "tokenizer": "clip-bpe-49408"}


def _inputs(tower: str, count: int, seed: int) -> np.ndarray:
    if tower == "image":
        rng = np.random.default_rng(seed)
        # smooth images with a per-photo tint: closer to photos than white noise, still different per row
        base = rng.random((count, 3, 8, 8), dtype=np.float32)
        up = torch.nn.functional.interpolate(torch.from_numpy(base), size=TINY.image_size, mode="bilinear")
        return up.numpy().clip(0, 1).astype(np.float32)
    words = ["a photo of a dog", "a diagram", "two cats on a sofa", "a red car at night", "a bowl of soup",
             "an old map", "a mountain lake", "a child with a kite", "a blue door", "a pile of books"]
    return tokenize((words[seed:] + words[:seed])[:count], TINY.context_length).to(torch.int32).numpy()


@pytest.fixture(scope="module")
def towers() -> dict[str, nn.Module]:
    model = tiny_model()
    return {t: fold_affine(tower_module(model, t, TINY.image_size, TINY.context_length)) for t in ("image", "text")}


@pytest.fixture(scope="module")
def float_files(towers, module_tmp) -> dict[str, object]:
    """One converted float `.tflite` per tower with our metadata, as the backend writes it before quantizing."""
    out = module_tmp("litert")
    files = {}
    for tower, module in towers.items():
        path = out / f"{tower}.float.tflite"
        litert.convert(module, example_input(tower, TINY.image_size, TINY.context_length), tower, path)
        litert.write_metadata(path, {litert.METADATA_KEY: json.dumps({**METADATA, "tower": tower}).encode()})
        files[tower] = path
    return files


@pytest.fixture(scope="module")
def artifacts(float_files, module_tmp) -> dict[tuple[str, str], object]:
    out = module_tmp("litert-schemes")
    found = {}
    for tower, float_path in float_files.items():
        for scheme, info in SCHEMES.items():
            path = out / f"{tower}_{scheme}.tflite"
            if scheme == "fp32":
                shutil.copy(float_path, path)
            else:
                calibration = _inputs(tower, 8, seed=1) if info.static else None
                litert.quantize(float_path, scheme, path, calibration, tower)
            found[tower, scheme] = path
    return found


def _reference(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("tower", ["image", "text"])
def test_parity_inputs_give_different_embeddings(towers, tower):
    """Without this, any artifact (even a constant) would pass a cosine gate."""
    ref = _reference(towers[tower], _inputs(tower, 6, seed=0))
    unit = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    pairwise = unit @ unit.T
    assert pairwise[~np.eye(len(ref), dtype=bool)].min() < 0.95


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("tower", ["image", "text"])
def test_every_scheme_matches_pytorch_on_litert(artifacts, towers, tower, scheme):
    x = _inputs(tower, 6, seed=0)
    runner = runtimes.load(artifacts[tower, scheme])
    assert runner.info["runtime"] == "litert" and runner.info["xnnpack_partitions"] >= 1
    assert runner.input_dtype == (np.float32 if tower == "image" else np.int32)
    metrics = compare(_reference(towers[tower], x), runner.batched(x))
    assert metrics["min_cosine"] >= DEFAULT_THRESHOLDS[SCHEMES[scheme].threshold_class], metrics
    if scheme == "fp32":
        assert metrics["max_abs_error"] < 1e-4, metrics


def test_quantized_files_are_smaller(artifacts):
    size = {key: path.stat().st_size for key, path in artifacts.items()}
    for tower in ("image", "text"):
        assert size[tower, "8da8w"] < size[tower, "fp16"] < size[tower, "fp32"]
        assert size[tower, "w8a8"] < size[tower, "fp32"]
    # the text tower is mostly its token table and linears, all of which the fp16 and dynamic int8 recipes store
    assert size["text", "fp16"] < 0.55 * size["text", "fp32"] and size["text", "8da8w"] < 0.35 * size["text", "fp32"]


def test_xnnpack_takes_the_image_tower_and_the_count_sees_reference_kernels(artifacts):
    """The fp32 image tower runs in one XNNPACK partition; the same file without the default delegate is reported
    as running every op on the reference kernels, so the count is read, not assumed."""
    info = runtimes.load(artifacts["image", "fp32"]).info
    assert info["xnnpack_partitions"] == 1 and info["reference_kernel_ops"] == {}
    assert info["delegated_nodes"] == info["model_nodes"] > 50
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    plain = Interpreter(model_path=str(artifacts["image", "fp32"]), num_threads=1,
                        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    plain.allocate_tensors()
    counted = runtimes.litert.delegation(plain._get_ops_details())
    assert counted["xnnpack_partitions"] == 0 and sum(counted["reference_kernel_ops"].values()) == info["model_nodes"]


def test_dynamic_int8_keeps_depthwise_convs_on_xnnpack(artifacts):
    """Dynamically quantized depthwise convs have no XNNPACK kernel: the scheme leaves them float."""
    for tower in ("image", "text"):
        left = runtimes.load(artifacts[tower, "8da8w"]).info["reference_kernel_ops"]
        assert "DEPTHWISE_CONV_2D" not in left and "CONV_2D" not in left and "FULLY_CONNECTED" not in left


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_metadata_reads_back_from_every_scheme(artifacts, scheme):
    for tower in ("image", "text"):
        entries = litert.read_metadata(artifacts[tower, scheme])
        assert json.loads(entries[litert.METADATA_KEY]) == {**METADATA, "tower": tower}


@pytest.fixture(scope="module")
def fp16_text(towers, module_tmp):
    """The text tower through the one-call export (convert, metadata, quantize) as the backend runs it."""
    folder = module_tmp("litert-chain")
    path = folder / "text_fp16.tflite"
    meta = {**METADATA, "tower": "text", "scheme": "fp16"}
    facts = litert.export(towers["text"], example_input("text", TINY.image_size, TINY.context_length), "text",
                          "fp16", path, folder, meta)
    return path, meta, facts


def test_export_chain_writes_fp16_with_reduced_precision_metadata(towers, fp16_text):
    path, meta, facts = fp16_text
    assert facts["quantizer"] == "ai-edge-quantizer" and list(path.parent.iterdir()) == [path]  # no float leftover
    entries = litert.read_metadata(path)
    assert json.loads(entries[litert.METADATA_KEY]) == meta
    assert entries["reduced_precision_support"] == b"fp16accfp16"
    x = _inputs("text", 4, seed=0)
    assert compare(_reference(towers["text"], x), runtimes.load(path).batched(x))["min_cosine"] >= 0.999


def test_arm64_guest_runs_litert_and_only_the_fp16_core_computes_in_fp16(towers, artifacts, fp16_text, tmp_path):
    """The light guest (aarch64 ai_edge_litert wheel, no torch) under qemu-user: every artifact matches PyTorch on
    cortex-a53 and cortex-a76; the fp16 file computes in fp32 on the A53 (same numbers as x86) and in fp16 on
    the A76, whose fp16 arithmetic the reduced_precision_support entry unlocks (visibly larger deviation)."""
    from mobileclip_deploy.atomic import locked_folder
    from mobileclip_deploy.verify import arm64
    from mobileclip_deploy.verify.arm64_env import Arm64Env, default_cache, parse_cpus

    env = Arm64Env(default_cache())
    cpus = parse_cpus("cortex-a53,cortex-a76")
    env.cache.mkdir(parents=True, exist_ok=True)
    with locked_folder(env.cache):
        env.prepare(cpus, executorch=False, litert=True)
    folder = tmp_path / "export"
    folder.mkdir()
    files = {"image_fp32.tflite": artifacts["image", "fp32"], "text_8da8w.tflite": artifacts["text", "8da8w"],
             "text_fp16.tflite": fp16_text[0]}
    for name, src in files.items():
        shutil.copy(src, folder / name)
    x = {"image": _inputs("image", 2, seed=0), "text": _inputs("text", 3, seed=0)}
    npy = {}
    for tower, value in x.items():
        npy[tower] = tmp_path / f"{tower}.npy"
        np.save(npy[tower], value)
    entries = [{"file": name, "backend": "litert", "tower": name.split("_")[0]} for name in files]
    deviation = {}
    for cpu in cpus:
        results = arm64._run_guest(env, cpu, folder, entries, npy, tmp_path / cpu.name, {"litert"}, lambda _: None)
        for entry in entries:
            result, tower, scheme = results[entry["file"]], entry["tower"], entry["file"].split("_")[1][:-7]
            assert result["ok"], result
            assert result["evidence"]["reduced_precision_metadata"] == (scheme == "fp16")
            out = np.load(tmp_path / cpu.name / f"{entry['file']}.out.npy")
            metrics = compare(_reference(towers[tower], x[tower]), out)
            assert metrics["min_cosine"] >= DEFAULT_THRESHOLDS[SCHEMES[scheme].threshold_class], (cpu.name, metrics)
            host = runtimes.load(folder / entry["file"]).batched(x[tower])
            deviation[cpu.name, scheme] = float(np.abs(out - host).max())
    assert deviation["cortex-a53", "fp32"] < 1e-5 and deviation["cortex-a76", "fp32"] < 1e-5
    assert deviation["cortex-a53", "fp16"] < 1e-4
    assert deviation["cortex-a76", "fp16"] > 10 * max(deviation["cortex-a53", "fp16"], 1e-4)


def test_a_planted_defect_fails_parity_the_clean_artifact_passes(towers, artifacts, tmp_path):
    """One GELU of the text tower swapped for ReLU before conversion: the artifact runs, but misses the gate."""
    broken = copy.deepcopy(towers["text"])
    name = next(n for n, m in broken.named_modules() if isinstance(m, nn.GELU))
    parent, _, leaf = name.rpartition(".")
    setattr(broken.get_submodule(parent), leaf, nn.ReLU())
    path = tmp_path / "broken.tflite"
    litert.convert(broken, example_input("text", TINY.image_size, TINY.context_length), "text", path)
    x = _inputs("text", 6, seed=0)
    reference = _reference(towers["text"], x)
    clean = compare(reference, runtimes.load(artifacts["text", "fp32"]).batched(x))
    defect = compare(reference, runtimes.load(path).batched(x))
    assert clean["min_cosine"] >= DEFAULT_THRESHOLDS["fp32"] and defect["min_cosine"] < DEFAULT_THRESHOLDS["fp32"]


def test_missing_runtime_is_one_message_naming_the_extra(artifacts, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # import fails as if not installed
    with pytest.raises(UserError) as err:
        runtimes.load(artifacts["image", "fp32"])
    message = str(err.value)
    assert "\n" not in message and "ai_edge_litert" in message and '".[litert-runtime]"' in message


def test_missing_converter_is_one_message_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "litert_torch", None)
    message = litert.LiteRT().missing()
    assert message and "\n" not in message and '".[litert]"' in message and "litert_torch" in message


def test_pipeline_exports_judges_and_records_a_litert_artifact(tmp_path):
    """`export -q litert:8da8w` through the backend registry: the manifest names the file, the parity gate passed
    on LiteRT's runtime and the record says what XNNPACK took; the embedded metadata matches the manifest."""
    from helpers import entries
    from helpers import export as pipeline_export

    pipeline_export(tmp_path, ["litert:8da8w"], towers=("text",))
    ((name, entry),) = entries(tmp_path).items()
    assert name.endswith("_text_litert_8da8w.tflite") and entry["parity"]["passed"]
    assert entry["parity"]["min_cosine"] >= DEFAULT_THRESHOLDS["8bit"]
    assert entry["details"]["quantizer"] == "ai-edge-quantizer"
    embedded = json.loads(litert.read_metadata(tmp_path / name)[litert.METADATA_KEY])
    assert embedded["tower"] == "text" and embedded["scheme"] == "8da8w"
    assert json.dumps(entry).count("xnnpack_partitions") == 1
