"""`eval` says how many classes competed and never reports a top-5 that every label passes; artifacts made from
other weights than --checkpoint are refused; the zero-shot classifier is cached on disk, keyed on the text
weights, class names and templates, and checked before reuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mobileclip_deploy.bench import evaluate as ev
from mobileclip_deploy.cli import app
from mobileclip_deploy.hashing import sha256_path


def _onnx(path: Path, tower: str) -> Path:
    """Tiny real ONNX towers with 3-dim embeddings: image = mean colour, text = the first three tokens."""
    import onnx
    from onnx import TensorProto, helper

    if tower == "image":
        inp = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, 256, 256])
        nodes = [helper.make_node("ReduceMean", ["pixels"], ["image_embedding"], axes=[2, 3], keepdims=0)]
    else:
        inp = helper.make_tensor_value_info("tokens", TensorProto.INT32, [1, 77])
        starts, ends, axes = (helper.make_tensor(n, TensorProto.INT64, [1], [v])
                              for n, v in (("s", 0), ("e", 3), ("a", 1)))
        nodes = [helper.make_node("Constant", [], ["s"], value=starts), helper.make_node("Constant", [], ["e"], value=ends),
                 helper.make_node("Constant", [], ["a"], value=axes),
                 helper.make_node("Slice", ["tokens", "s", "e", "a"], ["sl"]),
                 helper.make_node("Cast", ["sl"], ["text_embedding"], to=TensorProto.FLOAT)]
    out = helper.make_tensor_value_info(f"{tower}_embedding", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "g", [inp], [out]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _export(tmp_path: Path, checkpoint_sha256: str | None) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    files = [(_onnx(folder / f"mobileclip-s0_{t}_onnx_fp32.onnx", t), t) for t in ("image", "text")]
    entries = [{"file": p.name, "sha256": sha256_path(p), "model": "mobileclip-s0", "tower": t, "backend": "onnx",
                "scheme": "fp32", "checkpoint_sha256": checkpoint_sha256, "status": "ok"} for p, t in files]
    (folder / "manifest.json").write_text(json.dumps({"model": "mobileclip-s0", "artifacts": entries}))
    return folder


def _classes(tmp_path: Path, shared_dir: Path, n: int) -> Path:
    """n class folders named by class index, one real photo each."""
    samples = sorted((shared_dir / "data" / "imagenet-samples").glob("*.JPEG"))[:n]
    root = tmp_path / "val"
    for i, photo in enumerate(samples):
        (root / str(i)).mkdir(parents=True)
        (root / str(i) / photo.name).symlink_to(photo)
    return root


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MOBILECLIP_DEPLOY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _eval(*args: str):
    return CliRunner().invoke(app, ["eval", "--templates", "simple", "--classes", "present", *args])


def test_subset_says_how_many_classes_competed_and_has_no_top5(tmp_path: Path, shared_dir: Path, cache: Path) -> None:
    res = _eval("--data", str(_classes(tmp_path, shared_dir, 3)), "--artifacts", str(_export(tmp_path, None)))
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    assert "3 classes competed" in text and "top-5 not defined (fewer than 5 classes)" in text


def test_top5_is_reported_from_five_classes(tmp_path: Path, shared_dir: Path, cache: Path) -> None:
    res = _eval("--data", str(_classes(tmp_path, shared_dir, 5)), "--artifacts", str(_export(tmp_path, None)),
                "--json")
    summary = json.loads(res.stdout)
    assert summary["classes_scored"] == 5 and summary["top5"] == 100.0  # 5 of 5: true, and now meaningful


@pytest.mark.parametrize("exported_from", ["ab" * 32, None])
def test_artifacts_of_other_weights_than_checkpoint_are_refused(tmp_path: Path, shared_dir: Path,
                                                                 exported_from: str | None) -> None:
    ckpt = tmp_path / "other.pt"
    torch.save({"w": torch.zeros(1)}, ckpt)
    res = _eval("--data", str(_classes(tmp_path, shared_dir, 2)), "--artifacts", str(_export(tmp_path, exported_from)),
                "--checkpoint", str(ckpt), "--json")
    assert res.exit_code == 2 and res.stdout == ""
    message = " ".join(res.stderr.split())
    source = f"checkpoint sha256 {'ab' * 6}" if exported_from else "random weights"
    assert f"error: mobileclip-s0_image_onnx_fp32.onnx was exported from {source}, not from --checkpoint" in message
    assert sha256_path(ckpt)[:12] in message


def test_zero_shot_classifier_is_cached_and_verified(tmp_path: Path, shared_dir: Path, cache: Path) -> None:
    root = _classes(tmp_path, shared_dir, 2)
    calls = []

    def text_fn(tokens: torch.Tensor) -> torch.Tensor:
        calls.append(len(tokens))
        return tokens[:, :3].float()

    def image_fn(pixels: torch.Tensor) -> torch.Tensor:
        return pixels.mean(dim=(2, 3))

    def run(identity: str | None, templates: str = "simple") -> ev.EvalResult:
        calls.clear()
        return ev.evaluate(image_fn, text_fn, root, 256, templates=templates, classes="present",
                           text_identity=identity)

    first = run("weights-1")
    assert calls and first.classifier_cache is None
    files = list((cache / "zeroshot").glob("*.safetensors"))
    assert len(files) == 1
    second = run("weights-1")
    assert calls == [] and second.classifier_cache == str(files[0]) and second.top1 == first.top1
    run("weights-2")  # other text weights: computed again, own file
    assert calls and len(list((cache / "zeroshot").glob("*.safetensors"))) == 2
    run("weights-1", templates="openai")  # other templates
    assert calls
    run(None)  # random weights: never cached
    assert calls and len(list((cache / "zeroshot").glob("*.safetensors"))) == 3
    # An altered cache file (same key, other numbers) fails its sha256 check and is recomputed.
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(files[0]), "pt") as fh:
        meta, emb = fh.metadata(), fh.get_tensor("embeddings")
    save_file({"embeddings": emb + 1}, str(files[0]), metadata=meta)
    again = run("weights-1")
    assert calls and again.classifier_cache is None and again.top1 == first.top1
    with safe_open(str(files[0]), "pt") as fh:
        assert np.array_equal(fh.get_tensor("embeddings").numpy(), emb.numpy())
