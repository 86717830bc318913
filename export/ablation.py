"""The fusion ablation: single sensors vs fusion heads vs a fused model with a sensor masked.

    python -m fusion_rt.export.ablation --runs runs/ablation --out export/results
    python -m fusion_rt.export.ablation --runs runs/ablation --out export/results --report-only

Trains (or reuses, when a run directory already holds metrics.json) one run per variant and
seed with the `ablation` preset, evaluates each on held-out drives (seeds from
HELDOUT_SEED_BASE, never used in training or validation; every condition x scene type), and
writes `ablation.json` (every number, per run and aggregated) and `ablation.md` (the tables:
mean and std / min-max over seeds; overall and per condition). Runs go seed by seed, so an
interrupted ablation leaves complete rows for the seeds it finished, and rerunning resumes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion_rt.errors import ConfigError, FusionRTError
from fusion_rt.export.configs import ALL_CONDITIONS, HELDOUT_SEED_BASE, plan_drives, preset
from fusion_rt.export.data import Split, default_cache_dir, read_logs, record_drives
from fusion_rt.export.evaluate import read_json_object
from fusion_rt.messages import MODALITIES
from fusion_rt.outputs import write_text

_REDO = "delete it and run the ablation again to redo it"

__all__ = ["VARIANTS", "EVALUATIONS", "run_ablation", "write_report", "main"]


@dataclass(frozen=True)
class Variant:
    """One trained model of the table."""

    name: str
    head: str
    modalities: tuple[str, ...]


VARIANTS: tuple[Variant, ...] = (
    Variant("camera-only", "attention", ("camera",)),
    Variant("radar-only", "attention", ("radar",)),
    Variant("concat", "concat", MODALITIES),
    Variant("gated", "gated", MODALITIES),
    Variant("attention", "attention", MODALITIES),
)

#: Table rows: (row name, trained variant, modalities masked at evaluation).
EVALUATIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("camera-only", "camera-only", ()),
    ("radar-only", "radar-only", ()),
    ("concat", "concat", ()),
    ("gated", "gated", ()),
    ("attention", "attention", ()),
    ("attention, radar masked", "attention", ("radar",)),
    ("attention, camera masked", "attention", ("camera",)),
    # camera + radar alone: what the sensors fuse to without the road context
    ("attention, map and text masked", "attention", ("map", "text")),
)
SENSORS_ONLY = "attention, map and text masked"

METRICS = ("mean_scene_auc", "hazard_auc", "mean_bev_iou")
METRIC_TITLES = {"mean_scene_auc": "mean scene AUC", "hazard_auc": "hazard AUC", "mean_bev_iou": "mean BEV IoU"}
HELDOUT_DRIVES = 16  # every condition x scene-type pair once
HELDOUT_SECONDS = 8.0  # 160 frames each: 2560 held-out frames in all


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def run_ablation(runs_dir: Path, out_dir: Path, seeds: tuple[int, ...], config_name: str = "ablation",
                 cache_dir: Path | None = None, threads: int | None = None) -> dict:
    """Train and evaluate every missing (variant, seed); then write the report. Returns ablation.json."""
    from fusion_rt.export.evaluate import load_run, predict, summarize
    from fusion_rt.export.train import train

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    runs_dir.mkdir(parents=True, exist_ok=True)
    base = preset(config_name)
    heldout = plan_drives(HELDOUT_DRIVES, HELDOUT_SEED_BASE, HELDOUT_SECONDS)
    used = {d.seed for d in base.data.train_drives + base.data.val_drives}
    assert not used & {d.seed for d in heldout}, "held-out seeds must never be used in training"
    _say(f"held-out drives: {len(heldout)} x {HELDOUT_SECONDS:g} s, seeds {heldout[0].seed}..{heldout[-1].seed}")
    logs = record_drives(heldout, base.data.camera_size, base.data.jpeg_quality, cache, note=_say)
    splits: dict[str, Split] = {}  # preprocessing config (JSON) -> held-out split read with it

    for seed in seeds:
        for variant in VARIANTS:
            run_dir = runs_dir / f"{variant.name}-s{seed}"
            config = preset(config_name, head=variant.head, modalities=variant.modalities, seed=seed)
            if not (run_dir / "metrics.json").is_file():
                if run_dir.exists():
                    shutil.rmtree(run_dir)  # an interrupted run: start it again
                _say(f"training {run_dir.name}")
                train(config, run_dir, cache_dir=cache, threads=threads, quiet=True)
            run = load_run(run_dir)
            if run.config.get("run") != json.loads(json.dumps(config.to_dict())):
                raise ConfigError(f"run {str(run_dir)!r} was trained with another configuration than "
                                  f"--config {config_name} seed {seed} asks for (another preset, or a preset "
                                  "since changed): move it away, or point --runs at a new folder")
            key = json.dumps([run.preprocess.to_dict(), run.rig.class_names, run.rig.bev.shape], sort_keys=True)
            if key not in splits:
                splits[key], _ = read_logs(logs, run.preprocess, bev_classes=run.rig.class_names,
                                           bev_shape=run.rig.bev.shape, strict=True)  # cached: whole
            split = splits[key]
            for row, trained, drop in EVALUATIONS:
                if trained != variant.name:
                    continue
                result_file = run_dir / ("heldout.json" if not drop else f"heldout-drop-{'-'.join(drop)}.json")
                if result_file.is_file():
                    continue
                present = split.present.copy()
                for m in drop:
                    present[:, MODALITIES.index(m)] = False
                pred = predict(run.model, split, run.vocab, present)
                result = {"row": row, "variant": variant.name, "seed": seed, "dropped": list(drop),
                          "logs": [str(p) for p in logs], **summarize(split, pred, run.rig.class_names,
                                                                      run.modalities)}
                write_text(result_file, json.dumps(result, indent=1) + "\n")
                _say(f"{row} seed {seed}: scene AUC {result['overall']['mean_scene_auc']}, "
                     f"BEV IoU {result['overall']['mean_bev_iou']}")
            write_report(runs_dir, out_dir, config_name)
    return write_report(runs_dir, out_dir, config_name)


def _stats(values: list[float | None]) -> dict | None:
    vals = np.array([v for v in values if v is not None], dtype=np.float64)
    if vals.size == 0:
        return None
    return {"mean": round(float(vals.mean()), 4), "std": round(float(vals.std(ddof=1)) if vals.size > 1 else 0.0, 4),
            "min": round(float(vals.min()), 4), "max": round(float(vals.max()), 4), "n": int(vals.size)}


def write_report(runs_dir: Path, out_dir: Path, config_name: str = "ablation") -> dict:
    """Aggregate every held-out result under `runs_dir` into ablation.json and ablation.md."""
    rows: dict[str, list[dict]] = {row: [] for row, _, _ in EVALUATIONS}
    timings: dict[str, list[float]] = {}
    for row, trained, drop in EVALUATIONS:
        name = "heldout.json" if not drop else f"heldout-drop-{'-'.join(drop)}.json"
        for path in sorted(runs_dir.glob(f"{trained}-s*/{name}")):
            rows[row].append(read_json_object(path, _REDO))
    for variant in VARIANTS:
        for path in sorted(runs_dir.glob(f"{variant.name}-s*/metrics.json")):
            m = read_json_object(path, _REDO)
            timings.setdefault(variant.name, []).append(m["train_seconds"] + m["data_seconds"])
    if not any(rows.values()):  # a mistyped --runs must not replace the results with empty tables
        raise ConfigError(f"no held-out results under {str(runs_dir)!r}: nothing to report (is --runs right?)")
    # Rows are compared over the same seeds: a seed an interrupted ablation finished for some rows
    # only is left out of every row (and named), so no row averages over seeds another lacks.
    seed_sets = [{r["seed"] for r in results} for results in rows.values() if results]
    common = set.intersection(*seed_sets)
    left_out = sorted(set.union(*seed_sets) - common)
    rows = {row: [r for r in results if r["seed"] in common] for row, results in rows.items()}
    table: dict[str, dict] = {}
    for row, results in rows.items():
        if not results:
            continue
        entry = {"seeds": [r["seed"] for r in results], "overall": {}, "per_condition": {}}
        for metric in METRICS:
            entry["overall"][metric] = _stats([r["overall"][metric] for r in results])
            for cond in ALL_CONDITIONS:
                vals = [r["per_condition"].get(cond, {}).get(metric) for r in results]
                entry["per_condition"].setdefault(cond, {})[metric] = _stats(vals)
        table[row] = entry
    report = {"config": config_name, "heldout": {"drives": HELDOUT_DRIVES, "seconds": HELDOUT_SECONDS,
                                                 "seed_base": HELDOUT_SEED_BASE},
              "rows": table, "runs": {row: results for row, results in rows.items() if results},
              "train_seconds": {k: _stats(v) for k, v in timings.items()},
              "checks": _checks(table)}
    if left_out:
        report["seeds_left_out"] = left_out
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "ablation.json", json.dumps(report, indent=1) + "\n")
    write_text(out_dir / "ablation.md", _markdown(report))
    return report


def _checks(table: dict) -> dict:
    """The issue's expectations, computed from the numbers (never used to pick anything)."""
    out: dict = {}
    single = [r for r in ("camera-only", "radar-only") if r in table]
    if "attention" not in table or not single:
        return out

    def gains(fused: str, metric: str) -> dict:
        per = {}
        for scope in ("overall", *ALL_CONDITIONS):
            def get(row: str, scope: str = scope) -> dict:
                return table[row]["overall"] if scope == "overall" else table[row]["per_condition"].get(scope, {})

            att = get(fused).get(metric)
            singles = {r: get(r).get(metric) for r in single if get(r).get(metric)}
            if not att or not singles:
                continue
            best = max(singles, key=lambda r: singles[r]["mean"])
            gain = att["mean"] - singles[best]["mean"]
            spread = max(att["std"], singles[best]["std"])
            per[scope] = {"best_single": best, "gain": round(gain, 4), "spread": round(spread, 4),
                          "gain_exceeds_spread": bool(gain > spread)}
        return per

    for metric in METRICS:
        out[metric] = gains("attention", metric)
    if SENSORS_ONLY in table:  # the same model on camera + radar alone: what the two sensors add together
        out["sensors_only"] = {metric: gains(SENSORS_ONLY, metric) for metric in METRICS}
    masked = table.get("attention, radar masked")
    cam = table.get("camera-only")
    if masked and cam:
        out["radar_masked_minus_camera_only"] = {
            m: round(masked["overall"][m]["mean"] - cam["overall"][m]["mean"], 4)
            for m in METRICS if masked["overall"][m] and cam["overall"][m]}
    return out


def _cell(s: dict | None) -> str:
    if not s:
        return "-"
    return f"{s['mean']:.3f} ± {s['std']:.3f}"


def _markdown(report: dict) -> str:
    rows = report["rows"]
    held = report["heldout"]
    n_seeds = max((len(r["seeds"]) for r in rows.values()), default=0)
    lines = [
        "# Fusion ablation",
        "",
        f"Preset `{report['config']}`; held-out evaluation on {held['drives']} simulated drives of "
        f"{held['seconds']:g} s (seeds {held['seed_base']}..{held['seed_base'] + held['drives'] - 1}, never used "
        "in training or validation; each condition x scene type once). Cells: mean ± sample std over "
        f"training seeds (up to {n_seeds}); min/max in ablation.json. Scene AUC is the mean over the scene "
        "labels with both classes present; BEV IoU the mean over classes at threshold 0.5.",
        "",
        "Written by `python -m fusion_rt.export.ablation` (see export/ablation.py).",
        "",
        *([f"Seeds {report['seeds_left_out']} are left out: not every row has them yet (an unfinished "
           "ablation). Run it again to complete them.", ""] if report.get("seeds_left_out") else []),
        "## Overall",
        "",
        "| model | seeds | " + " | ".join(METRIC_TITLES[m] for m in METRICS) + " |",
        "|---|---|" + "---|" * len(METRICS),
    ]
    for row, entry in rows.items():
        lines.append(f"| {row} | {len(entry['seeds'])} | " + " | ".join(_cell(entry["overall"][m]) for m in METRICS)
                     + " |")
    for metric in METRICS:
        lines += ["", f"## {METRIC_TITLES[metric]} per condition", "",
                  "| model | " + " | ".join(ALL_CONDITIONS) + " |", "|---|" + "---|" * len(ALL_CONDITIONS)]
        for row, entry in rows.items():
            lines.append(f"| {row} | " + " | ".join(_cell(entry["per_condition"][c][metric]) for c in ALL_CONDITIONS)
                         + " |")
    checks = report["checks"]
    if checks:
        lines += ["", "## Attention vs the best single sensor", "",
                  "gain = attention mean - best single-sensor mean; spread = the larger of their seed std.", "",
                  "| metric | scope | best single | gain | spread | gain > spread |", "|---|---|---|---|---|---|"]
        for metric in METRICS:
            for scope, c in checks.get(metric, {}).items():
                lines.append(f"| {METRIC_TITLES[metric]} | {scope} | {c['best_single']} | {c['gain']:+.3f} | "
                             f"{c['spread']:.3f} | {'yes' if c['gain_exceeds_spread'] else 'no'} |")
        if "sensors_only" in checks:
            lines += ["", f"The same, for `{SENSORS_ONLY}` (camera and radar only) vs the best single sensor:", "",
                      "| metric | scope | best single | gain | spread | gain > spread |",
                      "|---|---|---|---|---|---|"]
            for metric in METRICS:
                for scope, c in checks["sensors_only"].get(metric, {}).items():
                    lines.append(f"| {METRIC_TITLES[metric]} | {scope} | {c['best_single']} | {c['gain']:+.3f} | "
                                 f"{c['spread']:.3f} | {'yes' if c['gain_exceeds_spread'] else 'no'} |")
        if "radar_masked_minus_camera_only" in checks:
            diff = checks["radar_masked_minus_camera_only"]
            lines += ["", "Attention with radar masked minus camera-only: " +
                      ", ".join(f"{METRIC_TITLES[m]} {v:+.3f}" for m, v in diff.items()) + "."]
    timing = report.get("train_seconds") or {}
    if timing:
        lines += ["", "Training time per run (data + training, s, this machine): " +
                  ", ".join(f"{k} {v['mean']:.0f}" for k, v in timing.items() if v) + "."]
    return "\n".join(lines) + "\n"


def _check_arguments(args: argparse.Namespace) -> tuple[int, ...]:
    """Every argument checked before any work (the held-out drives alone take a minute to record);
    returns the training seeds (none with --report-only, which trains nothing)."""
    from fusion_rt.export.train import check_threads
    from fusion_rt.outputs import check_outputs

    check_outputs(dirs={"--out": args.out})
    if args.report_only:  # --runs is only read
        return ()
    check_outputs(dirs={"--runs": args.runs})
    if args.threads is not None:
        check_threads(args.threads, "--threads")
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if not seeds:
        raise ConfigError(f"--seeds names no seed, got {args.seeds!r}; give comma-separated training seeds "
                          "such as 0,1,2")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise ConfigError(f"--seeds lists {', '.join(map(str, twice))} more than once, got {args.seeds!r}")
    for seed in seeds:  # every run's configuration, as run_ablation will build it
        for variant in VARIANTS:
            try:
                preset(args.config, head=variant.head, modalities=variant.modalities, seed=seed)
            except ConfigError as exc:
                raise ConfigError(f"--seeds {args.seeds!r}: {exc}") from None
    # as train() checks each run directory against the cache, for every run before the first
    cache = args.cache if args.cache is not None else default_cache_dir()
    check_outputs(dirs={"--cache": cache},
                  inputs=[args.runs / f"{variant.name}-s{seed}" for seed in seeds for variant in VARIANTS])
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusion_rt.export.ablation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, type=Path, help="folder of the run directories")
    parser.add_argument("--out", default=Path("export/results"), type=Path,
                        help="where ablation.json and ablation.md go (default export/results)")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated (default 0,1,2)")
    parser.add_argument("--config", default="ablation", choices=("quick", "ablation", "default"),
                        help="training preset (default ablation)")
    parser.add_argument("--cache", default=None, type=Path, help="simulation cache (default ~/.cache/fusion-rt)")
    parser.add_argument("--threads", default=None, type=int, help="torch threads, at most 1024 (default: all cores)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the tables from finished runs")
    args = parser.parse_args(argv)
    try:
        seeds = _check_arguments(args)
        if args.report_only:
            write_report(args.runs, args.out, args.config)
        else:
            run_ablation(args.runs, args.out, seeds, args.config, args.cache, args.threads)
    except FusionRTError as exc:
        print(f"ablation: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
