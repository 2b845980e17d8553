"""`bench`, `eval` and `frontier`: latency on host/Android/iOS, zero-shot accuracy, and the frontier plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mobileclip_deploy.cli.app import app, console, err_console, print_json, progress_bar
from mobileclip_deploy.cli.options import CheckpointOpt, JsonOpt, RandomWeightsOpt, load_model_for_cli, upcast_field
from mobileclip_deploy.errors import UserError

MAX_RUNS = 10_000  # per artifact: more timed runs add nothing to the statistics, only hours


def _split(values: list[str] | None) -> set[str] | None:
    out = {v.strip() for item in values or [] for v in item.split(",") if v.strip()}
    return out or None


def _fmt(v: Any, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def print_records(records: list[dict[str, Any]]) -> None:
    """Table of records, with each run's speed-up over eager train-time PyTorch where that baseline exists."""
    from mobileclip_deploy.bench.records import headline_ms

    base = {(r["artifact"]["model"], r["artifact"]["tower"], r["threads"]): headline_ms(r["latency_ms"])
            for r in records if r.get("variant") == "train-time"}
    table = Table(title="latency in ms, batch 1 (warm statistics over the timed iterations; load and first "
                        "inference apart)")
    for col in ("model", "tower", "runtime", "scheme", "where", "load", "first", "median", "mean", "trim.mean",
                "p90", "min", "max", "stdev", "peak MB", "vs eager"):
        table.add_column(col, justify="left" if col in ("model", "tower", "runtime", "scheme") else "right")
    for r in records:
        lat, art = r["latency_ms"], r["artifact"]
        ref = base.get((art["model"], art["tower"], r["threads"]))
        runtime = r["runtime"]["name"] + (f" {r['variant']}" if r.get("variant") else "")
        table.add_row(art["model"] or art["file"], art["tower"] or "–", runtime, art["scheme"] or "–",
                      r["compute_units"] or f"{r['threads']}T", _fmt(r["load_ms"]), _fmt(r["first_inference_ms"]),
                      _fmt(lat["median"]), _fmt(lat.get("mean")), _fmt(lat["trimmed_mean"]), _fmt(lat["p90"]),
                      _fmt(lat["min"]), _fmt(lat["max"]), _fmt(lat["stdev"]), _fmt(r["peak_memory_mb"], 0),
                      f"{ref / headline_ms(lat):.2f}x" if ref else "–")
    # Piped output is not limited to 80 columns: a wrapped table is unreadable in a log file.
    (console if console.is_terminal else Console(width=190)).print(table)


def _eager_jobs(towers_by_model: dict[str, set[str]], checkpoint: Path | None) -> list[tuple[str, Any, dict, dict]]:
    """Eager PyTorch baselines, train-time and folded, for the towers the artifacts cover (both for --model)."""
    from mobileclip_deploy import reparameterize

    if checkpoint is not None and len(towers_by_model) > 1:
        raise UserError(f"--checkpoint is for one model, but the artifacts are of {', '.join(sorted(towers_by_model))}")
    jobs = []
    for name, towers in sorted(towers_by_model.items()):
        net, variant, _ = load_model_for_cli(name, checkpoint, random_weights=checkpoint is None)
        for form in ("train-time", "folded"):
            for tower in ("image", "text"):
                if tower not in towers:
                    continue
                # Loading counts the fold for the folded form: it is part of getting that model ready.
                def build(form: str = form, net: Any = net) -> Any:
                    return reparameterize(net) if form == "folded" else net

                art = {"file": f"{variant.name} eager {form} ({tower})", "sha256": None, "model": variant.name,
                       "tower": tower, "backend": "pytorch", "scheme": "fp32"}
                jobs.append((art["file"], (build, tower, variant.image_size), art,
                             {"variant": form, "random_weights": checkpoint is None}))
    return jobs


def _host_runs(artifacts: list, jobs: list[tuple[str, Any, dict, dict]], threads_list: list[int], warmup: int,
               iterations: int) -> list[dict[str, Any]]:
    """Time eager jobs, then artifacts, at every thread count, with a progress bar per run."""
    from mobileclip_deploy.bench.host import eager_loader, host_device, loader_for, measure
    from mobileclip_deploy.bench.records import make_record

    device = host_device()
    jobs = jobs + [(a.path.name, a, {}, {"manifest_entry": a.manifest_entry} if a.manifest_entry else {})
                   for a in artifacts]
    records = []
    with progress_bar() as progress:
        overall = progress.add_task("runs", total=len(jobs) * len(threads_list))
        for threads in threads_list:
            for label, job, art_info, extra in jobs:
                task = progress.add_task(f"{label} [{threads}T]", total=warmup + iterations)
                if isinstance(job, tuple):
                    load, runtime = eager_loader(job[0], job[1], job[2], threads)
                    info = art_info
                else:
                    load, runtime = loader_for(job, threads)
                    info = job.info()
                m = measure(load, warmup, iterations, lambda i, n, t=task: progress.update(t, completed=i))
                progress.remove_task(task)
                progress.advance(overall)
                records.append(make_record(target="host", device=device, runtime=runtime, artifact=info,
                                           measurement=m, threads=threads, extra=extra))
    return records


@app.command("bench")
def bench(
    paths: Annotated[list[Path] | None, typer.Argument(help="Export folders (with manifest.json) or artifact files.")] = None,
    target: Annotated[str, typer.Option(help="host, android or ios.")] = "host",
    threads: Annotated[str, typer.Option(help="Thread counts: N, 'all' (every core; Android: every big core), "
                                         "or a list such as '1,all'. Android runs are pinned to the big cores.")] = "1,all",
    warmup: Annotated[int, typer.Option(min=0, max=MAX_RUNS, help="Untimed runs after the first inference.")] = 10,
    iterations: Annotated[int, typer.Option(min=1, max=MAX_RUNS, help="Timed runs.")] = 50,
    backend: Annotated[list[str] | None, typer.Option(help="Only these backends (onnx, executorch-xnnpack, coreml).")] = None,
    scheme: Annotated[list[str] | None, typer.Option(help="Only these schemes (fp32, 8da8w, ...).")] = None,
    tower: Annotated[list[str] | None, typer.Option(help="Only image or text.")] = None,
    eager: Annotated[bool, typer.Option(help="Host: add eager PyTorch baselines (train-time and folded).")] = True,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Host: eager baselines for this model "
                                              "(besides the models of the artifacts).")] = None,
    checkpoint: CheckpointOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON-lines file the records are appended to.")] = Path("bench-results.jsonl"),
    serial: Annotated[str | None, typer.Option(help="Android: device serial (adb devices).")] = None,
    runner: Annotated[Path | None, typer.Option(help="Android: executor_runner or onnxruntime_perf_test built for the device.")] = None,
    benchmark_binary: Annotated[Path | None, typer.Option(help="Android: LiteRT's benchmark_model built for the device "
                                                          "(runs the .tflite artifacts).")] = None,
    adb: Annotated[str, typer.Option(help="Android: adb executable.")] = "adb",
    device: Annotated[str, typer.Option(help="iOS: 'mac' or an iPhone identifier from `xcrun devicectl list devices`.")] = "mac",
    compute_units: Annotated[list[str] | None, typer.Option(help="iOS: cpuOnly, cpuAndGPU, cpuAndNeuralEngine, all.")] = None,
    ios_package: Annotated[Path | None, typer.Option(help="iOS: path to apps/ios.")] = None,
) -> None:
    """Measure load, first-inference and warm latency of exported artifacts; append records and print a table."""
    from mobileclip_deploy.bench import artifacts as arts_mod
    from mobileclip_deploy.bench.records import append_records, check_appendable

    check_appendable(output)  # before measuring: results must not be lost at the end
    artifacts = arts_mod.select(arts_mod.collect(list(paths or [])), _split(backend), _split(scheme), _split(tower))
    if target == "host":
        from mobileclip_deploy.bench.host import thread_counts
        from mobileclip_deploy.registry import get_variant

        runnable = [a for a in artifacts if a.runtime is not None]
        skipped = [a.path.name for a in artifacts if a not in runnable]
        if skipped:
            err_console.print(f"[yellow]skipped (no runtime for them on this host; Core ML needs --target ios on a "
                              f"Mac): {', '.join(skipped)}[/]")
        towers: dict[str, set[str]] = {}
        for a in runnable:
            if a.model and a.tower:
                towers.setdefault(a.model, set()).add(a.tower)
        if model:
            towers[get_variant(model).name] = {"image", "text"}
        if not runnable and not (eager and towers):
            raise UserError("nothing to run: give export folders or .onnx/.pte files, or --model NAME for eager baselines")
        counts = thread_counts(threads)  # refused before any model is built
        jobs = _eager_jobs(towers, checkpoint) if eager else []
        records = _host_runs(runnable, jobs, counts, warmup, iterations)
    elif target == "android":
        records = _android(artifacts, serial, runner, benchmark_binary, adb, threads, warmup, iterations)
    elif target == "ios":
        from mobileclip_deploy.bench import ios

        folders = [p for p in paths or [] if p.is_dir() and (p / "manifest.json").exists()]
        if not folders:
            ios.require()
            raise UserError("--target ios takes export folders (with manifest.json) holding Core ML artifacts")
        records = []
        for folder in folders:
            for units in sorted(_split(compute_units) or {"all"}):
                records += (ios.run_mac(folder, units, warmup, iterations, ios_package) if device == "mac"
                            else ios.run_iphone(device, folder, units, warmup, iterations))
    else:
        raise UserError(f"--target must be host, android or ios (got {target!r})")
    append_records(output, records)
    print_records(records)
    console.print(f"{len(records)} record(s) appended to {output}")


LITERT_BINARY = ("--target android runs .tflite artifacts with LiteRT's benchmark_model: pass --benchmark-binary "
                 "PATH (benchmark_model for android_arm64, from LiteRT's release artifacts or `bazel build -c opt "
                 "--config=android_arm64 //tflite/tools/benchmark:benchmark_model`)")


def _android(artifacts: list, serial: str | None, runner: Path | None, benchmark_binary: Path | None, adb: str,
             threads: str, warmup: int, iterations: int) -> list[dict[str, Any]]:
    from mobileclip_deploy.bench import android
    from mobileclip_deploy.bench.host import thread_counts
    from mobileclip_deploy.bench.records import make_record

    runners = {android.runner_kind(runner): runner} if runner is not None else {}
    if benchmark_binary is not None:
        if not benchmark_binary.is_file():
            raise UserError(f"--benchmark-binary {benchmark_binary} does not exist")
        runners["litert"] = benchmark_binary
    if "litert" not in runners and any(a.runtime == "litert" for a in artifacts):
        raise UserError(LITERT_BINARY)
    if not runners:
        raise UserError("--target android needs --runner PATH: ExecuTorch's executor_runner or ONNX Runtime's "
                        "onnxruntime_perf_test built for the device (see benchmarks/android/README.md)")
    todo = [a for a in artifacts if a.runtime in runners]
    if not todo:
        raise UserError(f"no {' or '.join(runners)} artifacts among the given paths for "
                        f"{', '.join(r.name for r in runners.values())}")
    transport = android.connect(serial, adb)
    info = android.probe(transport)
    counts = thread_counts(threads, all_cores=len(info.big_cores) or 1)
    records = []
    for a in todo:
        with console.status(f"{a.path.name} on {info.props.get('model', transport.serial)}, {counts} thread(s)"):
            kind = a.runtime
            runs = android.run_on_device(transport, a, runners[kind], counts, warmup, iterations, info, kind=kind)
        for m, extra, used in runs:
            if a.manifest_entry:
                extra["manifest_entry"] = a.manifest_entry
            runtime = {"name": kind, "version": None, "runner": runners[kind].name}
            records.append(make_record(target="android", device=info.record_device(), runtime=runtime,
                                       artifact=a.info(), measurement=m, threads=used, extra=extra))
    return records


@app.command("eval")
def eval_cmd(
    data: Annotated[Path, typer.Option("--data", help="Image folder with one sub-folder per class (WordNet ids, "
                                       "class indices or CLIP class names).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Registry name (preprocessing, and the eager "
                                              "model); default: the artifacts' model.")] = None,
    checkpoint: CheckpointOpt = None,
    random_weights: RandomWeightsOpt = False,
    artifacts: Annotated[list[Path] | None, typer.Option("--artifacts", help="Export folder or .onnx/.pte files to "
                                                         "evaluate instead of eager PyTorch.")] = None,
    backend: Annotated[str | None, typer.Option(help="Pick artifacts of this backend.")] = None,
    scheme: Annotated[str | None, typer.Option(help="Pick artifacts of this scheme.")] = None,
    templates: Annotated[str, typer.Option(help="openai (80 prompts) or simple (7).")] = "openai",
    classes: Annotated[str, typer.Option(help="all (1000-way) or present (only the folder's classes).")] = "all",
    class_map: Annotated[Path | None, typer.Option(help="LOC_synset_mapping.txt or CSV with index,wnid columns.")] = None,
    limit_per_class: Annotated[int | None, typer.Option(min=1, help="At most N images per class.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch (prompts go 256 at a time).")] = 32,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the result as JSON here "
                                                "(an existing file is replaced).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Zero-shot top-1/top-5 and images/s of a checkpoint or of exported artifacts on a local image folder."""
    from mobileclip_deploy.atomic import check_destination, write_text
    from mobileclip_deploy.bench.eval_job import EvalJob

    if output:
        check_destination(output, "--output")  # before the evaluation, not after it
    job = EvalJob.plan_for(data, model=model, checkpoint=checkpoint, random_weights=random_weights,
                           artifacts=list(artifacts or []), backend=backend, scheme=scheme, templates=templates,
                           classes=classes, class_map=class_map, limit_per_class=limit_per_class)
    net = ckpt_sha = None
    if job.needs_model:
        net, _, ckpt_sha = load_model_for_cli(job.variant.name, checkpoint, random_weights)
    err_console.print(job.announcement(ckpt_sha), markup=False)
    encoders = job.encoders(net, ckpt_sha)
    with progress_bar() as progress:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(f"{stage} encoder", total=total)
            progress.update(tasks[stage], completed=done)

        result = job.evaluate(encoders, batch_size, report,
                              notice=lambda line: progress.console.print(line, markup=False, highlight=False))
    summary = {**job.summary(result), **upcast_field(net)}
    if json_:
        print_json(summary)
    else:
        console.print(f"{job.variant.display_name} — image: {job.what['image']}, text: {job.what['text']}")
        top5 = f"{result.top5:.2f}%" if result.top5 is not None else "not defined (fewer than 5 classes)"
        console.print(f"top-1 {result.top1:.2f}%  top-5 {top5}  on {result.images} images, "
                      f"{result.classes_scored} classes competed, {result.templates} templates; "
                      f"{result.images_per_s:.1f} images/s (decode, preprocess and image encoder)")
        if result.agreement_with_fp32 is not None:
            console.print(f"agreement with fp32: {result.agreement_with_fp32:.1%} of images keep the fp32 "
                          "model's top-1 class")
    if result.classifier_cache:
        err_console.print(f"[dim]zero-shot classifier reused from {result.classifier_cache}[/]")
    if job.random:
        random_artifacts = job.random_artifacts
        why = f" ({', '.join(random_artifacts)} exported without a checkpoint)" if random_artifacts else ""
        err_console.print(f"[bold yellow]random weights{why}: this accuracy is meaningless[/]")
    if job.unverified:
        err_console.print(f"[yellow]{', '.join(job.unverified)}: no manifest entry, so which weights they carry is "
                          "not known; give the export folder to have it checked[/]")
    if output:
        replacing = output.exists()
        write_text(output, json.dumps(summary, indent=2) + "\n", replace=True)
        err_console.print(f"{'replaced' if replacing else 'wrote'} {output}")


@app.command("frontier")
def frontier_cmd(
    variants: Annotated[str | None, typer.Option(help="Comma list of models (default: S0, S1, S2, B; none "
                                                      "with --student).")] = None,
    schemes: Annotated[str | None, typer.Option(help="Comma list of backend:scheme (default: onnx:fp32,onnx:8da8w, "
                                                "or onnx:fp32,onnx:auto with --calibration).")] = None,
    calibration: Annotated[Path | None, typer.Option(help="Photos for static int8 schemes (w8a8).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every MobileCLIP variant; ONNX and ExecuTorch-XNNPACK, "
                                       "fp32 and 8da8w.")] = False,
    checkpoint: Annotated[list[str] | None, typer.Option(help="MODEL=PATH, repeatable. Without one a model "
                                                         "runs with random weights (latency only).")] = None,
    student: Annotated[list[Path] | None, typer.Option(help="A `distill` run folder (its -o), repeatable: the "
                                                          "student is exported, timed and evaluated on "
                                                          "--eval-data beside the published points.")] = None,
    eval_data: Annotated[Path | None, typer.Option(help="Image folder for measured accuracy (with checkpoints).")] = None,
    eval_templates: Annotated[str, typer.Option(help="openai or simple.")] = "openai",
    eval_classes: Annotated[str, typer.Option(help="all or present.")] = "all",
    class_map: Annotated[Path | None, typer.Option(help="wnid map for --eval-data (see eval --help).")] = None,
    eval_limit_per_class: Annotated[int | None, typer.Option(min=1, help="At most N images per class.")] = None,
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o")] = Path("frontier"),
    target: Annotated[str, typer.Option(help="host (Android/iOS: run `bench` there and pass --records).")] = "host",
    records: Annotated[list[Path] | None, typer.Option(help="Also plot points from these bench JSON-lines "
                                                       "files (any target).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="Threads for the host measurements.")] = 1,
    warmup: Annotated[int, typer.Option(min=0, max=MAX_RUNS, help="Untimed runs after the first inference "
                                        "(at most).")] = 3,
    iterations: Annotated[int, typer.Option(min=1, max=MAX_RUNS, help="Timed runs (at most, see "
                                            "--max-seconds).")] = 20,
    max_seconds: Annotated[float, typer.Option(min=0.0, help="Time budget per artifact: slow ones stop after it, "
                                               "with at least 5 timed runs; 0 = no limit.")] = 4.0,
) -> None:
    """Export (or reuse), benchmark and plot the latency-accuracy frontier beside the paper's published points."""
    from mobileclip_deploy.bench import frontier, sweep

    cfg = sweep.configure(target=target, variants=variants, schemes=schemes, calibration=calibration,
                          all_variants=all_, checkpoints=checkpoint or [], students=student or [], eval_data=eval_data,
                          eval_templates=eval_templates, eval_classes=eval_classes, class_map=class_map,
                          eval_limit_per_class=eval_limit_per_class, out_dir=output_dir, threads=threads,
                          warmup=warmup, iterations=iterations, max_seconds=max_seconds)
    with progress_bar() as progress:
        tasks: dict[str, Any] = {}

        def report(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done)
            if done >= total:
                progress.remove_task(tasks.pop(label))

        points, notes, paths = sweep.run_frontier(
            cfg, lambda msg: progress.console.print(msg, style="dim", markup=False), report, records or [])
    typer.echo(frontier.to_markdown([p for p in points if p.group == frontier.MEASURED], notes))
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))
