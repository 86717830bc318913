"""Evaluate a training run on labelled logs: per-class AUC and F1, BEV IoU, overall and per condition.

`load_run` rebuilds the model of a run directory from its JSON config and its safetensors weights
(no pickle anywhere). `evaluate_logs` reads logs through the same `LogDataset` + preprocessing
path as training, optionally masks modalities through the presence mask (as the runtime does
when a sensor is missing) and returns a JSON-ready dict; `summarize` computes the metrics and is
shared with training's validation. `print_report` renders the result as rich tables.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion_rt.errors import ConfigError
from fusion_rt.export.configs import ALL_CONDITIONS, PACKAGE_MAX_AGE_NS
from fusion_rt.export.data import SCENE_LABELS, Split, read_logs
from fusion_rt.export.metrics import bev_iou_per_class, f1_per_class, roc_auc_per_class
from fusion_rt.messages import MODALITIES
from fusion_rt.package import sha256_file
from fusion_rt.preprocess import CameraSize, PreprocessConfig, Vocabulary
from fusion_rt.rig import Rig

__all__ = ["Run", "Predictions", "load_run", "read_json_object", "predict", "summarize", "evaluate_logs",
           "print_report", "parse_modalities", "RUN_FILES"]

#: Files every complete run directory holds.
RUN_FILES: tuple[str, ...] = ("config.json", "model.safetensors", "vocab.json", "metrics.json")
RUN_FORMAT = "fusion-rt-run"
RUN_VERSION = 1


def parse_modalities(text: str | Sequence[str], what: str = "modalities") -> tuple[str, ...]:
    """'camera,radar' -> ('camera', 'radar'); ConfigError naming any unknown or repeated name."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    items = [t for t in items if t]
    unknown = [t for t in items if t not in MODALITIES]
    if unknown:
        raise ConfigError(f"unknown modality {unknown[0]!r} in {what}; choose from {','.join(MODALITIES)}")
    if len(set(items)) != len(items):
        raise ConfigError(f"{what} names a modality twice: {','.join(items)}")
    return tuple(items)


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: an undefined metric (a class absent from the data) becomes null."""
    value = float(value)
    return round(value, 5) if math.isfinite(value) else None


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


@dataclass
class Predictions:
    """Model outputs over a split: scene probabilities, BEV occupancy and the mean modality shares."""

    scene: np.ndarray  # [N, L] sigmoid probabilities
    # [N, C, rows, cols] bool: sigmoid >= 0.5, decided in float32 as the runtime does (a float16 copy
    # of the probabilities rounded those in (0.49988, 0.5) up to 0.5: occupied for evaluation only)
    bev: np.ndarray
    share: np.ndarray | None  # [N, L + 1, M] modality shares (per label, then BEV); None: the head has none


def summarize(split: Split, pred: Predictions, class_names: Sequence[str], modalities: Sequence[str],
              scene_labels: Sequence[str] = SCENE_LABELS) -> dict:
    """Metrics overall and per condition (day, night, fog, rain: those present), JSON-ready.

    `scene_labels` names the columns of `pred.scene` (a package's `outputs.scene_labels`, in its
    order); each is scored against the truth of the label of that name, as replay scores them, and
    a label the truth does not have is left out.

    Per group: sample count, label rates, per-class AUC and F1 (threshold 0.5) of the scene labels
    and their means, hazard AUC, BEV IoU per class (threshold 0.5) and its mean; overall also the
    mean modality shares. Undefined values (a class absent from a group) are null and left out of
    the means. A BEV class a frame's truth does not have (`split.bev_known`) is not scored on that
    frame, as replay leaves it out.
    """

    pairs = [(i, SCENE_LABELS.index(name)) for i, name in enumerate(scene_labels) if name in SCENE_LABELS]
    if pred.scene.shape[1] != len(scene_labels):
        raise ConfigError(f"{pred.scene.shape[1]} scene outputs, {len(scene_labels)} scene labels {list(scene_labels)}")
    labels = [scene_labels[i] for i, _ in pairs]
    pred_cols, truth_cols = [i for i, _ in pairs], [j for _, j in pairs]

    def group(mask: np.ndarray) -> dict:
        y, s = split.labels[mask][:, truth_cols], pred.scene[mask][:, pred_cols]
        auc = roc_auc_per_class(y, s)
        f1 = f1_per_class(y, s, 0.5)
        occupied = pred.bev[mask] & split.bev_known[mask][:, :, None, None]  # truth 0 there: neither I nor U
        iou = bev_iou_per_class(split.bev[mask], occupied, 0.5)
        return {
            "samples": int(mask.sum()),
            "label_rate": {c: _finite_or_none(v) for c, v in zip(labels, y.mean(axis=0), strict=True)},
            "scene_auc": {c: _finite_or_none(v) for c, v in zip(labels, auc, strict=True)},
            "scene_f1": {c: _finite_or_none(v) for c, v in zip(labels, f1, strict=True)},
            "mean_scene_auc": _finite_or_none(_nanmean(auc)),
            "hazard_auc": _finite_or_none(auc[labels.index("hazard")]) if "hazard" in labels else None,
            "mean_scene_f1": _finite_or_none(_nanmean(f1)),
            "bev_iou": {c: _finite_or_none(v) for c, v in zip(class_names, iou, strict=True)},
            "mean_bev_iou": _finite_or_none(_nanmean(iou)),
        }

    everything = np.ones(len(split), dtype=bool)
    overall = group(everything)
    if pred.share is not None:
        share = pred.share.mean(axis=0)  # [L + 1, M]
        overall["modality_share"] = {
            "scene": {m: _finite_or_none(v) for m, v in zip(modalities, share[:-1].mean(axis=0), strict=True)},
            "bev": {m: _finite_or_none(v) for m, v in zip(modalities, share[-1], strict=True)},
        }
    per_condition = {c: group(split.condition == c) for c in ALL_CONDITIONS if np.any(split.condition == c)}
    return {"overall": overall, "per_condition": per_condition}


# ------------------------------------------------------------------------------------ torch side


@dataclass
class Run:
    """A trained run loaded back: the model in eval mode and everything needed to feed it."""

    path: Path
    model: object  # fusion_rt.export.models.FusionModel
    config: dict  # config.json as written by training
    preprocess: PreprocessConfig
    vocab: Vocabulary
    rig: Rig

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.model.config.modalities)


def read_json_object(path: Path, remedy: str) -> dict:
    """A JSON object from a file the host side wrote (run config, metrics, results); a missing,
    damaged or non-object file is a ConfigError naming it and `remedy` (what fixes it)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {str(path)!r} ({exc}): {remedy}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{str(path)!r} is not a JSON object: {remedy}")
    return data


def load_run(run_dir: str | Path) -> Run:
    """Rebuild a run's model from config.json + model.safetensors (safetensors: no pickle)."""
    from fusion_rt._optional import require

    require("torch", "loading a trained model")
    safetensors_torch = require("safetensors.torch", "loading model weights")
    from fusion_rt.export.models import FusionModel, FusionModelConfig

    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError(f"run directory {str(path)!r} does not exist (train one with 'fusion-rt train --out DIR')")
    if (path / "manifest.json").is_file() and not (path / "config.json").is_file():
        raise ConfigError(f"{str(path)!r} is a model package, not a training run: evaluate reads the run that "
                          "'fusion-rt train' wrote (replay --package measures a package on a log)")
    for name in RUN_FILES:  # metrics.json last: training writes it when everything else is in place
        if not (path / name).is_file():
            raise ConfigError(f"run directory {str(path)!r} has no {name}: not a finished training run "
                              "(interrupted? train it again into a new directory)")
    config = read_json_object(path / "config.json", "not a fusion-rt run config")
    if config.get("format") != RUN_FORMAT:
        raise ConfigError(f"{path / 'config.json'} is not a fusion-rt run config (format {RUN_FORMAT!r})")
    if config.get("version") != RUN_VERSION:
        raise ConfigError(f"run config version {config.get('version')!r} is not supported; this fusion-rt reads "
                          f"{RUN_VERSION}")
    missing = [k for k in ("rig", "preprocess", "model") if not isinstance(config.get(k), dict)]
    if missing:
        raise ConfigError(f"{path / 'config.json'} lacks {missing} (or they are not JSON objects): not a complete run "
                          "config")
    rig = Rig.from_dict(config["rig"])
    preprocess = PreprocessConfig.from_dict(config["preprocess"])
    vocab = Vocabulary.load(path / "vocab.json")
    expected = config.get("vocabulary_sha256")  # runs trained before it was recorded have none
    if expected is not None and sha256_file(path / "vocab.json") != expected:
        raise ConfigError(f"{path / 'vocab.json'} is not the vocabulary this run was trained with (its sha256 "
                          f"differs from config.json's vocabulary_sha256): every word id would change meaning")
    try:
        model = FusionModel(FusionModelConfig.from_dict(config["model"]), rig=rig, preprocess=preprocess)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a field of the wrong JSON type
        raise ConfigError(f"{path / 'config.json'}: malformed model config: {type(exc).__name__}: {exc}") from exc
    if "text" in model.config.modalities:
        _check_vocabulary(vocab, model, preprocess, path / "vocab.json")
    try:
        state = safetensors_torch.load_file(str(path / "model.safetensors"))
    except Exception as exc:  # safetensors raises its own SafetensorError for malformed files
        raise ConfigError(f"cannot read weights {path / 'model.safetensors'}: {exc}") from exc
    _check_weights(state, model, path / "model.safetensors")
    model.load_state_dict(state, strict=True)
    model.eval()
    return Run(path=path, model=model, config=config, preprocess=preprocess, vocab=vocab, rig=rig)


def _check_weights(state: dict, model, where: Path) -> None:
    """The stored tensors must be exactly the model's: names, shapes and dtypes (load_state_dict
    would cast a bool or int64 tensor silently, and names no tensor in its error's first line)."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [f"{k}: {tuple(state[k].shape)} {state[k].dtype}, the model has {tuple(v.shape)} {v.dtype}"
             for k, v in expected.items() if k in state and (state[k].shape != v.shape or state[k].dtype != v.dtype)]
    problems = ([f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}"] if missing else []) \
        + ([f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}"] if unexpected else []) + wrong[:3]
    if problems:
        raise ConfigError(f"weights in {where} do not match the model in config.json: {'; '.join(problems)}")


def _check_vocabulary(vocab: Vocabulary, model, preprocess: PreprocessConfig, where: Path) -> None:
    """vocab.json must be the one the text encoder was trained with: as many ids as its embedding
    rows, and the token count the preprocessing feeds (another vocabulary remaps every word)."""
    rows = model.encoders["text"].config.vocab_size
    if len(vocab) != rows or vocab.max_tokens != preprocess.text_max_tokens:
        raise ConfigError(f"{where} does not belong to this model: {len(vocab)} ids and max_tokens "
                          f"{vocab.max_tokens}, the text encoder has {rows} embedding rows and reads "
                          f"{preprocess.text_max_tokens} tokens")


def batch_inputs(split: Split, index: np.ndarray, text_ids: np.ndarray | None, modalities: Sequence[str]) -> dict:
    """Torch inputs {modality: tensor} of the samples `index`, float32 (text: int64 ids)."""
    import torch

    out = {}
    for m in modalities:
        if m == "text":
            out[m] = torch.from_numpy(text_ids[index])
        else:
            out[m] = torch.from_numpy(getattr(split, m)[index].astype(np.float32))
    return out


def predict(model, split: Split, vocab: Vocabulary, present: np.ndarray | None = None, batch_size: int = 64,
            progress: Callable[[int, int], None] | None = None) -> Predictions:
    """Run `model` over `split` with presence mask `present` ([N, 4], MODALITIES order; default:
    what each sample has)."""
    import torch

    modalities = tuple(model.config.modalities)
    cols = [MODALITIES.index(m) for m in modalities]
    present = split.present if present is None else present
    text_ids = split.text_ids(vocab) if "text" in modalities else None
    n = len(split)
    scene, bev, share = [], [], []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            index = np.arange(start, min(n, start + batch_size))
            inputs = batch_inputs(split, index, text_ids, modalities)
            mask = torch.from_numpy(np.ascontiguousarray(present[index][:, cols]))
            out = model(inputs, mask)
            scene.append(torch.sigmoid(out.scene_logits).numpy())
            bev.append((torch.sigmoid(out.bev_logits) >= 0.5).numpy())  # float32 decision (Predictions.bev)
            share.append(out.modality_share.numpy())
            if progress:
                progress(int(index[-1]) + 1, n)
    model.train(was_training)
    return Predictions(scene=np.concatenate(scene), bev=np.concatenate(bev), share=np.concatenate(share))


def evaluate_logs(run: Run, logs: Sequence[str | Path], drop: Sequence[str] = (), batch_size: int = 64,
                  progress: Callable[[str, int, int], None] | None = None,
                  topics: Mapping[str, str] | None = None) -> dict:
    """Metrics of `run` on `logs` (read with LogDataset, every frame with ground truth; `topics` as
    replay's --topics), with the modalities in `drop` masked out. Returns the JSON-ready result
    (see README of export/results)."""
    drop = parse_modalities(drop, "--drop")
    if not logs:
        raise ConfigError("no log to evaluate on: pass --log FILE.mcap")
    foreign = [m for m in drop if m not in run.modalities]
    if foreign:  # as replay refuses it: masking what the model never reads would be reported as an effect
        raise ConfigError(f"--drop {foreign[0]!r}: not a modality of run {str(run.path)!r} ({list(run.modalities)})")
    if not [m for m in run.modalities if m not in drop]:
        raise ConfigError(f"--drop {','.join(drop)} masks every modality the model uses ({','.join(run.modalities)})")
    # The log read as replay of the exported package reads it: the package's max ages, radar detections
    # binned where a log has no radar tensor, camera inputs in float32 (training keeps float16 copies).
    split, counts = read_logs([Path(p) for p in logs], run.preprocess, frame_stride=1, progress=progress,
                              bev_classes=run.rig.class_names, bev_shape=run.rig.bev.shape, topics=topics,
                              max_age_ns=PACKAGE_MAX_AGE_NS, rig_radar=run.rig.radar, camera_dtype=np.float32,
                              camera_size=CameraSize(run.rig.camera.intrinsics))  # the runtime's size rule
    present = split.present.copy()
    for m in drop:
        present[:, MODALITIES.index(m)] = False
    columns = [MODALITIES.index(m) for m in run.modalities]
    # what the model really read: a modality the logs never hold is masked on every frame
    used = [m for m, c in zip(run.modalities, columns, strict=True) if present[:, c].any()]
    if not used:
        raise ConfigError(f"no frame of {[str(p) for p in logs]} holds any modality the model reads once --drop "
                          f"{','.join(drop) or '(none)'} is applied: nothing to evaluate")
    counts["frames_without_input"] = int((~present[:, columns].any(axis=1)).sum())
    pred = predict(run.model, split, run.vocab, present, batch_size,
                   progress=(lambda i, n: progress("inference", i, n)) if progress else None)
    result = {
        "run": str(run.path),
        "logs": [str(p) for p in logs],
        "head": run.model.config.head,
        "modalities": list(run.modalities),
        "dropped": list(drop),
        "used": used,
        "read": counts,
        **summarize(split, pred, run.rig.class_names, run.modalities),
    }
    return result


def print_report(result: dict, console=None) -> None:
    """Rich tables: scene AUC/F1 and BEV IoU, overall and per condition."""
    from rich.table import Table

    from fusion_rt.outputs import console as _console

    console = console or _console()

    def fmt(v) -> str:
        return "-" if v is None else f"{v:.3f}"

    groups = [("overall", result["overall"])] + list(result["per_condition"].items())
    dropped = ", ".join(result["dropped"]) or "none"
    console.print(f"{result['run']}: {result['head']} head over {', '.join(result['modalities'])}; "
                  f"masked: {dropped}; {result['overall']['samples']} frames from {len(result['logs'])} log(s)")
    table = Table(title="scene labels: AUC / F1 (threshold 0.5)", show_edge=False)
    table.add_column("group")
    table.add_column("frames", justify="right")
    for label in SCENE_LABELS:
        table.add_column(label, justify="right")
    table.add_column("mean AUC", justify="right")
    for name, g in groups:
        cells = [f"{fmt(g['scene_auc'][c])} / {fmt(g['scene_f1'][c])}" for c in SCENE_LABELS]
        table.add_row(name, str(g["samples"]), *cells, fmt(g["mean_scene_auc"]))
    console.print(table)
    classes = list(result["overall"]["bev_iou"])
    table = Table(title="BEV occupancy IoU (threshold 0.5)", show_edge=False)
    table.add_column("group")
    for c in classes:
        table.add_column(c, justify="right")
    table.add_column("mean", justify="right")
    for name, g in groups:
        table.add_row(name, *[fmt(g["bev_iou"][c]) for c in classes], fmt(g["mean_bev_iou"]))
    console.print(table)
    share = result["overall"].get("modality_share")
    if share:
        console.print("modality share (scene / BEV): " + ", ".join(
            f"{m} {fmt(share['scene'][m])} / {fmt(share['bev'][m])}" for m in share["scene"]))
