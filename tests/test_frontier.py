"""Frontier table and plot: published points, Pareto marking, files, and a reduced `frontier` run."""

import csv
import json
from pathlib import Path

import pytest
from helpers import bench_record
from PIL import Image
from typer.testing import CliRunner

from mobileclip_deploy.bench import frontier
from mobileclip_deploy.bench.frontier import MEASURED, Point
from mobileclip_deploy.bench.records import read_records, validate


def _p(name, ms, top1, group=MEASURED):
    return Point(name, group, "host", "onnx", "fp32", ms / 2, ms / 2, ms, top1, "published", True, "test")


def test_published_points_carry_sources_and_paper_numbers():
    pts = {p.name: p for p in frontier.published_points()}
    s0 = pts["MobileCLIP-S0"]
    assert (s0.total_ms, s0.top1, s0.group) == (3.1, 67.8, frontier.PUBLISHED)
    assert pts["OpenAI ViT-B/16"].group == frontier.PEER and pts["OpenAI ViT-B/16"].total_ms == 14.8
    assert "DIME-FM Distill-ViT-B/32" not in pts  # no latency published
    assert all(p.source for p in pts.values())


def test_pareto_front_per_group():
    pts = [_p("a", 10, 70), _p("b", 20, 65), _p("c", 30, 75), _p("d", 30, 74), _p("e", 5, 60),
           _p("pub", 1, 90, frontier.PUBLISHED)]
    frontier.mark_pareto(pts)
    assert {p.name for p in pts if p.pareto} == {"e", "a", "c", "pub"}


def test_outputs_open_and_have_one_row_per_point(tmp_path):
    pts = [_p("MobileCLIP-S0 onnx fp32", 80, 67.8), *frontier.published_points()]
    paths = frontier.write_outputs(pts, tmp_path, "t", ["RANDOM WEIGHTS: test"])
    with Image.open(paths["png"]) as im:
        im.verify()
    assert paths["svg"].read_text().lstrip().startswith("<?xml")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == len(pts) and rows[0]["group"] == MEASURED
    assert "RANDOM WEIGHTS" in paths["md"].read_text()


def test_points_from_device_records(tmp_path):
    path = tmp_path / "android.jsonl"
    recs = []
    for tower, ms in (("image", [4.0]), ("text", [6.0])):
        r = bench_record()
        r.update(target="android", threads=4)
        r["artifact"].update(tower=tower, backend="executorch-xnnpack")
        r["latency_ms"]["median"] = ms[0]
        recs.append(r)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    (pt,) = frontier.points_from_records(path)
    assert pt.total_ms == 10.0 and pt.top1 == 67.8 and pt.device.startswith("android")


def test_frontier_schemes_are_checked_before_any_work():
    from mobileclip_deploy.bench.sweep import frontier_pair
    from mobileclip_deploy.errors import UserError

    assert frontier_pair(" executorch:8DA8W") == ("executorch-xnnpack", "8da8w")
    assert frontier_pair("onnx:w8a8", calibration=Path("photos")) == ("onnx", "w8a8")
    for bad, why in (("onnx", "BACKEND:SCHEME"), ("onnx:w8a8", "calibration"), ("coreml:fp16", "on the host"),
                     ("onnx:int3", "does not support")):
        with pytest.raises(UserError, match=why):
            frontier_pair(bad)


def test_reduced_frontier_run(tmp_path, monkeypatch, shared_dir):
    """S0 with ONNX fp32 for real; a static scheme (calibrated on the photos given) whose converter breaks
    costs only its own point."""
    from mobileclip_deploy.cli import app
    from mobileclip_deploy.exporters import onnx as onnx_exporter

    real_export = onnx_exporter.export
    calibrated = []

    def export_or_break(module, example, tower, scheme, path, calibration, *args, **kwargs):
        if scheme == "w8a8":
            calibrated.append(calibration.shape)
            raise RuntimeError("converter exploded")
        return real_export(module, example, tower, scheme, path, calibration, *args, **kwargs)

    monkeypatch.setattr(onnx_exporter, "export", export_or_break)
    out = tmp_path / "fr"
    args = ["frontier", "--variants", "mobileclip-s0", "--schemes", "onnx:fp32,onnx:w8a8", "--warmup", "0",
            "--iterations", "2", "--calibration", str(shared_dir / "data" / "imagenet-samples"), "-o", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    with Image.open(out / "frontier.png") as im:
        assert im.size[0] > 500
    rows = list(csv.DictReader((out / "frontier.csv").open()))
    measured = [r for r in rows if r["group"] == MEASURED]
    assert len(rows) == 1 + len(frontier.published_points()) and len(measured) == 1
    assert measured[0]["random_weights"] == "True" and measured[0]["top1_source"] == "published"
    assert "| MobileCLIP-S0 onnx fp32 | host 1T |" in res.output  # the Markdown table, unwrapped
    md = (out / "frontier.md").read_text()
    assert "Left out: mobileclip-s0_image_onnx_w8a8.onnx: export failed: RuntimeError: converter exploded" in md
    assert calibrated[0][0] == 16 and calibrated[0][1:] == (3, 256, 256)  # the photos reached the exporter
    recs = read_records(out / "bench.jsonl")
    assert len(recs) == 2 and all(validate(r) == [] for r in recs)
    assert recs[0]["manifest_entry"]["sha256"] == recs[0]["artifact"]["sha256"]  # made by the export pipeline
    again = CliRunner().invoke(app, args[:4] + ["onnx:fp32"] + args[5:])
    assert again.exit_code == 0 and "reuse mobileclip-s0" in again.output


def test_frontier_student_refusals(tmp_path):
    """A --student folder is checked before any export: a finished run, with its checkpoint, and data to score it."""
    from mobileclip_deploy.cli import app

    def said(res) -> str:  # the message, unwrapped
        return " ".join(res.output.split())

    run = tmp_path / "run"
    run.mkdir()
    base = ["frontier", "--schemes", "onnx:fp32", "-o", str(tmp_path / "fr")]
    res = CliRunner().invoke(app, base + ["--student", str(run), "--eval-data", str(tmp_path)])
    assert res.exit_code == 2 and "no summary.json there" in said(res)
    (run / "summary.json").write_text(json.dumps({"variant": "mobileclip-s0", "student": "elsewhere/student.pt"}))
    res = CliRunner().invoke(app, base + ["--student", str(run), "--eval-data", str(tmp_path)])
    assert res.exit_code == 2 and "student.pt is missing" in said(res)
    (run / "student.pt").write_bytes(b"")
    res = CliRunner().invoke(app, base + ["--student", str(run)])
    assert res.exit_code == 2 and "--student needs --eval-data" in said(res)
    twin = tmp_path / "other" / "run"
    twin.mkdir(parents=True)
    for f in ("summary.json", "student.pt"):
        (twin / f).write_bytes((run / f).read_bytes())
    res = CliRunner().invoke(app, base + ["--student", str(run), "--student", str(twin), "--eval-data", str(tmp_path)])
    assert res.exit_code == 2 and "same name and model" in said(res)
    assert not (tmp_path / "fr").exists()


def test_accuracy_measured_on_another_data_set_gets_its_own_panel(tmp_path):
    """A student's 12-way top-1 on 12 photos is not an ImageNet figure: its own panel, named by the data set."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    student = Point("MC-S0-distilled[run] onnx fp32", MEASURED, "host 1T", "onnx", "fp32", 4.0, 3.0, 7.0, 41.7,
                    "measured", False, "test", top1_on="photos (12-way, 12 images)")
    int8 = Point("MC-S0-distilled[run] onnx 8da8w", MEASURED, "host 1T", "onnx", "8da8w", 3.0, 2.0, 5.0, 33.3,
                 "measured", False, "test", top1_on="photos (12-way, 12 images)")
    pts = [student, int8, _p("MobileCLIP-S0 onnx fp32", 80, 67.8), *frontier.published_points()]
    figures = []
    real_close = plt.close
    plt_close = lambda fig=None: figures.append(fig)  # noqa: E731 - keep the figure to inspect it
    try:
        plt.close = plt_close
        paths = frontier.write_outputs(pts, tmp_path, "t", [])
    finally:
        plt.close = real_close
    (fig,) = figures
    fig.canvas.draw()
    imagenet, photos = fig.axes
    assert imagenet.get_ylabel() == "ImageNet zero-shot top-1 (%)"
    assert photos.get_ylabel() == "zero-shot top-1 (%) on photos (12-way, 12 images)"
    on_imagenet = [tuple(o) for c in imagenet.collections for o in c.get_offsets()]
    assert (7.0, 41.7) not in on_imagenet and (5.0, 33.3) not in on_imagenet
    assert sorted(tuple(o) for c in photos.collections for o in c.get_offsets()) == [(5.0, 33.3), (7.0, 41.7)]
    for ax in fig.axes:  # every label inside its panel (nothing cut off at the right edge)
        box = ax.get_window_extent()
        for text in ax.texts:
            extent = text.get_window_extent()
            assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, text.get_text()
    real_close(fig)
    rows = {r["name"]: r for r in csv.DictReader(paths["csv"].open())}
    assert rows[student.name]["top1_on"] == "photos (12-way, 12 images)"
    assert "photos (12-way, 12 images)" in paths["md"].read_text()


def _art(backend: str, scheme: str, tower: str):
    from mobileclip_deploy.bench.artifacts import Artifact

    return Artifact(Path(f"m_{tower}_{backend}_{scheme}"), "mobileclip-s0", tower, backend, scheme)


def test_a_quantized_point_is_compared_with_the_fp32_artifacts(monkeypatch, tmp_path):
    """The frontier's agreement column: a w8a8 point's predictions are scored against its backend's fp32 pair
    (another backend's when its own is missing); fp32 points and folders without an fp32 pair have none."""
    from mobileclip_deploy.bench import evaluate as ev
    from mobileclip_deploy.bench import sweep
    from mobileclip_deploy.bench.evaluate import EvalResult

    arts = [_art(b, s, t) for b, s in (("onnx", "fp32"), ("onnx", "w8a8"), ("litert", "fp32"), ("litert", "8da8w"))
            for t in ("image", "text")]
    assert sweep.fp32_reference(arts, "onnx", "w8a8") == ("onnx", "fp32")
    assert sweep.fp32_reference(arts[4:] + arts[2:4], "onnx", "w8a8") == ("litert", "fp32")
    assert sweep.fp32_reference(arts, "onnx", "fp32") is None
    assert sweep.fp32_reference([arts[0], *arts[2:4]], "onnx", "w8a8") is None  # the fp32 pair lacks its text tower

    seen = {}
    monkeypatch.setattr(ev, "artifact_encoder", lambda path, backend: path.name)

    def fake_evaluate(image_fn, text_fn, *args, reference=None, reference_predictions=None, **kwargs):
        seen.update(image=image_fn, reference=reference, reference_predictions=reference_predictions)
        compared = reference is not None or reference_predictions is not None
        return EvalResult(50.0, None, 4, 2, 1, 1.0, 1.0, None, 0.75 if compared else None, [len(image_fn)] * 4)

    monkeypatch.setattr(ev, "evaluate", fake_evaluate)
    cfg = sweep.SweepConfig(("mobileclip-s0",), (("onnx", "w8a8"),), tmp_path, {}, 1, 0, 1, eval_data=tmp_path)
    top1, on, agreement = sweep.evaluate_scheme(cfg, "mobileclip-s0", arts, "onnx", "w8a8", None)
    assert (top1, agreement) == (50.0, 0.75) and seen["image"] == "m_image_onnx_w8a8"
    assert seen["reference"][:2] == ("m_image_onnx_fp32", "m_text_onnx_fp32")
    assert sweep.evaluate_scheme(cfg, "mobileclip-s0", arts, "onnx", "fp32", None)[2] is None
    # in a sweep the fp32 pair is evaluated first: the w8a8 point's agreement reuses its predictions
    known = {}
    sweep.evaluate_scheme(cfg, "mobileclip-s0", arts, "onnx", "fp32", None, known)
    assert sweep.evaluate_scheme(cfg, "mobileclip-s0", arts, "onnx", "w8a8", None, known)[2] == 0.75
    assert seen["reference"] is None and seen["reference_predictions"] == [len("m_image_onnx_fp32")] * 4
    point = Point("S0 onnx w8a8", MEASURED, "host", "onnx", "w8a8", 1, 1, 2, top1, "measured", False, "t",
                  top1_on=on, agreement=agreement)
    assert "| measured | 75.0% |" in frontier.to_markdown([point], [])
    assert next(csv.DictReader(frontier.to_csv([point]).splitlines()))["agreement"] == "0.7500"
