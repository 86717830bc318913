"""Export a trained run to a model package: one ONNX graph per encoder and one for the head.

`export_run(run_dir, out_dir, parity_log=...)`:
1. loads the run (config.json + model.safetensors, no pickle);
2. exports each encoder and the head with `torch.onnx.export(..., dynamo=True)` at opset 18 with
   a dynamic batch axis (BASELINE.md: the dynamo exporter gave 4e-7 parity; the legacy one fails
   on attention under no_grad);
3. checks every graph with `onnx.checker`;
4. runs every graph in ONNX Runtime against PyTorch on real samples from a log and writes the
   per-output max abs / relative error and cosine similarity into `parity.json`; FP32 parity
   worse than `PARITY_RTOL` relative fails the export;
5. writes `manifest.json` (fusion_rt.package) with rig, preprocessing, vocabulary, output
   semantics, max ages, latency budgets and provenance.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion_rt.errors import ConfigError, FusionRTError
from fusion_rt.export.configs import PACKAGE_MAX_AGE_NS
from fusion_rt.outputs import json_text
from fusion_rt.package import describe_graph, load_package, stage_names, write_manifest

__all__ = ["export_run", "export_encoder", "ExportError", "PARITY_RTOL", "DEFAULT_BUDGETS_MS", "DEFAULT_MAX_AGE_NS",
           "parity_stats"]

#: FP32 parity bar: max |onnx - torch| / max |torch| per output.
PARITY_RTOL = 1e-4
OPSET = 18

#: Latency budgets (ms) written into the manifest: this CPU class, p50 (runtime issue #5 accounts them).
DEFAULT_BUDGETS_MS = {"camera_preprocess": 6.0, "camera_encoder": 12.0, "radar_encoder": 6.0, "map_encoder": 3.0,
                      "text_encoder": 1.0, "head": 6.0, "end_to_end": 30.0}
#: How old a modality's features may be at a camera trigger before it is masked (ns).
DEFAULT_MAX_AGE_NS = PACKAGE_MAX_AGE_NS

_INPUT_NAMES = {"camera": "image", "radar": "radar", "map": "map", "text": "text_ids"}
_HEAD_OUTPUTS = ("scene_logits", "bev_logits", "modality_share")


class ExportError(FusionRTError):
    """Export failed: a graph did not export, did not check, or missed the parity bar."""


@dataclass
class _Graph:
    name: str
    file: str
    role: str
    modality: str | None
    module: object
    args: tuple
    input_names: list[str]
    output_names: list[str]


#: Elements per slice of `parity_stats`: its float64 temporaries are this size (2 MB each) however
#: large the arrays (quantize compares 2000 frames of BEV logits, 32M elements: 1.5 GB as whole copies).
PARITY_SLICE_ELEMENTS = 1 << 18


def parity_stats(reference: np.ndarray, actual: np.ndarray) -> dict:
    """Max abs and relative error and cosine similarity of two arrays (flattened, in float64).

    Computed over slices of `PARITY_SLICE_ELEMENTS` flattened elements, each converted to float64
    on its own; the maxima and the float64 sums (|ref - act|, ref.act, ref.ref, act.act) accumulate
    across slices (cosine stays global: sqrt of the summed squares). No float64 copy of the whole
    arrays is made. Arrays of one slice or less give exactly the whole-array result; larger ones
    the same max_abs and max_rel, and mean_abs and cosine equal to within float64 rounding (the
    sums are added in another order).
    """
    ref_all, act_all = np.asarray(reference).ravel(), np.asarray(actual).ravel()  # views when contiguous
    if ref_all.size != act_all.size:
        raise ValueError(f"parity_stats: arrays of {ref_all.size} and {act_all.size} elements")
    if ref_all.size == 0:
        raise ValueError("parity_stats: empty arrays")
    slices = [slice(i, i + PARITY_SLICE_ELEMENTS) for i in range(0, ref_all.size, PARITY_SLICE_ELEMENTS)]

    def pair(sl: slice) -> tuple[np.ndarray, np.ndarray]:
        return ref_all[sl].astype(np.float64), act_all[sl].astype(np.float64)

    diff_max, ref_max = [], []
    abs_sum = dot = ref_sq = act_sq = np.float64(0.0)
    for sl in slices:
        ref, act = pair(sl)
        diff = ref - act
        np.abs(diff, out=diff)
        diff_max.append(diff.max())
        abs_sum += diff.sum()  # pairwise, as diff.mean() sums
        del diff
        ref_max.append(np.abs(ref).max())
        dot += ref @ act
        ref_sq += ref.dot(ref)  # np.linalg.norm of a vector is sqrt(x.dot(x))
        act_sq += act.dot(act)
    max_abs = np.max(diff_max)  # NaN when any slice's is
    scale = max(float(np.max(ref_max)), 1e-12)
    denom = float(np.sqrt(ref_sq) * np.sqrt(act_sq))
    if denom > 0:
        cosine = float(dot / denom)
    else:  # a zero (or NaN) norm: 1.0 only when the arrays are equal
        cosine = float(all(np.array_equal(*pair(sl)) for sl in slices))
    return {"max_abs": float(max_abs), "mean_abs": float(abs_sum / ref_all.size), "max_rel": float(max_abs / scale),
            "cosine": cosine}


def _source_commit() -> str | None:
    """The fusion-rt source commit this exporter runs from ("-dirty" with uncommitted changes to
    tracked files), or None when it does not run from a fusion-rt checkout: installed into a
    virtualenv inside the user's own git project, `git rev-parse HEAD` answered with that project's."""
    here = Path(__file__).resolve()

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=here.parent)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != here.parents[1]:  # this file is export/onnx_export.py of the checkout
        return None
    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def _graphs(model, inputs: dict) -> list[_Graph]:
    import torch

    graphs = []
    for m in model.config.modalities:
        graphs.append(_Graph(m, f"{m}_encoder.onnx", "encoder", m, model.encoders[m], (inputs[m],),
                             [_INPUT_NAMES[m]], ["tokens"]))
    with torch.no_grad():
        tokens = model.encode(inputs)
    present = torch.ones((next(iter(inputs.values())).shape[0], len(model.config.modalities)), dtype=torch.bool)
    graphs.append(_Graph("head", "head.onnx", "head", None, model.head,
                         (tuple(tokens[m] for m in model.config.modalities), present),
                         [f"{m}_tokens" for m in model.config.modalities] + ["present"], list(_HEAD_OUTPUTS)))
    return graphs


# Chatter of the dynamo exporter that says nothing about this model: the optional torchvision ops it
# could not register, onnxscript declining to constant-fold LayerNormalization (it has several
# outputs), torch's pytree deprecation warning. Errors still raise; other warnings still show.
_QUIET_LOGGERS = ("torch.onnx._internal.exporter._registration", "onnxscript.optimizer._constant_folding")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # torch < 2.14 warns from its own exporter internals (gone in 2.14)
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used", category=UserWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export_one(graph: _Graph, path: Path) -> None:
    import onnx
    import torch

    batch = torch.export.Dim("batch", min=1, max=1024)
    if graph.role == "head":
        tokens, _present = graph.args
        dynamic_shapes = (tuple({0: batch} for _ in tokens), {0: batch})
    else:
        dynamic_shapes = ({0: batch},)
    try:
        with _quiet_exporter():
            torch.onnx.export(graph.module, graph.args, str(path), dynamo=True, opset_version=OPSET,
                              input_names=graph.input_names, output_names=graph.output_names,
                              dynamic_shapes=dynamic_shapes, verbose=False, external_data=False)
    except Exception as exc:  # the exporter raises many types; any failure means no graph
        raise ExportError(f"graph {graph.name!r} failed to export: {type(exc).__name__}: {exc}") from exc
    strip_debug_info(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"graph {graph.name!r} fails onnx.checker: {exc}") from exc


def export_encoder(encoder, modality: str, example, path: str | Path) -> Path:
    """Export one encoder module alone, exactly as `export_run` exports a package's encoders (opset,
    dynamic batch, input name, debug info stripped, `onnx.checker`): for swapping a graph into a
    package or measuring a variant. `example` is one input batch; returns the written path."""
    if modality not in _INPUT_NAMES:
        raise ExportError(f"unknown modality {modality!r}: expected one of {sorted(_INPUT_NAMES)}")
    path = Path(path)
    _export_one(_Graph(modality, path.name, "encoder", modality, encoder, (example,), [_INPUT_NAMES[modality]],
                       ["tokens"]), path)
    return path


def strip_debug_info(path: Path) -> None:
    """Drop the exporter's per-node debug metadata (Python stack traces with this machine's absolute
    source paths, FX node text, module scopes) and doc strings: a quarter of a small graph's bytes,
    and nothing a shipped package should carry. Graph semantics are untouched."""
    import onnx

    model = onnx.load(str(path))
    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        for node in g.node:
            del node.metadata_props[:]
            node.doc_string = ""
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    graphs.append(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    graphs.extend(a.graphs)
        for info in (*g.input, *g.output, *g.value_info):
            del info.metadata_props[:]
            info.doc_string = ""
    onnx.save(model, str(path))


def _flatten_args(graph: _Graph) -> list:
    if graph.role == "head":
        tokens, present = graph.args
        return [*tokens, present]
    return list(graph.args)


def _check_parity(graphs: list[_Graph], root: Path, sample_inputs: dict, model) -> dict:
    """Run every exported graph in ONNX Runtime against PyTorch on `sample_inputs` (real frames)."""
    import onnxruntime as ort
    import torch

    report = {}
    real_graphs = _graphs(model, sample_inputs)
    for graph in real_graphs:
        session = ort.InferenceSession(str(root / graph.file), providers=["CPUExecutionProvider"])
        args = _flatten_args(graph)
        feed = {name: a.numpy() for name, a in zip(graph.input_names, args, strict=True)}
        got = session.run(graph.output_names, feed)
        with torch.no_grad():
            want = graph.module(*graph.args)
        want = [want] if isinstance(want, torch.Tensor) else list(want)
        report[graph.name] = {name: parity_stats(w.numpy(), g)
                              for name, w, g in zip(graph.output_names, want, got, strict=True)}
    return report


def _sample_inputs(run, parity_log: str | Path | None, samples: int,
                   topics: dict[str, str] | None = None) -> tuple[dict, str, dict[str, int]]:
    """Real preprocessed frames from a log (or, without one, the model's example inputs), and per
    modality how many of them hold it (the others carry the zero placeholder the runtime would
    mask). Frames holding more of the model's modalities are preferred."""
    import torch

    from fusion_rt.messages import MODALITIES

    if parity_log is None:
        return run.model.example_inputs(batch=2), "example inputs (zeros): no --parity-log given", {}
    from fusion_rt.export.data import read_logs
    from fusion_rt.export.evaluate import batch_inputs
    from fusion_rt.preprocess import CameraSize

    # read as the package's runtime will: its max ages, radar detections binned where no tensor is logged
    split, _counts = read_logs([parity_log], run.preprocess, frame_stride=1, require_truth=False, topics=topics,
                               max_age_ns=PACKAGE_MAX_AGE_NS, rig_radar=run.rig.radar,
                               camera_size=CameraSize(run.rig.camera.intrinsics))
    if len(split) == 0:
        raise ConfigError(f"parity log {str(parity_log)!r} has no decodable camera frames")
    # Frames holding the most of the model's modalities first: the richest tier that still has
    # `samples` frames (every frame, if it must), sampled evenly in time.
    present = split.present[:, [MODALITIES.index(m) for m in run.modalities]]
    rank = present.sum(axis=1)
    count = min(samples, len(split))
    pool = np.flatnonzero(rank >= np.sort(rank)[-count])  # the count-th highest rank and above
    index = pool[np.linspace(0, len(pool) - 1, num=count).round().astype(np.int64)]
    held = dict(zip(run.modalities, present[index].sum(axis=0).tolist(), strict=True))
    inputs = batch_inputs(split, index, split.text_ids(run.vocab), run.modalities)
    return ({m: torch.as_tensor(v) for m, v in inputs.items()}, f"{len(index)} frames of {Path(parity_log).name}",
            held)


def export_run(run_dir: str | Path, out_dir: str | Path, parity_log: str | Path | None = None, samples: int = 16,
               name: str | None = None, progress: Callable[[str], None] | None = None,
               budgets_ms: dict[str, float] | None = None, overwrite: bool = False,
               topics: dict[str, str] | None = None) -> Path:
    """Export `run_dir` to a model package in `out_dir` and return its path (see module docstring);
    `topics` picks the parity log's topics as replay's --topics does."""
    from fusion_rt._optional import require

    require("torch", "exporting a trained model")
    require("onnxscript", "the dynamo ONNX exporter")
    from fusion_rt.outputs import check_outputs, staged_dir

    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"samples must be a positive integer, got {samples!r}")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError(f"the package name must be a non-empty string, got {name!r}")
    check_outputs(dirs={"package folder": out_dir}, inputs=[run_dir, parity_log])
    say = progress or (lambda _msg: None)
    # Built beside out_dir and moved into place once it validates: a failed export (a parity
    # failure, a bad log, Ctrl-C) leaves out_dir as it was, never graphs without a manifest.
    with staged_dir(out_dir, overwrite) as staging:
        _export_into(staging, run_dir, parity_log, samples, name, say, budgets_ms, topics)  # validated there
    out = Path(out_dir)
    say(f"wrote {out}")
    return out


def _export_into(out: Path, run_dir: str | Path, parity_log: str | Path | None, samples: int, name: str | None,
                 say: Callable[[str], None], budgets_ms: dict[str, float] | None,
                 topics: dict[str, str] | None = None) -> None:
    from fusion_rt.export.data import SCENE_LABELS
    from fusion_rt.export.evaluate import load_run, read_json_object

    run = load_run(run_dir)
    model = run.model
    say(f"loaded run {run.path} ({', '.join(run.modalities)}; head {model.config.head})")
    if "camera" not in run.modalities:  # the package is valid; only the commands that replay it assume a camera
        say(f"warning: this run has no camera: replay, compare, bench and the demo trigger on camera frames, so "
            f"its package runs only through FusionRuntime(package, trigger={run.modalities[0]!r}, ...)")

    inputs, source, held = _sample_inputs(run, parity_log, samples, topics)  # a log it cannot use: before exporting
    graphs = _graphs(model, model.example_inputs(batch=2))
    for graph in graphs:
        say(f"exporting {graph.file}")
        _export_one(graph, out / graph.file)

    say(f"parity check on {source}")
    absent = [m for m, n in held.items() if n == 0]
    if absent:
        which = "their encoders are" if len(absent) > 1 else "its encoder is"
        say(f"warning: no {', '.join(absent)} in those frames: {which} checked on zero placeholders only "
            "(pass a --parity-log that records every sensor)")
    parity = _check_parity(graphs, out, inputs, model)
    # `not <=`: a NaN error (an output not finite in either run) is a failure, not a pass
    failures = [f"{g}.{o}: max_rel {s['max_rel']:.2e}" for g, outs in parity.items() for o, s in outs.items()
                if not s["max_rel"] <= PARITY_RTOL]
    (out / "parity.json").write_text(json_text({"source": source, "rtol": PARITY_RTOL, "graphs": parity,
                                                "frames_holding": held},
                                               indent=2, sort_keys=True) + "\n")
    if failures:
        raise ExportError(f"FP32 parity worse than {PARITY_RTOL:g} relative: {'; '.join(failures)}")

    run.vocab.save(out / "vocab.json")
    metrics = read_json_object(run.path / "metrics.json", "train the run again")
    specs = {g.name: describe_graph(out, g.file, g.name, g.role, g.modality).to_dict() for g in graphs}
    stages = stage_names(tuple(run.modalities))

    write_manifest(out, {
        "name": name or f"fusion-{model.config.head}",
        "precision": "fp32",
        "precision_recipe": {"name": "fp32"},
        "rig": run.rig.to_dict(),
        "modalities": list(run.modalities),
        "preprocess": run.preprocess.to_dict(),
        "vocabulary": "vocab.json",
        "graphs": specs,
        "outputs": {
            "scene_labels": list(SCENE_LABELS),
            "scene_activation": "sigmoid",
            "bev_classes": list(run.rig.class_names),
            "bev_activation": "sigmoid",
            "bev_grid": run.rig.to_dict()["bev"],
            "modality_share": "rows: scene labels then BEV; columns: modalities in manifest order",
        },
        "max_age_ns": {k: v for k, v in PACKAGE_MAX_AGE_NS.items() if k in run.modalities},
        # the default budgets of the run's own stages (load_package leaves out those of other modalities)
        "latency_budget_ms": dict(budgets_ms or {k: v for k, v in DEFAULT_BUDGETS_MS.items() if k in stages}),
        "parity": {"file": "parity.json", "worst_max_rel": max(s["max_rel"] for o in parity.values()
                                                                for s in o.values())},
        "provenance": {
            "run": run.path.name,
            "training_config": run.config,
            "metrics": metrics.get("validation", metrics),
            "source_commit": _source_commit(),
            "exporter": f"torch.onnx.export(dynamo=True, opset={OPSET})",
        },
    })
    load_package(out)  # the package must pass the same validation the runtime applies

