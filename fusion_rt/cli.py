"""`fusion-rt <verb>`: the command line. Each verb's docstring is its help text.

User errors (bad arguments, missing or broken files) end as one line on stderr and exit code 2,
never a traceback; a system error (a full disk) is one line too, exit code 1. Ctrl-C exits 130,
SIGTERM 143 and SIGHUP 129, each after the command's cleanup (no temporary file is left), and a
reader that goes away (`| head`) 141. Long work shows progress on stderr when it is a terminal.
`--json` gives machine-readable output (non-finite numbers as null).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fusion_rt import __version__
from fusion_rt.errors import ConfigError, FusionRTError
from fusion_rt.outputs import check_outputs, json_text, printable, staged_dir, write_text, writes_stdout
from fusion_rt.outputs import console as _console

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 128 + 13  # as a shell reports a command killed by SIGPIPE


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus a pointer to --help), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _verb(sub: argparse._SubParsersAction, name: str, func: Callable, **kw) -> argparse.ArgumentParser:
    """Register `func` as a verb; its docstring's first line is the summary, the rest the description."""
    doc = inspect.cleandoc(func.__doc__ or "")  # the same layout on Python 3.13, which dedents docstrings
    summary = doc.splitlines()[0] if doc else ""
    parser = sub.add_parser(name, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                            **kw)
    parser.set_defaults(func=func)
    return parser


def _camera_size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"camera size must look like 640x360, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


_TOPICS_HELP = ("topic per modality, as for replay, e.g. camera=/cam/image (default: simulator topics, else the one "
                "topic of that type; a log with two cameras is refused until this names one)")


def _topics_option(text: str | None) -> dict[str, str]:
    from fusion_rt.logs.topics import parse_topic_option

    return parse_topic_option(text)


def _progress(total: float, description: str, quiet: bool):
    """A rich progress bar on stderr, live only when stderr is a terminal."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.1f}/{task.total:.0f} s"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=_console(stderr=True), transient=True,
        disable=quiet or not sys.stderr.isatty(),
    )


# --------------------------------------------------------------------------------------------- verbs


def cmd_simulate(args: argparse.Namespace) -> int:
    """Simulate a drive and record it as an MCAP sensor log.

    The synthetic world renders the same scenes to every sensor: a JPEG camera
    (sensor_msgs/CompressedImage + CameraInfo, ~20 Hz), a radar range-azimuth tensor and
    CFAR detections (PointCloud2, ~20 Hz), a local map (nav_msgs/OccupancyGrid, ~1 Hz), scene
    context text (std_msgs/String, ~1 Hz) and ground truth per camera frame. Sensors run at
    their own rates with jitter, stamped in integer nanoseconds. The same arguments give a
    byte-identical file. Prints the drive's summary (add --json for JSON).

    With --calibration-set, OUT is a folder that receives a calibration set for `fusion-rt
    quantize --calib OUT/*.mcap`: one short drive per condition and scene type (16 logs named
    <condition>_<scene type>.mcap, --seconds each, default 0.75; seeds --seed, --seed + 1, ...).
    INT8 ranges set on frames without a condition can clip on it: calibrated on a 12 s drive of fog
    and night only, the INT8 encoders moved an unseen drive's scene AUC by 2.9%; on such a set, by 0.01%.

    example: fusion-rt simulate drive.mcap --seconds 60 --seed 1 --conditions mixed
    example: fusion-rt simulate calib --calibration-set --seed 1000
    """
    from fusion_rt.sim import DriveConfig
    from fusion_rt.sim.record import record_drive

    if args.calibration_set:
        return _simulate_calibration_set(args)
    out = Path(args.out)
    check_outputs(files={"OUT.mcap": out})
    config = _from_options(DriveConfig, seconds=60.0 if args.seconds is None else args.seconds, seed=args.seed,
                           conditions=args.conditions or "mixed", camera_size=args.camera_size,
                           scene_type=args.scene_type, jpeg_quality=args.jpeg_quality)
    start = time.perf_counter()
    with _progress(config.seconds, "simulating", args.quiet or args.json) as progress:
        task = progress.add_task("simulating", total=config.seconds)
        first: list[int] = []

        def advance(stamp_ns: int) -> None:
            if not first:
                first.append(stamp_ns)
            progress.update(task, completed=min(config.seconds, (stamp_ns - first[0]) / 1e9))

        summary = record_drive(config, out, compression=args.compression, progress=advance)
    wall = time.perf_counter() - start
    result = {"log": str(out), "bytes": out.stat().st_size, "wall_s": round(wall, 2),
              "realtime_factor": round(summary.duration_s / wall, 2) if wall > 0 else None, **summary.to_dict()}
    # the log itself on stdout (`simulate /dev/stdout | mcap ...`): the summary goes to stderr, not into it
    to_stderr = writes_stdout(out)
    if args.json:
        print(json_text(result, indent=2), file=sys.stderr if to_stderr else sys.stdout)
    elif not (args.quiet and to_stderr):
        _print_drive_summary(result, stderr=to_stderr)
    return 0


def _simulate_calibration_set(args: argparse.Namespace) -> int:
    from rich.table import Table

    from fusion_rt.sim import DriveConfig
    from fusion_rt.sim.record import record_calibration_set
    from fusion_rt.sim.world import CONDITIONS, SCENE_TYPES

    given = [name for name, value in (("--conditions", args.conditions), ("--scene-type", args.scene_type))
             if value is not None]
    if given:
        raise ConfigError(f"{' and '.join(given)} cannot go with --calibration-set: it records every condition and "
                          "scene type, one drive each")
    out = Path(args.out)
    check_outputs(dirs={"OUT": out})
    if out.is_dir() and any(out.iterdir()):  # quantize --calib OUT/*.mcap would take stale logs along
        raise ConfigError(f"output folder {str(out)!r} exists and is not empty; choose a new or empty folder")
    seconds = 0.75 if args.seconds is None else args.seconds
    # a drive's settings, named as the options that set them, before anything is written
    _from_options(DriveConfig, seconds=seconds, seed=args.seed, camera_size=args.camera_size,
                  jpeg_quality=args.jpeg_quality)
    total = len(CONDITIONS) * len(SCENE_TYPES) * seconds
    rows: list[dict] = []
    start = time.perf_counter()
    with _progress(total, "simulating a calibration set", args.quiet or args.json) as progress:
        task = progress.add_task("simulating a calibration set", total=total)

        def written(path: Path, summary) -> None:
            info = summary.to_dict()
            rows.append({"log": str(out / path.name), "seed": args.seed + len(rows), "bytes": path.stat().st_size,
                         "camera_frames": info["camera_frames"], "conditions": info["conditions"],
                         "scene_types": info["scene_types"]})
            progress.advance(task, seconds)

        with staged_dir(out) as staging:  # moved into place whole: an interrupted run leaves no partial set
            record_calibration_set(staging, seconds, seed=args.seed, camera_size=args.camera_size,
                                   jpeg_quality=args.jpeg_quality, compression=args.compression, progress=written)
    result = {"folder": str(out), "logs": rows, "wall_s": round(time.perf_counter() - start, 2)}
    if args.json:
        print(json_text(result, indent=2))
        return 0
    table = Table(title=f"calibration set in {out} ({len(rows)} logs, simulated in {result['wall_s']:.1f} s)",
                  show_edge=False)
    for col in ("log", "condition", "scene type", "camera frames", "MB"):
        table.add_column(col, justify="left" if col in ("log", "condition", "scene type") else "right")
    for row in rows:
        table.add_row(Path(row["log"]).name, ", ".join(row["conditions"]), ", ".join(row["scene_types"]),
                      str(row["camera_frames"]), f"{row['bytes'] / 1e6:.1f}")
    _console().print(table)
    _console().print(f"use it with: fusion-rt quantize PKG --recipe ort-cpu-int8 --calib {out}/*.mcap ...")
    return 0


def _print_drive_summary(result: dict, stderr: bool = False) -> None:
    from rich.table import Table

    console = _console(stderr=stderr)
    console.print(f"{result['log']}: {result['duration_s']:.1f} s of driving, "
                  f"{result['bytes'] / 1e6:.1f} MB, simulated in {result['wall_s']:.1f} s "
                  f"({result['realtime_factor']}x real time)")
    table = Table(title="messages", show_edge=False)
    table.add_column("type")
    table.add_column("count", justify="right")
    for kind, count in result["messages"].items():
        table.add_row(kind, str(count))
    console.print(table)
    frames = max(1, result["camera_frames"])
    conditions = ", ".join(f"{k} {100 * v / frames:.0f}%" for k, v in result["conditions"].items())
    scenes = ", ".join(f"{k} {100 * v / frames:.0f}%" for k, v in result["scene_types"].items())
    console.print(f"conditions: {conditions}")
    console.print(f"scene types: {scenes}")
    console.print("agents: " + ", ".join(f"{k} {v}" for k, v in result["agents"].items()))
    console.print("labels (share of frames): " + ", ".join(f"{k} {v:.2f}" for k, v in result["label_rate"].items()))
    console.print(f"radar detections per scan: {result['radar_detections_per_scan']}")
    seen = ", ".join(f"{k} {v:.0%}" for k, v in result["camera_sees_of_radar_visible"].items() if v is not None)
    console.print(f"camera sees, of the agents radar detects: {seen}")


def cmd_log_info(args: argparse.Namespace) -> int:
    """Describe a sensor log: topics, schemas, message counts, rates and time span.

    Like `ros2 bag info`. Reading is defensive: records that fail their CRC or parse are
    listed with their byte offsets, and a truncated file is described up to the cut.

    example: fusion-rt log info drive.mcap --json
    """
    from fusion_rt.logs import format_info, log_info

    info = log_info(args.file)
    if args.json:
        print(json_text(info, indent=2, default=str))
    else:
        print(format_info(info))
    return 0


def _from_options(cls, **options):
    """`cls(**options)` (a config that validates itself), its ConfigError naming the option the user
    typed rather than the field: "jpeg_quality must be ..." -> "--jpeg-quality must be ..."."""
    try:
        return cls(**options)
    except ConfigError as exc:
        text = str(exc)
        field = text.split(" ", 1)[0]
        if field not in options:
            raise
        raise type(exc)(f"--{field.replace('_', '-')}{text[len(field):]}") from None


def _check_log(path: str, what: str = "log") -> None:
    """One clear line, before any work, when `path` is not a log: missing, or neither an MCAP file
    nor a ROS 2 bag (directory or .db3) that `fusion_rt.logs.bags.open_log` can open."""
    from fusion_rt.logs.bags import open_log

    if not Path(path).exists():
        raise ConfigError(f"{what} {path!r} does not exist")
    open_log(path).close()


def _require_train_extra(purpose: str) -> None:
    """MissingExtraError (one line, exit 2) before anything imports torch."""
    from fusion_rt._optional import require

    require("torch", purpose)
    require("safetensors", purpose)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a fusion model on simulated drives and write a run directory.

    Builds its training and validation data with the simulator (fixed seeds, every condition and
    scene type; cached as MCAP logs and preprocessed arrays under --cache), preprocesses it with
    the runtime's own functions, and trains with modality dropout and class-balanced losses.
    Writes RUN_DIR/model.safetensors, config.json (model, preprocessing, data and training
    configs, seed), metrics.json (validation metrics, training curve), vocab.json and train.log;
    metrics.json is written last, so a run directory without it (an interrupted run) is refused
    by evaluate and export.
    Configs: quick (about a minute; tests and CI), ablation (3-9 minutes on one thread), default
    (about 35 minutes on 2 cores: the shipped model). Same seed and thread count, same weights.

    example: fusion-rt train --out runs/attn --config quick --head attention --seed 0
    """
    from fusion_rt.export.configs import preset
    from fusion_rt.export.evaluate import parse_modalities
    from fusion_rt.export.train import check_out_dir, train  # torch is imported only when training starts

    modalities = parse_modalities(args.modalities, "--modalities")
    if not modalities:
        raise ConfigError("--modalities is empty; name at least one of camera,radar,map,text")
    config = preset(args.config, head=args.head, modalities=modalities, seed=args.seed)
    check_out_dir(Path(args.out))
    _require_train_extra("training")
    metrics = train(config, args.out, cache_dir=args.cache, threads=args.threads, quiet=args.quiet)
    overall = metrics["validation"]["overall"]
    if args.json:
        print(json_text(metrics, indent=2))
    else:
        def f(v):
            return "-" if v is None else f"{v:.3f}"

        print(f"{args.out}: validation scene AUC {f(overall['mean_scene_auc'])}, hazard AUC "
              f"{f(overall['hazard_auc'])}, BEV IoU {f(overall['mean_bev_iou'])} "
              f"({metrics['train_seconds']:.0f} s training, {metrics['data_seconds']:.0f} s data)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a trained run on labelled logs, optionally with modalities masked.

    Reads each log through the dataset and preprocessing path the model was trained with and
    reports, overall and per condition (day, night, fog, rain): per-class AUC and F1 (threshold
    0.5) of the scene labels, hazard AUC, and BEV occupancy IoU per class. --drop masks
    modalities of the model through the presence mask, as the runtime does when a sensor is
    missing; unlike replay it may mask the camera too (the model measured without it). used lists
    the modalities some frame really held. --json writes the metrics as JSON (keys: run, logs,
    head, modalities, dropped, used, read, overall, per_condition; each group: samples,
    label_rate, scene_auc, scene_f1, mean_scene_auc, hazard_auc, mean_scene_f1, bev_iou,
    mean_bev_iou; overall also modality_share: attention weights, gate weights for the gated
    head, equal shares for concat).

    example: fusion-rt evaluate runs/attn --log drive.mcap --drop radar --json metrics.json
    """
    from fusion_rt.export.evaluate import parse_modalities

    drop = parse_modalities(args.drop or "", "--drop")  # checked before torch is even imported
    if not Path(args.run).is_dir():
        raise ConfigError(f"run directory {args.run!r} does not exist (train one with 'fusion-rt train --out DIR')")
    for log in args.log:
        _check_log(log)
    check_outputs(files={"--json": args.json}, inputs=[args.run, *args.log])
    _require_train_extra("evaluating a trained model")
    from fusion_rt.export.evaluate import evaluate_logs, load_run, print_report

    if args.threads is not None:
        from fusion_rt._optional import require

        require("torch", "evaluating a trained model").set_num_threads(args.threads)
    run = load_run(args.run)
    quiet = args.quiet
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=_console(stderr=True), transient=True, disable=quiet or not sys.stderr.isatty()) as progress:
        task = progress.add_task("evaluating", total=1)

        def advance(stage: str, done: int, total: int) -> None:
            progress.update(task, description=stage, completed=done, total=max(total, 1))

        result = evaluate_logs(run, args.log, drop=drop, progress=advance, topics=_topics_option(args.topics))
    if args.json:
        write_text(args.json, json_text(result, indent=2) + "\n")
    if not quiet or not args.json:
        print_report(result)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a trained run to a model package (ONNX graphs + manifest.json).

    One ONNX graph per modality encoder and one for the fusion head (opset 18, dynamic batch),
    each checked with onnx.checker and run in ONNX Runtime against PyTorch on real frames of
    --parity-log (max abs and relative error, cosine per output, written to parity.json; FP32
    parity worse than 1e-4 relative fails the export). manifest.json carries the rig,
    preprocessing, vocabulary, output semantics, max ages, latency budgets and provenance; the
    package is validated with the runtime's own loader before the command returns.

    example: fusion-rt export runs/attn --out packages/attn --parity-log drive.mcap
    """
    if not Path(args.run).is_dir():
        raise ConfigError(f"run directory {args.run!r} does not exist (train one with 'fusion-rt train --out DIR')")
    if args.parity_log is not None:
        _check_log(args.parity_log, "parity log")
    elif args.samples is not None:
        raise ConfigError(f"--samples {args.samples} counts frames of --parity-log, and none was given (without it "
                          "the parity check runs the model's example inputs)")
    check_outputs(dirs={"--out": args.out}, inputs=[args.run, args.parity_log])
    _require_train_extra("exporting a trained model")
    from fusion_rt.export.onnx_export import export_run

    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr)

    out = export_run(args.run, args.out, parity_log=args.parity_log, samples=args.samples or 16, name=args.name,
                     progress=say, overwrite=args.overwrite, topics=_topics_option(args.topics))
    parity = json.loads((out / "parity.json").read_text())
    worst = max(s["max_rel"] for graph in parity["graphs"].values() for s in graph.values())
    sizes = {p.name: p.stat().st_size for p in sorted(out.glob("*.onnx"))}
    if args.json:
        print(json_text({"package": str(out), "worst_max_rel": worst, "bytes": sizes}, indent=2))
    else:
        print(f"{out}: {len(sizes)} graphs, {sum(sizes.values()) / 1e6:.2f} MB, worst parity {worst:.1e} relative")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    """Quantize a model package with a precision recipe (INT8 QDQ or FP16) into a new package.

    Recipes: ort-cpu-int8 (QDQ, uint8 activations, per-channel symmetric int8 weights: ONNX
    Runtime's fast CPU kernels), tensorrt-int8 (QDQ, symmetric int8 activations and weights, zero
    points 0: TensorRT 10/11 explicit quantization), fp16 (float16 graphs with float32 I/O; ops
    that overflow or fail the parity check, cosine >= 0.999 on every output, stay float32).
    Calibration frames are drawn from --calib logs (MCAP files or ROS 2 bags), stratified over
    conditions and scene types (evenly in time without ground truth); each encoder is calibrated
    on the frames that hold its modality, and one that no frame holds keeps FP32 compute (said in
    the report as uncalibrated_graphs). The logs should hold every condition and scene type the
    model will meet: a warning names those that evaluation frames have and no calibration frame has
    (INT8 ranges set without them clip there). The new package carries quantization_report.json: task
    metric vs FP32 on --eval-log (default: the calibration logs), output divergence, sizes and
    interleaved batch-1 latency. When the primary metric (mean scene AUC) drops by more than
    --tolerance (relative), the most sensitive nodes are kept in FP32 round by round. Exit code 1
    when the tolerance still fails after those rounds, or when the new precision's outputs are not
    finite on the evaluation frames (the package is written and says so). The evaluation logs must
    carry ground truth: calibrating on an unlabelled vehicle bag needs a labelled --eval-log. When
    the evaluation frames cannot measure the metric (no ground truth with both classes of a label),
    the report's within_tolerance is null and a warning asks for a better --eval-log.

    example: fusion-rt quantize pkg/attn --recipe ort-cpu-int8 --calib calib/*.mcap --eval-log drive.mcap --out pkg/int8
    """
    from fusion_rt.calibration.recipes import RECIPES, QuantizeConfig, get_recipe

    recipe = get_recipe(args.recipe)  # one-line errors before any log is read
    if args.method is not None and not recipe.is_int8:
        raise ConfigError(f"--method {args.method} calibrates the int8 recipes' activations; {args.recipe} sets no "
                          "activation ranges (leave --method out)")
    if args.no_speed_gate and not recipe.speed_gate:
        gated = [name for name, r in RECIPES.items() if r.speed_gate]
        raise ConfigError(f"--no-speed-gate turns off the speed gate of {', '.join(gated)}; {args.recipe} has none "
                          "(leave --no-speed-gate out)")
    fp32_graphs = tuple(g.strip() for g in (args.fp32_graphs or "").split(",") if g.strip())
    if args.fp32_graphs is not None and not fp32_graphs:
        raise ConfigError(f"--fp32-graphs names no graph: {args.fp32_graphs!r} (e.g. --fp32-graphs head,text)")
    from fusion_rt.package import load_package

    package = load_package(args.package)  # a bad package first: it is the command's subject
    unknown = [g for g in fp32_graphs if g not in package.graphs]
    if unknown:
        raise ConfigError(f"--fp32-graphs {unknown} are not graphs of {args.package!r}; it has {list(package.graphs)}")
    for log in [*args.calib, *(args.eval_log or [])]:
        _check_log(log)
    check_outputs(dirs={"--out": args.out}, inputs=[args.package, *args.calib, *(args.eval_log or [])])
    config = _from_options(QuantizeConfig, recipe=args.recipe, method=args.method or "percentile", samples=args.samples,
                           tolerance=args.tolerance, max_rounds=args.max_rounds, threads=args.threads,
                           eval_frames=args.eval_frames, speed_gate=False if args.no_speed_gate else None,
                           fp32_graphs=fp32_graphs)
    from fusion_rt.calibration.quantize import quantize_package

    def say(message: str) -> None:
        if message.startswith("warning: "):  # said even with --quiet, as the CLI's own warnings are
            print(f"fusion-rt: {message}", file=sys.stderr)
        elif not args.quiet:
            print(message, file=sys.stderr)

    result = quantize_package(args.package, args.out, config, args.calib, args.eval_log, progress=say,
                              topics=_topics_option(args.topics))
    acc = result.report["acceptance"]
    if args.json:
        print(json_text({"package": str(result.package.root), **acc}, indent=2))
    else:
        drop = acc["relative_drop"]
        # relative change, negative a drop (absolute from an FP32 metric of 0: no relative change)
        change = "n/a" if drop is None else f"{-drop:+.4f}" if acc["fp32"] == 0 else f"{-drop:+.2%}"
        speed = "n/a" if acc["speedup_median"] is None else f"{acc['speedup_median']:.2f}x"
        # Speed is measured with ONNX Runtime on this CPU: only ort-cpu-int8 targets it.
        where = "" if args.recipe == "ort-cpu-int8" else " on ONNX Runtime CPU (the recipe targets GPUs)"
        fp32, new = ("n/a" if v is None else v for v in (acc["fp32"], acc["new"]))
        print(f"{result.package.root}: {args.recipe}, {acc['primary_metric']} {fp32} -> {new} "
              f"({change}, tolerance {acc['tolerance']:.2%} drop), "
              f"size {acc['size_ratio']:.2f}x, speed {speed}{where}, "
              f"worst cosine {acc['worst_output_cosine']:.5f}")
    if not acc.get("outputs_finite", True):
        print("fusion-rt: warning: the new precision's outputs are not finite on the evaluation frames (see "
              "quantization_report.json): the package fails its acceptance", file=sys.stderr)
        return 1
    if result.within_tolerance is None:
        unscored = result.report["evaluation"].get("unscored", {}).get("scene_labels")
        why = (f"the package's scene labels {unscored} are not among the labels quantize evaluates (matched by "
               "name; see quantization_report.json)" if unscored else
               "the evaluation frames lack ground truth with both classes of a label (pass --eval-log with a "
               "labelled log)")
        print(f"fusion-rt: warning: {acc['primary_metric']} was not measured: {why}; no mixed-precision round ran",
              file=sys.stderr)
    elif not result.within_tolerance:
        ran = max(0, len(result.report.get("mixed_precision", {}).get("rounds", [])) - 1)  # round 0: no exclusions
        how = (f"after {ran} mixed-precision round{'' if ran == 1 else 's'}" if args.recipe != "fp16" else
               "(fp16 keeps ops FP32 for overflow and output parity only, not for the metric)")
        print(f"fusion-rt: warning: {acc['primary_metric']} drop exceeds the tolerance {how} "
              "(see quantization_report.json)", file=sys.stderr)
        return 1
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    """Build TensorRT engines for every graph of a model package (needs a GPU and TensorRT 10+).

    Copies PKG_DIR to --out and builds engines/<graph>.engine with their metadata (TensorRT
    version, GPU, precision, source graph sha256), which the runtime checks before loading.
    Explicit quantization only: --precision int8-qdq needs a package made with
    'fusion-rt quantize --recipe tensorrt-int8'. On TensorRT 11 (always strongly typed) FP16
    needs an FP16 package ('--recipe fp16'); on TensorRT 10 (JetPack 6) the FP16 builder flag is
    used; a Q/DQ package builds only as int8-qdq, and fp32 turns TF32 off. One optimization
    profile for the dynamic batch (fixed at 1 with --dla: DLA has no dynamic shapes); a
    timing cache is reused across builds ($FUSION_RT_TRT_TIMING_CACHE, else one file per TensorRT
    version and GPU in ~/.cache/fusion-rt/tensorrt/; a cache TensorRT refuses is replaced).

    example: fusion-rt build-engine packages/attn-fp16 --out packages/attn-trt --precision fp16
    """
    from fusion_rt.export.tensorrt_build import BuildOptions, build_engines

    options = BuildOptions(precision=args.precision, opt_batch=args.opt_batch, max_batch=args.max_batch,
                           workspace_mb=args.workspace, dla_core=args.dla,
                           timing_cache=Path(args.timing_cache) if args.timing_cache else None)
    check_outputs(dirs={"--out": args.out}, files={"--timing-cache": args.timing_cache}, inputs=[args.package])

    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr)

    out = build_engines(args.package, args.out, options, progress=say, overwrite=args.overwrite)
    print(f"{out}: engines built ({options.precision})")
    return 0


def _replay_progress(quiet: bool):
    """A rich progress bar over log seconds (stderr, live only on a terminal) and its update callback."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.1f} s of log"),
                        TimeElapsedColumn(), console=_console(stderr=True), transient=True,
                        disable=quiet or not sys.stderr.isatty())
    task = progress.add_task("replaying", total=None)
    last = [0.0]

    def update(done_s: float, total_s: float | None) -> None:
        if done_s - last[0] >= 0.25 or (total_s is not None and done_s >= total_s):
            last[0] = done_s
            progress.update(task, completed=done_s, total=total_s)

    return progress, update


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _print_replay_summary(summary: dict, stderr: bool = False) -> None:
    from rich.table import Table

    console = _console(stderr=stderr)
    pkg, log = summary["package"], summary["log"]
    console.print(f"{log['path']} through {pkg['name']} ({pkg['precision']}, "
                  f"{pkg['backend']}), {summary['mode']}: {log['duration_s'] or 0:.1f} s of log in "
                  f"{summary['wall_s']:.1f} s"
                  f" ({_fmt(summary['realtime_factor'], 2)}x real time)")
    others = (summary["messages_rejected"] - summary["rejected"], summary["messages_dropped"] - summary["dropped"])
    console.print(f"frames {summary['frames']}, outputs {summary['outputs']} (ok {summary['ok']}, degraded "
                  f"{summary['degraded']}), rejected {summary['rejected']}, dropped {summary['dropped']}, "
                  f"deadline misses {summary['deadline_misses']}"
                  + (f"; other sensors' messages rejected {others[0]}, dropped {others[1]}" if any(others) else "")
                  + (f", masked {summary['drop']}" if summary["drop"] else ""))
    table = Table(title="latency (ms)", show_edge=False)
    for col in ("stage", "count", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for stage, s in summary["latency_ms"].items():
        table.add_row(stage, str(s.get("count", "")), *(_fmt(s.get(k)) for k in ("p50", "p90", "p99", "max")))
    console.print(table)
    metrics = summary.get("metrics")
    if metrics:
        table = Table(title="metrics", show_edge=False)
        for col in ("condition", "frames", "scene AUC", "scene F1", "BEV IoU"):
            table.add_column(col, justify="left" if col == "condition" else "right")
        rows = [("overall", metrics["overall"]), *metrics["per_condition"].items()]
        for name, m in rows:
            table.add_row(name, str(m["frames"]), _fmt(m["mean_scene_auc"]), _fmt(m["mean_scene_f1"]),
                          _fmt(m.get("mean_bev_iou")))
        console.print(table)


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        print(f"fusion-rt: warning: {printable(w)}", file=sys.stderr)


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay a recorded drive (MCAP file or ROS 2 bag) through a model package.

    Modes: lockstep (every message in log order; the same log and package give byte-identical
    fused outputs, whatever --threads), realtime (paced by the log's stamps, --speed times as
    fast; what the runtime cannot keep up with is dropped, latest wins, and counted), burst (as fast as possible, JPEG
    decode overlapped with inference). Topics map to modalities by --topics, else the simulator's
    defaults, else by schema. --drop masks modalities for the whole replay. A truncated log is
    replayed up to its last complete message (exit 0, with a warning); what reading skipped is said
    in warnings, counted by topic and reason (unsupported: a valid message fusion-rt does not read,
    such as a depth camera or h264; damaged: the file itself), and listed with offsets in --json's
    log.issue_list. Writes a results MCAP (--out: /fusion/outputs,
    /fusion/timings, /fusion/bev/compressed, /fusion/camera/compressed), a JSON summary (--json)
    and a self-contained HTML report (--report).

    example: fusion-rt replay drive.mcap --package packages/attn-int8 --out results.mcap --report report.html
    """
    from fusion_rt.replay import ReplayConfig, replay

    if args.speed is not None and args.mode != "realtime":
        raise ConfigError(f"--speed {args.speed:g} paces --mode realtime only (this replay is --mode {args.mode})")
    config = ReplayConfig(backend=args.backend, mode=args.mode, topics=_topics_option(args.topics),
                          drop=tuple(m.strip() for m in args.drop.split(",") if m.strip()), threads=args.threads,
                          out=args.out, realtime_speed=args.speed or 1.0)
    check_outputs(files={"--out": args.out, "--json": args.json, "--report": args.report},
                  inputs=[args.log, args.package])
    progress, update = _replay_progress(args.quiet)
    with progress:
        result = replay(args.log, args.package, config, progress=update)
    summary = result.summary
    if args.json:
        write_text(args.json, json_text(summary, indent=2, default=str) + "\n")
    if args.report:
        from fusion_rt.report import write_report

        write_report(result, args.report)
    if not args.quiet:  # to stderr when an output file is this process's stdout (`--json /dev/stdout | jq`)
        _print_replay_summary(summary, stderr=any(writes_stdout(p) for p in (args.out, args.json, args.report)))
    _warn(result.warnings)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare two deployments (e.g. FP32 vs INT8, ONNX Runtime vs TensorRT) on one recorded drive.

    Replays the log through both packages in lockstep, message by message, and reports the status
    agreement over every camera frame (ok, degraded, or no output: one side rejecting a frame the
    other outputs is a disagreement, and such frames are listed), per-output divergence over the
    frames both output (max/mean abs, cosine, decision agreement at 0.5), the task metric of each
    and the delta on the frames both output, end-to-end latency of each and the ratio, and the
    worst frames by their largest scene-probability difference.

    example: fusion-rt compare drive.mcap --a packages/attn --b packages/attn-int8 --json compare.json
    """
    from fusion_rt.replay import compare

    check_outputs(files={"--json": args.json}, inputs=[args.log, args.a, args.b])
    progress, update = _replay_progress(args.quiet)
    with progress:
        result = compare(args.log, args.a, args.b, backend_a=args.backend_a, backend_b=args.backend_b,
                         threads=args.threads, topics=_topics_option(args.topics), progress=update)
    s = result.summary
    if args.json:
        write_text(args.json, json_text(s, indent=2, default=str) + "\n")
    from rich.table import Table

    console = _console(stderr=writes_stdout(args.json))  # `--json /dev/stdout | jq`: the JSON alone there
    console.print(f"{s['camera_frames']} camera frames, status agreement {_fmt(s['status_agreement'], 4)}; "
                  f"{s['frames_compared']} with an output from both compared output by output"
                  + (f", {s['unmatched']} from one side only" if s["unmatched"] else ""))
    if s["divergence"]:
        table = Table(title="divergence (B vs A)", show_edge=False)
        for col in ("output", "max abs", "mean abs", "cosine", "agreement"):
            table.add_column(col, justify="left" if col == "output" else "right")
        for name, d in s["divergence"].items():
            table.add_row(name, f"{d['max_abs']:.2e}", f"{d['mean_abs']:.2e}", f"{d['cosine']:.6f}",
                          _fmt(d.get("agreement"), 4))
        console.print(table)
    table = Table(title="A vs B", show_edge=False)
    for col in ("", "A", "B", "delta / ratio"):
        table.add_column(col, justify="left" if not col else "right")
    table.add_row("package", f"{s['a']['package']['name']} ({s['a']['package']['precision']})",
                  f"{s['b']['package']['name']} ({s['b']['package']['precision']})", "")
    both = s["unmatched"] > 0  # then the delta is over fewer frames than each side's own metrics
    for k, v in s["metrics_delta"].items():
        if both:
            table.add_row(f"{k} (frames both output)", _fmt(s["a"]["metrics_common"][k]),
                          _fmt(s["b"]["metrics_common"][k]), _fmt(v))
            table.add_row(f"{k} (each side's own frames)", _fmt(s["a"]["metrics"][k]), _fmt(s["b"]["metrics"][k]), "")
        else:
            table.add_row(k, _fmt(s["a"]["metrics"][k]), _fmt(s["b"]["metrics"][k]), _fmt(v))
    for k in ("p50", "p99"):
        ratio = s["latency_ratio_b_over_a"][k]
        table.add_row(f"end_to_end {k} ms", _fmt(s["a"][f"end_to_end_{k}"]), _fmt(s["b"][f"end_to_end_{k}"]),
                      "-" if ratio is None else f"{_fmt(ratio, 2)}x")
    console.print(table)
    if s["worst_frames"]:
        console.print("worst frames: " + ", ".join(f"{w['stamp_ns']} ({w['scene_max_abs']:.3g})"
                                                   for w in s["worst_frames"]))
    elif s["frames_compared"]:
        console.print("worst frames: none, every compared output is identical")
    _warn(s["warnings"])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job end to end, without torch or a GPU (about a minute on 2 cores).

    Simulates a drive with changing conditions and a separate calibration drive, quantizes the
    shipped FP32 package with the ort-cpu-int8 recipe on the calibration drive, replays the drive
    through FP32 and INT8, compares them frame by frame, prints a table (latency per stage
    p50/p99, metrics, FP32 vs INT8 agreement, degraded frames) and writes the results log
    (OUT/results_int8.mcap), the report (OUT/report_int8.html) and OUT/demo.json.

    example: fusion-rt demo --out out/demo
    """
    from fusion_rt.demo import DemoConfig, print_demo, run_demo
    from fusion_rt.sim import DriveConfig

    _from_options(DriveConfig, seconds=args.seconds, seed=args.seed)  # before the package and the output folder
    if args.package is not None:
        from fusion_rt.package import load_package

        load_package(args.package)  # a bad package is refused before the drives are simulated
    check_outputs(dirs={"--out": args.out}, inputs=[args.package])

    def say(message: str) -> None:
        if not args.quiet:
            print(f"demo: {message}", file=sys.stderr)

    summary = run_demo(DemoConfig(out=Path(args.out), package=Path(args.package) if args.package else None,
                                  seconds=args.seconds, seed=args.seed, threads=args.threads), say=say)
    if args.json:
        print(json_text(summary, indent=2, default=str))
    else:
        print_demo(summary)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark a model package against its peers and check the latency budgets.

    Every alternative runs in this one process, interleaved step by step after a warm-up, on the
    same inputs (a simulated camera JPEG, radar tensor, map and text): the runtime end to end
    (FusionRuntime) and per stage; each stage alone; raw ONNX Runtime session.run of the same
    graphs; every encoder run at each frame (vs the runtime's critical path); with --int8 an INT8
    package's runtime and graphs; with --peers the same model in PyTorch eager FP32 and
    torch.compile ([train] extra; weights from --run, else the architecture from the package's
    provenance). Prints p50/p90/p99 per series, ratios of medians (runtime_vs_raw_session,
    critical_path_vs_all_encoders, int8_vs_fp32, fp32_vs_torch_eager, int8_vs_torch_eager, ...)
    and the verdicts of the budgets file (default bench/budgets.toml): ratio budgets always, stage
    budgets (p50/p99 ms) for --device-class (default: detected). Also a burst replay of a
    simulated drive (--replay-seconds; real-time factor). --json writes everything with an
    environment fingerprint; --png a latency histogram. Exit code 1 with --check when a budget
    is missed or was not measured (an enforced INT8 ratio needs --int8, the torch ones --peers,
    the replay one a replay: not --quick), else 0. The machine should be otherwise idle: read the ratios more than the
    milliseconds on a shared one.

    example: fusion-rt bench --package fusion_rt/packages/fusion-attention --int8 pkg-int8 --peers --json b.json
    """
    from fusion_rt.bench import (
        DEFAULT_BUDGETS,
        BenchConfig,
        Verdict,
        histogram_png,
        load_budgets,
        run_bench,
        verdict_table,
    )

    check_outputs(files={"--json": args.json, "--png": args.png}, inputs=[args.package, args.int8, args.run])
    if args.png is not None:
        import cv2

        if not cv2.haveImageWriter(args.png):
            raise ConfigError(f"--png {args.png!r}: OpenCV cannot write that image type; name it .png")
    if args.no_budgets:
        budgets = None
    elif args.budgets is None and not DEFAULT_BUDGETS.is_file():  # a pip install has no bench/ folder
        print("fusion-rt: note: this installation has no bench/budgets.toml (it comes with a source checkout): "
              "measuring only; pass --budgets FILE to check budgets", file=sys.stderr)
        budgets = None
    else:
        budgets = load_budgets(args.budgets)
    steps = args.steps if args.steps is not None else (60 if args.quick else 300)
    warmup = 10 if args.quick else 20
    replay_seconds = args.replay_seconds if args.replay_seconds is not None else (0.0 if args.quick else 10.0)
    if replay_seconds < 0:
        raise ConfigError(f"--replay-seconds must be >= 0, got {replay_seconds}")
    config = _from_options(BenchConfig, package=Path(args.package), int8_package=Path(args.int8) if args.int8 else None,
                           peers=args.peers, run_dir=Path(args.run) if args.run else None, steps=steps,
                           warmup=warmup, threads=args.threads, quick=args.quick,
                           providers=tuple(x.strip() for x in args.providers.split(",") if x.strip()))

    def say(message: str) -> None:
        if not args.quiet:
            print(f"bench: {message}", file=sys.stderr)

    report = run_bench(config, budgets, device_class=args.device_class, replay_seconds=replay_seconds, say=say)
    samples = report.pop("_samples_ms")
    if args.png:
        fp = report["fingerprint"]
        histogram_png(samples, args.png, title=f"{report['package']['name']} | {fp['cpu_model']} | "
                      f"{fp['usable_cores']} cores | load {fp['load_average'][0] if fp['load_average'] else '?'}")
    if args.json:
        write_text(args.json, json_text(report, indent=2, default=str) + "\n")
    if not args.quiet:
        _print_bench(report)
    verdicts = [Verdict.from_dict(v) for v in report["verdicts"]]
    targets = "" if args.quiet else verdict_table(verdicts, targets=True)  # goals: no failure to say
    if targets:
        print(f"targets missed ({report['targets_missed']}; goals, not failures):\n{targets}", file=sys.stderr)
    missed = verdict_table(verdicts)
    if missed:
        print(f"budgets missed ({report['missed']}):\n{missed}", file=sys.stderr)
    relaxed = report["relaxed_int8_budgets"]
    if relaxed and args.quiet:  # said even then: a gate that passes on looser budgets says so
        print(f"fusion-rt: note: {', '.join(relaxed)} held to [ratios_without_int8_dot_product]: this CPU "
              f"({report['fingerprint']['cpu_model']}) has no int8 dot-product instructions", file=sys.stderr)
    unmeasured = report["unmeasured"]
    if unmeasured:  # said even with --quiet: a gate must not pass what it never measured
        print(f"budgets not measured ({len(unmeasured)}{', each fails --check' if args.check else ''}): "
              + "; ".join(f"{name} ({why})" for name, why in unmeasured.items()), file=sys.stderr)
    return 1 if args.check and (report["missed"] or unmeasured) else 0


def _print_bench(report: dict) -> None:
    from rich.table import Table

    console = _console()
    fp = report["fingerprint"]
    console.print(f"{report['package']['name']} ({report['package']['precision']})"
                  + (f" vs {report['int8_package']['name']}" if report.get("int8_package") else "")
                  + f", {report['steps']} interleaved steps, {report['threads']} threads; {fp['cpu_model']}, "
                  f"{fp['usable_cores']} cores, load {fp['load_average']}; device class {report['device_class']}")
    table = Table(title="latency (ms)", show_edge=False)
    for col in ("series", "count", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="left" if col == "series" else "right")
    for name, s in report["stages"].items():
        table.add_row(name, str(s["count"]), *(_fmt(s[k]) for k in ("p50", "p90", "p99", "max")))
    console.print(table)
    def by_kind(kind: str) -> dict:
        return {v["budget"].split(":", 1)[1]: v for v in report["verdicts"] if v["budget"].startswith(f"{kind}:")}

    def verdict(v: dict | None, missed: str) -> tuple[str, str]:
        if v is None:
            return "", ""
        return f"{v['op']} {v['limit']:g}", "not measured" if v["ok"] is None else "ok" if v["ok"] else missed

    budgets, targets = by_kind("ratio"), by_kind("target")
    table = Table(title="ratios of medians", show_edge=False)
    for col in ("ratio", "value", "budget", "verdict", "target"):
        # the measured columns never fold ("0.9…"); a narrow terminal folds the target column instead
        table.add_column(col, justify="left" if col == "ratio" else "right", no_wrap=col != "target")
    for name in sorted(set(report["ratios"]) | set(budgets) | set(targets)):
        target = " ".join(verdict(targets.get(name), "not yet")).strip()
        table.add_row(name, _fmt(report["ratios"].get(name)), *verdict(budgets.get(name), "MISSED"), target)
    console.print(table)
    stage_verdicts = [v for v in report["verdicts"] if v["budget"].endswith((".p50", ".p99"))]
    if stage_verdicts:
        ok = sum(v["ok"] is True for v in stage_verdicts)
        console.print(f"stage budgets ({report['device_class']}): {ok} of {len(stage_verdicts)} met")
    for name, why in report["skipped"].items():
        console.print(f"skipped {name}: {why}")
    for note in report["notes"]:
        console.print(f"note: {note}")


# --------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fusion-rt",
        description="fusion-rt: train, export, quantize, run and replay multimodal sensor-fusion models "
        "(camera, radar, map, text) on edge hardware.",
        epilog="Run 'fusion-rt <verb> --help' for a verb's options.",
    )
    parser.add_argument("--version", action="version", version=f"fusion-rt {__version__}")
    sub = parser.add_subparsers(title="verbs", metavar="<verb>", parser_class=_Parser)

    from fusion_rt.sim.world import CONDITIONS, SCENE_TYPES  # not fusion_rt.sim.drive: no OpenCV to build a parser

    p = _verb(sub, "simulate", cmd_simulate)
    p.add_argument("out", metavar="OUT.mcap", help="log file to write (with --calibration-set: a folder)")
    p.add_argument("--seconds", type=float, default=None,
                   help="length of the drive in seconds (default 60; with --calibration-set, of each drive: 0.75)")
    p.add_argument("--seed", type=int, default=0, help="world seed: same seed, same bytes (default 0)")
    p.add_argument("--conditions", default=None, choices=(*CONDITIONS, "mixed"),
                   help="weather/light for the whole drive, or 'mixed' to change along it (default mixed)")
    p.add_argument("--calibration-set", action="store_true",
                   help="write one short drive per condition and scene type into the folder OUT (16 logs): a "
                        "calibration set for quantize --calib OUT/*.mcap")
    p.add_argument("--scene-type", default=None, choices=SCENE_TYPES,
                   help="keep one scene type for the whole drive (default: several along the drive)")
    p.add_argument("--camera-size", type=_camera_size, default=(640, 360), metavar="WxH",
                   help="camera resolution, 64x64 to 3840x2160 (default 640x360)")
    p.add_argument("--jpeg-quality", type=int, default=85, help="JPEG quality 1-100 (default 85)")
    p.add_argument("--compression", default="zstd", choices=("zstd", "lz4", "none"),
                   help="MCAP chunk compression (default zstd)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    p = _verb(sub, "train", cmd_train)
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create (must be new or empty)")
    p.add_argument("--head", default="attention", choices=("attention", "concat", "gated"),
                   help="fusion head (default attention)")
    p.add_argument("--modalities", default="camera,radar,map,text",
                   help="comma-separated modalities the model uses (default camera,radar,map,text)")
    p.add_argument("--config", default="default", choices=("quick", "default", "ablation"),
                   help="data and training preset (default: default)")
    p.add_argument("--seed", type=int, default=0, help="torch and numpy seed (default 0)")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="cache of simulated logs and preprocessed arrays (default ~/.cache/fusion-rt)")
    p.add_argument("--json", action="store_true", help="print metrics.json to stdout when done")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or epoch lines")

    p = _verb(sub, "evaluate", cmd_evaluate)
    p.add_argument("run", metavar="RUN_DIR", help="run directory written by 'fusion-rt train'")
    p.add_argument("--log", action="append", required=True, metavar="LOG",
                   help="labelled log to evaluate on: MCAP file or ROS 2 bag (repeat for several)")
    p.add_argument("--drop", default="", metavar="MODALITIES",
                   help="comma-separated modalities to mask, e.g. radar or camera,map")
    p.add_argument("--topics", default=None, metavar="MAP", help=_TOPICS_HELP)
    p.add_argument("--json", default=None, metavar="OUT", help="also write the metrics as JSON to OUT")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar (and no table with --json)")

    p = _verb(sub, "export", cmd_export)
    p.add_argument("run", metavar="RUN_DIR", help="run directory written by 'fusion-rt train'")
    p.add_argument("--out", required=True, metavar="PKG_DIR", help="package directory to write")
    p.add_argument("--parity-log", default=None, metavar="LOG",
                   help="log (MCAP file or ROS 2 bag) whose frames are used for the parity check "
                        "(default: the model's example inputs)")
    p.add_argument("--samples", type=_positive_int, default=None,
                   help="frames of --parity-log used for the parity check (default 16; without "
                        "--parity-log the model's 2 example inputs are checked, and --samples is refused)")
    p.add_argument("--topics", default=None, metavar="MAP", help=_TOPICS_HELP + " (of --parity-log)")
    p.add_argument("--name", default=None, help="package name in the manifest (default fusion-<head>)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")

    p = _verb(sub, "quantize", cmd_quantize)
    p.add_argument("package", metavar="PKG_DIR", help="FP32 model package written by 'fusion-rt export'")
    p.add_argument("--recipe", required=True, metavar="RECIPE",
                   help="precision recipe: fp16, ort-cpu-int8 or tensorrt-int8")
    p.add_argument("--calib", nargs="+", required=True, metavar="LOG",
                   help="log(s) to draw calibration frames from: MCAP files or ROS 2 bags (directory, .mcap or "
                        ".db3 storage)")
    p.add_argument("--out", required=True, metavar="PKG2", help="package directory to write (new or empty)")
    p.add_argument("--method", default=None, choices=("minmax", "entropy", "percentile"),
                   help="activation calibration method for int8 recipes (default percentile; refused for fp16, "
                        "which sets no activation ranges)")
    p.add_argument("--samples", type=int, default=128, help="calibration frames (default 128)")
    p.add_argument("--eval-log", nargs="+", default=None, metavar="LOG",
                   help="labelled log(s) for the metric comparison (default: the calibration logs)")
    p.add_argument("--eval-frames", type=_positive_int, default=2000, metavar="N",
                   help="evaluate on at most N frames, evenly spaced over the evaluation logs (default 2000: "
                        "bounds memory on long drives; a shorter log is evaluated whole)")
    p.add_argument("--topics", default=None, metavar="MAP", help=_TOPICS_HELP + " (of every log)")
    p.add_argument("--tolerance", type=float, default=0.005,
                   help="allowed relative drop of mean scene AUC (default 0.005 = 0.5%%)")
    p.add_argument("--max-rounds", type=int, default=4, help="mixed-precision rounds at most (default 4)")
    p.add_argument("--threads", type=_positive_int, default=2,
                   help="ONNX Runtime threads for evaluation and latency (default 2)")
    p.add_argument("--no-speed-gate", action="store_true",
                   help="quantize every graph even where INT8 is slower than FP32 on this host (smaller package; "
                        "no timing decides, so the same command gives the same graphs)")
    p.add_argument("--fp32-graphs", default=None, metavar="GRAPHS",
                   help="int8 recipes: comma-separated graphs to keep at FP32 compute (int8-stored weights), e.g. "
                        "head,text; with --no-speed-gate the package no longer depends on this host's load")
    p.add_argument("--json", action="store_true", help="print the acceptance summary as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")

    p = _verb(sub, "build-engine", cmd_build_engine)
    p.add_argument("package", metavar="PKG_DIR", help="model package to build engines for")
    p.add_argument("--out", required=True, metavar="PKG_DIR", help="package directory to write (with engines/)")
    p.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "int8-qdq"),
                   help="engine precision (default fp16)")
    p.add_argument("--dla", type=int, default=None, metavar="N",
                   help="build for DLA core N (Jetson), GPU fallback; the batch is fixed at 1, the runtime's "
                        "(DLA has no dynamic shapes)")
    p.add_argument("--workspace", type=int, default=1024, metavar="MB", help="builder workspace in MB (default 1024)")
    p.add_argument("--opt-batch", type=int, default=1, help="batch size tactics are tuned for (default 1)")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch the engines accept (default 8)")
    p.add_argument("--timing-cache", default=None, metavar="FILE", help="timing cache file to reuse and update")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")

    p = _verb(sub, "replay", cmd_replay)
    p.add_argument("log", metavar="LOG", help="MCAP file or ROS 2 bag directory (.mcap or .db3)")
    p.add_argument("--package", required=True, metavar="PKG_DIR", help="model package to run")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"),
                   help="inference backend (default onnxruntime)")
    p.add_argument("--mode", default="lockstep", choices=("lockstep", "realtime", "burst"),
                   help="pacing (default lockstep: every message, deterministic)")
    p.add_argument("--speed", type=_positive_float, default=None, metavar="X",
                   help="realtime mode: log seconds per wall second, e.g. 2 plays the drive twice as fast "
                        "(default 1)")
    p.add_argument("--topics", default=None, metavar="MAP",
                   help="topic per modality, e.g. camera=/cam/image,radar=/radar/points (default: simulator "
                        "topics, else by schema)")
    p.add_argument("--drop", default="", metavar="MODALITIES", help="comma-separated modalities to mask, e.g. radar")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="ONNX Runtime threads per graph (default: ONNX Runtime's choice, one per physical core)")
    p.add_argument("--out", default=None, metavar="RESULTS.mcap", help="write a results MCAP (Foxglove-viewable)")
    p.add_argument("--json", default=None, metavar="SUMMARY.json", help="write the summary as JSON")
    p.add_argument("--report", default=None, metavar="REPORT.html", help="write a self-contained HTML report")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary table")

    p = _verb(sub, "compare", cmd_compare)
    p.add_argument("log", metavar="LOG", help="MCAP file or ROS 2 bag directory")
    p.add_argument("--a", required=True, metavar="PKG_A", help="reference package (e.g. FP32)")
    p.add_argument("--b", required=True, metavar="PKG_B", help="package to check against it (e.g. INT8)")
    p.add_argument("--backend-a", default="onnxruntime", choices=("onnxruntime", "tensorrt"),
                   help="backend of A (default onnxruntime)")
    p.add_argument("--backend-b", default="onnxruntime", choices=("onnxruntime", "tensorrt"),
                   help="backend of B (default onnxruntime)")
    p.add_argument("--topics", default=None, metavar="MAP", help="topic per modality, as for replay")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="ONNX Runtime threads per graph (default: ONNX Runtime's choice, one per physical core)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the comparison as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    from fusion_rt.bench import DEVICE_CLASSES  # numpy only, no torch

    p = _verb(sub, "bench", cmd_bench)
    p.add_argument("--package", required=True, metavar="PKG_DIR", help="FP32 model package to benchmark")
    p.add_argument("--int8", default=None, metavar="PKG_DIR",
                   help="INT8 package of the same model (fusion-rt quantize) to measure against it")
    p.add_argument("--peers", action="store_true",
                   help="also PyTorch eager FP32 and torch.compile of the same model ([train] extra)")
    p.add_argument("--run", default=None, metavar="RUN_DIR",
                   help="trained run for the PyTorch peers' weights (default: the package's provenance)")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="measured interleaved steps (default 300; 60 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="CI-sized: 60 steps, no torch.compile, no replay (well under a minute on 2 cores)")
    p.add_argument("--threads", type=_positive_int, default=2, help="ONNX Runtime and torch threads (default 2)")
    p.add_argument("--providers", default="cpu", metavar="LIST",
                   help="ONNX Runtime execution providers in priority order: cpu, cuda, tensorrt "
                        "(default cpu; cuda/tensorrt need onnxruntime-gpu)")
    p.add_argument("--replay-seconds", type=float, default=None,
                   help="simulated drive for the burst replay real-time factor (default 10; 0 with --quick = skip)")
    p.add_argument("--device-class", default=None, choices=DEVICE_CLASSES,
                   help="whose stage budgets to check (default: detected from the machine, else none)")
    p.add_argument("--budgets", default=None, metavar="FILE", help="budgets file (default bench/budgets.toml)")
    p.add_argument("--no-budgets", action="store_true", help="measure only, check no budgets")
    p.add_argument("--check", action="store_true", help="exit code 1 when a budget is missed (CI gates)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the report (with the fingerprint) as JSON")
    p.add_argument("--png", default=None, metavar="OUT", help="write a latency histogram PNG")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress lines, no latency table and no missed targets (missed and unmeasured "
                        "budgets are still listed)")

    p = _verb(sub, "demo", cmd_demo)
    p.add_argument("--out", default="out/demo", metavar="DIR",
                   help="folder for logs, packages and reports (default out/demo)")
    p.add_argument("--package", default=None, metavar="PKG_DIR", help="FP32 package (default: the shipped one)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the replayed drive (default 30)")
    p.add_argument("--seed", type=int, default=7, help="drive seed (default 7)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="ONNX Runtime threads per graph (default: ONNX Runtime's choice, one per physical core)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")

    log = sub.add_parser("log", help="inspect sensor logs", description="Inspect sensor logs.")
    log_sub = log.add_subparsers(title="log verbs", metavar="<log verb>", parser_class=_Parser)
    log.set_defaults(func=lambda _args: log.print_help() or EXIT_USAGE)
    p = _verb(log_sub, "info", cmd_log_info)
    p.add_argument("file", metavar="LOG", help="log to describe: MCAP file or ROS 2 bag (directory or .db3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, timeout, CI cancellation) or SIGHUP (a closed SSH session), raised like
    Ctrl-C so that every `finally` removes its temporary files and a progress bar shows the cursor."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Termination:
    """The SIGINT, SIGTERM or SIGHUP being acted on, from its handler until `main` returns.

    Raising from a signal handler is not always enough: an exception raised while a C extension
    runs Python code that clears errors is lost (a Cython module's init registering its types with
    `abc`, such as numpy.random's lazy import, dropped it, and the command ran to its end with exit
    code 0). So the first signal also starts a watcher that raises it again in the main thread
    every 0.25 s until `main` has caught it, and `main` raises it itself if the command returns
    first; a repeat that finds the first one's exception still propagating (its cleanup running)
    does nothing, while a second real signal interrupts the cleanup, as a second Ctrl-C always
    did. The watcher stops once a repeat finds the exception propagating; until then a real signal
    that lands while a repeat is pending (the main thread blocked in one C call) merges with it and
    counts as the repeat. `main` sets `caught` by a plain assignment: a function call there would
    let a pending repeat run first, outside any handler."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.caught = False
        self.repeating = False  # the next `handle` is the watcher's repeat, not a signal
        self.delivered = False  # a repeat found the exception propagating: the watcher stops

    def handle(self, signum: int, _frame) -> None:
        repeat, self.repeating = self.repeating, False
        if self.caught:
            return
        if repeat and _propagating(KeyboardInterrupt):
            self.delivered = True  # on its way to main: no more repeats (one could swallow a real second signal)
            return
        if self.signum is None:
            self.signum = signum
            threading.Thread(target=self._repeat, name="fusion-rt-terminate", daemon=True).start()
        raise self.exception(self.signum if repeat else signum)

    @staticmethod
    def exception(signum: int) -> KeyboardInterrupt:
        """Ctrl-C is Python's own KeyboardInterrupt (exit 130); SIGTERM and SIGHUP a `_Terminated`."""
        return KeyboardInterrupt() if signum == signal.SIGINT else _Terminated(signum)

    def _repeat(self) -> None:
        import _thread

        while not (self.caught or self.delivered):
            time.sleep(0.25)
            if not (self.caught or self.delivered):  # does nothing once main has put the default action back
                self.repeating = True
                _thread.interrupt_main(self.signum)  # `handle` in the main thread, as the signal ran it


def _propagating(kind: type[BaseException]) -> bool:
    """Whether an exception of `kind` is being handled or propagated (through `finally` and `with`)
    in this thread, directly or as the context of the one being handled."""
    exc = sys.exc_info()[1]
    while exc is not None:
        if isinstance(exc, kind):
            return True
        exc = exc.__context__
    return False


def _catch_signals(termination: _Termination) -> dict:
    """`termination.handle` on SIGINT, SIGTERM and SIGHUP where their action is the default one
    (Python's KeyboardInterrupt for SIGINT; a SIGHUP that nohup ignores stays ignored); returns the
    handlers replaced, for `main` to put back."""
    replaced = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        default = signal.default_int_handler if name == "SIGINT" else signal.SIG_DFL
        try:
            if signum is not None and signal.getsignal(signum) is default:
                replaced[signum] = signal.signal(signum, termination.handle)
        except ValueError:  # not the main thread (main called from a worker): nothing to install
            break
    return replaced


def _say_error(line: str) -> None:
    """One line on stderr, if stderr can still take it."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _flush_stdout() -> None:
    """What the command printed, out now: at exit a reader gone (Ctrl-C also ends `| head`) or a full
    disk would be an 'Exception ignored' traceback and exit code 120."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _silence()


def _silence() -> None:
    """Point stdout and stderr at /dev/null after a broken pipe (Python's recipe, see the signal
    module's note on SIGPIPE): what is still buffered must not fail again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError, AttributeError):  # not a file descriptor (a captured stream)
            pass
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:  # closed (`2>&-`, some daemons and cron jobs): written to /dev/null, and
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115  its descriptor is not a log's by chance
    termination = _Termination()
    replaced = _catch_signals(termination)
    try:
        parser = build_parser()  # inside the try: Ctrl-C while numpy loads is an interrupt too
        args = parser.parse_args(argv)
        if not hasattr(args, "func"):
            parser.print_help()
            return EXIT_USAGE
        code = int(args.func(args) or 0)
        if termination.signum is not None:  # swallowed, and the command ended before the watcher's repeat
            raise termination.exception(termination.signum)
        sys.stdout.flush()  # a reader gone or a full disk fails here, where it is caught, not at exit
        return code
    except FusionRTError as exc:
        _say_error(f"fusion-rt: error: {printable(exc)}")
        return EXIT_USAGE
    except _Terminated as exc:
        _say_error("fusion-rt: terminated")
        _flush_stdout()
        return 128 + exc.signum
    except KeyboardInterrupt:
        _say_error("fusion-rt: interrupted")
        _flush_stdout()
        return 130
    except BrokenPipeError:  # never 0: the command did not finish (`bench --check 2>&1 | head` must not pass)
        _silence()
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # a full disk, an I/O error: one line naming the file where there is one
        where = f"{exc.filename}: " if exc.filename else ""
        _say_error(f"fusion-rt: error: {printable(where)}{exc.strerror or exc}")
        return 1
    finally:
        termination.caught = True
        for signum, handler in replaced.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
