"""Train a fusion model on simulated drives and write a run directory.

    from fusion_rt.export.configs import preset
    from fusion_rt.export.train import train
    metrics = train(preset("quick", head="attention", seed=0), "runs/quick")

What training does, and why:

- Data: `fusion_rt.export.data.load_data` (simulated drives, the runtime's preprocessing, radar
  power normalization fitted on the training logs, vocabulary from the training texts).
- Modality dropout: each present sensor of a sample is masked with probability
  `modality_dropout`, each context input (map, text) with `context_dropout` (never all of them),
  so the head learns to decide from whatever is left, as the runtime asks it to when a sensor is
  late or broken, and does not take the kind of road for who is on it.
- Class imbalance: BCE `pos_weight` per scene label from the training label frequencies, and a
  square-root-softened per-class `pos_weight` for the sparse BEV occupancy.
- AdamW with linear warm-up and cosine decay, gradient clipping; deterministic for a given seed
  and thread count (torch and numpy seeded; batches and masks drawn from one numpy Generator).

The run directory holds `model.safetensors` (state dict), `config.json` (everything needed to
rebuild the model and its inputs: model, preprocessing, rig, data and training configs, seed),
`vocab.json`, `metrics.json` (validation metrics and the training curve) and `train.log`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fusion_rt import __version__
from fusion_rt._optional import require
from fusion_rt.errors import ConfigError
from fusion_rt.export.configs import RunConfig
from fusion_rt.export.data import SCENE_LABELS, LoadedData, default_cache_dir, load_data
from fusion_rt.export.evaluate import RUN_FORMAT, RUN_VERSION, batch_inputs, predict, summarize
from fusion_rt.messages import MODALITIES
from fusion_rt.outputs import check_outputs, json_text
from fusion_rt.package import sha256_file
from fusion_rt.preprocess import PreprocessConfig
from fusion_rt.rig import Rig

__all__ = ["train", "modality_dropout", "pos_weights", "default_threads", "check_threads", "check_out_dir",
           "MAX_THREADS"]

CONTEXT_MODALITIES = ("map", "text")  # inputs that describe the road, not the road users

#: The most torch threads a run may ask for (torch.set_num_threads overflows on values past a C int).
MAX_THREADS = 1024


def default_threads() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_threads(threads, what: str = "threads") -> int:
    """`threads` if it is an integer in [1, MAX_THREADS], else a ConfigError naming it."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise ConfigError(f"{what} must be an integer in [1, {MAX_THREADS}], got {threads!r}")
    return threads


def modality_dropout(present: np.ndarray, p: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mask each True of `present` [B, M] with probability `p` (one for all, or one per column),
    keeping at least one per row.

    A row that would lose every modality keeps one of its present ones, drawn uniformly; a row
    with nothing present stays empty (the head's null key handles it).
    """
    keep = present & (rng.random(present.shape) >= p)
    for row in np.flatnonzero(~keep.any(axis=1) & present.any(axis=1)):
        keep[row, rng.choice(np.flatnonzero(present[row]))] = True
    return keep


def pos_weights(labels: np.ndarray, bev: np.ndarray, scene_max: float, bev_max: float) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """BCE pos_weight per scene label (negatives/positives, in [1/scene_max, scene_max]) and per
    BEV class (sqrt(negatives/positives), in [1, bev_max]); 1 where a class never occurs."""
    pos = labels.mean(axis=0, dtype=np.float64)
    scene = np.where((pos > 0) & (pos < 1), (1 - pos) / np.clip(pos, 1e-9, None), 1.0)
    scene = np.clip(scene, 1.0 / scene_max, scene_max)
    cells = bev.mean(axis=(0, 2, 3), dtype=np.float64)
    bev_w = np.where(cells > 0, np.sqrt((1 - cells) / np.clip(cells, 1e-12, None)), 1.0)
    bev_w = np.clip(bev_w, 1.0, bev_max)
    return scene.astype(np.float32), bev_w.astype(np.float32)


class _Log:
    """Epoch lines to the run's train.log and, unless quiet, to stderr."""

    def __init__(self, path: Path, console) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.console = console

    def __call__(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.file.write(f"{stamp} {line}\n")
        self.file.flush()
        if self.console is not None:
            self.console.print(f"[dim]{stamp}[/dim] {line}", highlight=False)

    def close(self) -> None:
        self.file.close()


def _progress_bar(enabled: bool, console):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=True,
                    disable=not enabled or console is None or not console.is_terminal)


def check_out_dir(out: Path) -> None:
    """ConfigError unless `out` can become a new run directory (absent or empty; missing parent
    folders are created, as for every output folder: `fusion_rt.outputs.check_outputs`)."""
    if out.is_symlink() and not out.exists():
        raise ConfigError(f"output path {str(out)!r} is a dangling symbolic link; give a directory for the run")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path {str(out)!r} is a file; give a directory for the run")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"run directory {str(out)!r} is not empty; choose a new one or remove it")
    check_outputs(dirs={"run directory": out})


def train(config: RunConfig, out_dir: str | Path, cache_dir: str | Path | None = None, threads: int | None = None,
          quiet: bool = False, console=None, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train `config` into `out_dir` (created; must be new or empty). Returns metrics.json's content."""
    torch = require("torch", "training")
    safetensors_torch = require("safetensors.torch", "saving model weights")
    import torch.nn.functional as F

    from fusion_rt.export.models import FusionModel, FusionModelConfig
    from fusion_rt.outputs import atomic_output, write_text

    out = Path(out_dir)
    check_out_dir(out)
    threads = check_threads(default_threads() if threads is None else threads)
    # Checked before the run directory exists, so a retry finds it free; the default cache too
    # (an --out equal to or inside ~/.cache/fusion-rt would fill the run with the cache).
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    check_outputs(dirs={"cache folder": cache_dir}, inputs=[out])
    if console is None and not quiet:
        from rich.console import Console

        console = Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    log = _Log(out / "train.log", None if quiet else console)
    try:
        torch.set_num_threads(threads)
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        tc = config.train
        log(f"run {out}: preset {config.preset}, head {config.head}, modalities {','.join(config.modalities)}, "
            f"seed {config.seed}, {threads} threads")

        # ---- data
        t0 = time.perf_counter()
        rig = Rig.default(camera_size=tuple(config.data.camera_size))
        with _progress_bar(not quiet, console) as bar:
            task = bar.add_task("data", total=1)

            def data_progress(stage: str, done: int, total: int) -> None:
                bar.update(task, description=stage, completed=done, total=max(total, 1))

            base = PreprocessConfig.from_rig(rig, **config.preprocess)
            data: LoadedData = load_data(config.data, base, cache_dir, data_progress,
                                         note=lambda text: log(f"cache: {text}"))
        data_s = time.perf_counter() - t0
        train_set, val_set = data.train, data.val
        log(f"data: {len(train_set)} training samples from {len(config.data.train_drives)} drives, "
            f"{len(val_set)} validation samples from {len(config.data.val_drives)} drives ({data_s:.1f} s); "
            f"radar power offset {data.preprocess.radar_power_db_offset} dB, scale "
            f"{data.preprocess.radar_power_db_scale} dB; vocabulary {len(data.vocab)} ids")

        # ---- model
        encoders = {m: dict(config.model.get(m, {})) for m in config.modalities if config.model.get(m)}
        if "text" in config.modalities:
            encoders["text"] = {**encoders.get("text", {}), "vocab_size": len(data.vocab)}
        model_config = FusionModelConfig(modalities=config.modalities, head=config.head, encoders=encoders,
                                         head_config=dict(config.model.get(config.head, {})))
        model = FusionModel(model_config, rig=rig, preprocess=data.preprocess)
        n_params = sum(p.numel() for p in model.parameters())
        head_params = sum(p.numel() for p in model.head.parameters())
        run_json = {
            "format": RUN_FORMAT, "version": RUN_VERSION, "fusion_rt_version": __version__,
            "torch_version": torch.__version__, "threads": threads,
            "run": config.to_dict(), "model": model_config.to_dict(), "preprocess": data.preprocess.to_dict(),
            "rig": rig.to_dict(), "labels": list(SCENE_LABELS), "bev_classes": list(rig.class_names),
            "samples": {"train": len(train_set), "val": len(val_set)}, "logs": data.log_paths,
            "parameters": {"total": n_params, "head": head_params},
        }
        data.vocab.save(out / "vocab.json")
        run_json["vocabulary_sha256"] = sha256_file(out / "vocab.json")  # load_run checks the words too
        (out / "config.json").write_text(json.dumps(run_json, indent=1) + "\n", encoding="utf-8")
        log(f"model: {config.head} head, {n_params / 1e6:.3f} M parameters ({head_params / 1e6:.3f} M in the head)")

        # ---- optimization
        scene_pw, bev_pw = pos_weights(train_set.labels, train_set.bev, tc.scene_pos_weight_max, tc.bev_pos_weight_max)
        scene_pw_t = torch.from_numpy(scene_pw)
        bev_pw_t = torch.from_numpy(bev_pw)[:, None, None]
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr)
        steps_per_epoch = math.ceil(len(train_set) / tc.batch_size)
        total_steps = steps_per_epoch * tc.epochs
        warmup = max(1, int(tc.warmup_fraction * total_steps))

        def lr_factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        cols = [MODALITIES.index(m) for m in config.modalities]
        text_ids = train_set.text_ids(data.vocab) if "text" in config.modalities else None
        labels_f = train_set.labels.astype(np.float32)
        dropout_p = np.array([tc.context_dropout if m in CONTEXT_MODALITIES else tc.modality_dropout
                              for m in config.modalities])
        log(f"training: {tc.epochs} epochs x {steps_per_epoch} steps of {tc.batch_size}; scene pos_weight "
            f"{np.round(scene_pw, 2).tolist()}, BEV pos_weight {np.round(bev_pw, 2).tolist()}")

        curve = []
        t_train = time.perf_counter()
        with _progress_bar(not quiet, console) as bar:
            task = bar.add_task("training", total=total_steps)
            for epoch in range(1, tc.epochs + 1):
                model.train()
                t_epoch = time.perf_counter()
                order = rng.permutation(len(train_set))
                sums = np.zeros(3)
                for step in range(steps_per_epoch):
                    index = np.sort(order[step * tc.batch_size:(step + 1) * tc.batch_size])
                    inputs = batch_inputs(train_set, index, text_ids, config.modalities)
                    present = modality_dropout(train_set.present[index][:, cols], dropout_p, rng)
                    outputs = model(inputs, torch.from_numpy(present))
                    scene_loss = F.binary_cross_entropy_with_logits(
                        outputs.scene_logits, torch.from_numpy(labels_f[index]), pos_weight=scene_pw_t)
                    bev_loss = F.binary_cross_entropy_with_logits(
                        outputs.bev_logits, torch.from_numpy(train_set.bev[index].astype(np.float32)),
                        pos_weight=bev_pw_t)
                    loss = scene_loss + tc.bev_loss_weight * bev_loss
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    n = len(index)
                    sums += np.array([loss.item(), scene_loss.item(), bev_loss.item()]) * n
                    bar.update(task, advance=1, description=f"epoch {epoch}/{tc.epochs} loss {loss.item():.3f}")
                train_s = time.perf_counter() - t_epoch
                mean = sums / len(train_set)
                pred = predict(model, val_set, data.vocab, batch_size=tc.eval_batch_size)
                val = summarize(val_set, pred, rig.class_names, config.modalities)["overall"]
                entry = {"epoch": epoch, "loss": round(float(mean[0]), 5), "scene_loss": round(float(mean[1]), 5),
                         "bev_loss": round(float(mean[2]), 5), "val_mean_scene_auc": val["mean_scene_auc"],
                         "val_hazard_auc": val["hazard_auc"], "val_mean_scene_f1": val["mean_scene_f1"],
                         "val_mean_bev_iou": val["mean_bev_iou"], "epoch_seconds": round(train_s, 1),
                         "lr": round(float(scheduler.get_last_lr()[0]), 7)}
                curve.append(entry)
                if on_epoch:
                    on_epoch(entry)

                def f(v):
                    return "-" if v is None else f"{v:.3f}"

                log(f"epoch {epoch}/{tc.epochs}: loss {entry['loss']:.4f} (scene {entry['scene_loss']:.4f}, BEV "
                    f"{entry['bev_loss']:.4f}) | val scene AUC {f(entry['val_mean_scene_auc'])}, hazard AUC "
                    f"{f(entry['val_hazard_auc'])}, F1 {f(entry['val_mean_scene_f1'])}, BEV IoU "
                    f"{f(entry['val_mean_bev_iou'])} | {train_s:.1f} s")
        train_total_s = time.perf_counter() - t_train

        # ---- outputs
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        # One metadata key: safetensors writes a metadata map in hash order, so several keys would
        # make byte-identical runs differ in the header.
        with atomic_output(out / "model.safetensors") as tmp:
            safetensors_torch.save_file(state, str(tmp), metadata={"format": RUN_FORMAT})
        pred = predict(model, val_set, data.vocab, batch_size=tc.eval_batch_size)
        validation = summarize(val_set, pred, rig.class_names, config.modalities)
        metrics = {"validation": validation, "curve": curve, "data_seconds": round(data_s, 1),
                   "train_seconds": round(train_total_s, 1), "threads": threads,
                   "samples": {"train": len(train_set), "val": len(val_set)},
                   "pos_weight": {"scene": dict(zip(SCENE_LABELS, np.round(scene_pw, 4).tolist(), strict=True)),
                                  "bev": dict(zip(rig.class_names, np.round(bev_pw, 4).tolist(), strict=True))}}
        # metrics.json is written last and atomically: it marks a finished run (load_run requires it)
        write_text(out / "metrics.json", json_text(metrics, indent=1) + "\n")
        log(f"done: {train_total_s:.1f} s training, {data_s:.1f} s data; wrote {out}")
        return metrics
    finally:
        log.close()


if __name__ == "__main__":  # pragma: no cover - `fusion-rt train` is the entry point
    from fusion_rt.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
