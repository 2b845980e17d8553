"""Zero-shot evaluation on a small folder of the shared ImageNet samples (symlinked into tmp_path)."""

import json

import pytest
import torch
from helpers import SAMPLES, expected_top1, sample_rows, uneven_folder, wnid_folder
from tiny_artifacts import tiny_onnx, tiny_pte, tiny_text_onnx
from typer.testing import CliRunner

from mobileclip_deploy.bench import evaluate as ev
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.hashing import sha256_path


def test_folder_mapping_rules(tmp_path):
    from mobileclip_deploy.zeroshot import imagenet_classnames

    names = imagenet_classnames()
    root = wnid_folder(tmp_path)
    with pytest.raises(UserError, match="--class-map"):
        ev.resolve_class_folders(root, names)
    mapped = ev.resolve_class_folders(root, names, SAMPLES / "labels.csv")
    assert [i for _, i in mapped] == [int(r["index"]) for r in sample_rows()]
    synset = tmp_path / "LOC_synset_mapping.txt"
    synset.write_text("".join(f"n{i:08d} class {i}\n" for i in range(1000)))
    assert ev.read_class_map(synset)["n00000007"] == 7
    by_index = tmp_path / "idx"
    (by_index / "3").mkdir(parents=True)
    (by_index / "999").mkdir()
    assert [i for _, i in ev.resolve_class_folders(by_index, names)] == [3, 999]
    by_name = tmp_path / "names"
    (by_name / "Tiger_Shark").mkdir(parents=True)
    assert ev.resolve_class_folders(by_name, names)[0][1] == names.index("tiger shark")
    (by_name / "not a class").mkdir()
    with pytest.raises(UserError, match="cannot map"):
        ev.resolve_class_folders(by_name, names)


def _oracle(root, shift):
    """Encoders that put each image on its class's text embedding (shift=1: on the next class's)."""
    from mobileclip_deploy.preprocess import load_image, preprocess_pil
    from mobileclip_deploy.zeroshot import (
        class_text_embeddings,
        imagenet_classnames,
        simple_templates,
    )

    gen = torch.Generator().manual_seed(0)
    table = torch.randn(49408, 64, generator=gen)

    def text_fn(tokens):
        return table[tokens.long()].sum(dim=1)

    mapping = ev.resolve_class_folders(root, imagenet_classnames(), SAMPLES / "labels.csv")
    present = sorted(i for _, i in mapping)
    by_pixels = []
    for folder, idx in mapping:
        for f in folder.iterdir():
            pix = preprocess_pil(load_image(f), 256)
            target = present[(present.index(idx) + shift) % len(present)]
            emb = class_text_embeddings(text_fn, [imagenet_classnames()[target]], simple_templates())[0]
            by_pixels.append((pix, emb))

    def image_fn(pixels):
        return torch.stack([next(e for p, e in by_pixels if torch.equal(p, x)) for x in pixels])

    return image_fn, text_fn


@pytest.mark.parametrize("shift, top1", [(0, 100.0), (1, 0.0)])
def test_evaluate_scores_the_right_class(tmp_path, shift, top1):
    root = wnid_folder(tmp_path)
    image_fn, text_fn = _oracle(root, shift)
    seen = []
    res = ev.evaluate(image_fn, text_fn, root, 256, templates="simple", classes="present",
                      class_map=SAMPLES / "labels.csv", batch_size=3, progress=lambda s, d, t: seen.append(s))
    assert res.top1 == top1 and res.top5 is None  # 4 classes: top-5 would be 100% whatever the model
    assert res.images == 4 and res.classes_scored == 4 and res.templates == 7 and res.images_per_s > 0
    assert {"text", "images"} <= set(seen)


@pytest.mark.parametrize("reference_shift, agreement", [(0, 1.0), (1, 0.0)])
def test_agreement_with_fp32_counts_unchanged_predictions(tmp_path, reference_shift, agreement):
    """A candidate that predicts what the reference predicts agrees on every image; a shifted one on none."""
    root = wnid_folder(tmp_path)
    image_fn, text_fn = _oracle(root, 0)
    ref_image, ref_text = _oracle(root, reference_shift)
    res = ev.evaluate(image_fn, text_fn, root, 256, templates="simple", classes="present",
                      class_map=SAMPLES / "labels.csv", batch_size=3, reference=(ref_image, ref_text, None))
    assert res.top1 == 100.0 and res.agreement_with_fp32 == agreement
    # the reference's own predictions, kept from its evaluation, give the same count without running it again
    ref = ev.evaluate(ref_image, ref_text, root, 256, templates="simple", classes="present",
                      class_map=SAMPLES / "labels.csv", batch_size=3)
    assert len(ref.predictions) == 4 and "predictions" not in ref.as_dict()
    again = ev.evaluate(image_fn, text_fn, root, 256, templates="simple", classes="present",
                        class_map=SAMPLES / "labels.csv", batch_size=3, reference_predictions=ref.predictions)
    assert again.agreement_with_fp32 == agreement


def test_artifact_encoder_runs_onnx_row_by_row(tmp_path):
    enc = ev.artifact_encoder(tiny_onnx(tmp_path / "t.onnx", "text"), "onnx")
    tokens = torch.zeros(5, 77, dtype=torch.int64)
    tokens[:, 0] = torch.arange(5) * 77
    out = enc(tokens)
    assert out.shape == (5, 1) and torch.allclose(out[:, 0], torch.arange(5, dtype=torch.float32))
    with pytest.raises(UserError):
        ev.artifact_encoder(tmp_path / "t.mlpackage", "coreml")


@pytest.mark.usefixtures("one_thread")
def test_cli_eval_checkpoint_small_folder(tmp_path, s0_checkpoint):
    from mobileclip_deploy import create_model, reparameterize
    from mobileclip_deploy.cli import app

    root = uneven_folder(tmp_path)
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(app, ["eval", "--data", str(root), "--model", "mobileclip-s0", "-c", str(s0_checkpoint),
                                   "--class-map", str(SAMPLES / "labels.csv"), "--templates", "simple",
                                   "--classes", "present", "-o", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(out.read_text())
    assert summary["images"] == 6 and summary["classes_scored"] == 3 and summary["random_weights"] is False
    top1 = expected_top1(reparameterize(create_model("mobileclip-s0", s0_checkpoint)), root, 256)
    assert summary["top1"] == pytest.approx(top1) and summary["top5"] is None
    assert summary["image"] == "eager PyTorch (folded)"


def test_cli_eval_executorch_and_onnx_artifacts(tmp_path):
    """Image on the ExecuTorch runtime, text on ONNX Runtime, model taken from the manifest."""
    from mobileclip_deploy.cli import app

    folder = tmp_path / "export"
    folder.mkdir()
    image = tiny_pte(folder / "mobileclip-s0_image_executorch-xnnpack_fp32.pte")
    text = tiny_text_onnx(folder / "mobileclip-s0_text_onnx_fp32.onnx")
    entries = [{"file": p.name, "sha256": sha256_path(p), "model": "mobileclip-s0", "tower": t, "backend": b,
                "scheme": "fp32", "checkpoint_sha256": None, "status": "ok"}
               for p, t, b in ((image, "image", "executorch-xnnpack"), (text, "text", "onnx"))]
    (folder / "manifest.json").write_text(json.dumps({"model": "mobileclip-s0", "artifacts": entries}))
    root = wnid_folder(tmp_path, n=4)
    res = CliRunner().invoke(app, ["eval", "--data", str(root), "--artifacts", str(folder), "--class-map",
                                   str(SAMPLES / "labels.csv"), "--templates", "simple", "--classes", "present",
                                   "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["image"] == image.name and summary["text"] == text.name and summary["model"] == "mobileclip-s0"
    assert summary["images"] == 4 and summary["classes_scored"] == 4 and summary["top5"] is None
    assert summary["random_weights"] is True and summary["images_per_s"] > 0
    wrong = CliRunner().invoke(app, ["eval", "--data", str(root), "--artifacts", str(folder), "--model",
                                     "mobileclip-b"])
    assert wrong.exit_code != 0 and "preprocessing" in str(wrong.exception)
