"""Training, run directories, evaluation and their CLI verbs, on tiny simulated drives.

One `quick` training run (hermetic: its own simulation cache) is shared by the module; the
rest evaluates it on a short held-out drive, in-process and through `fusion-rt evaluate`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fusion_rt.errors import ConfigError, LogError
from fusion_rt.export.configs import (
    HELDOUT_SEED_BASE,
    PRESETS,
    DataConfig,
    DriveSpec,
    RunConfig,
    TrainConfig,
    plan_drives,
    preset,
)
from fusion_rt.export.data import SCENE_LABELS, Split, read_logs
from fusion_rt.messages import MODALITIES

from ..conftest import ROOT, run_cli

torch = pytest.importorskip("torch")

from fusion_rt.export.evaluate import RUN_FILES, evaluate_logs, load_run, predict, summarize  # noqa: E402
from fusion_rt.export.train import modality_dropout, pos_weights, train  # noqa: E402

pytestmark = pytest.mark.train

GROUP_KEYS = {"samples", "label_rate", "scene_auc", "scene_f1", "mean_scene_auc", "hazard_auc", "mean_scene_f1",
              "bev_iou", "mean_bev_iou"}
RESULT_KEYS = {"run", "logs", "head", "modalities", "dropped", "used", "read", "overall", "per_condition"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sim-cache")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, cache) -> tuple[Path, dict]:
    """The `quick` preset trained once (about a minute). One thread: robust on a shared machine, where
    two torch threads on two busy cores slow down by an order of magnitude (oversubscription)."""
    out = tmp_path_factory.mktemp("runs") / "quick"
    metrics = train(preset("quick", seed=0), out, cache_dir=cache, threads=1, quiet=True)
    return out, metrics


@pytest.fixture(scope="module")
def heldout_log(tmp_path_factory) -> Path:
    """A 3 s held-out drive (a seed never used in training), at night."""
    from fusion_rt.sim import DriveConfig
    from fusion_rt.sim.record import record_drive

    path = tmp_path_factory.mktemp("heldout") / "heldout.mcap"
    record_drive(DriveConfig(seconds=3.0, seed=HELDOUT_SEED_BASE + 999, conditions="night"), path)
    return path


# ------------------------------------------------------------------------------------ pure parts


def test_presets_use_disjoint_seeds_and_every_condition():
    heldout = {d.seed for d in plan_drives(16, HELDOUT_SEED_BASE, 8.0)}
    for name, config in PRESETS.items():
        train_seeds = {d.seed for d in config.data.train_drives}
        val_seeds = {d.seed for d in config.data.val_drives}
        assert not train_seeds & val_seeds and not (train_seeds | val_seeds) & heldout, name
        assert {d.conditions for d in config.data.train_drives} == {"day", "night", "fog", "rain"}, name
        assert {d.scene_type for d in config.data.train_drives} == {"urban", "highway", "school_zone",
                                                                   "construction"}, name
    # 16 drives of the Latin-square plan cover every (condition, scene type) pair once
    pairs = {(d.conditions, d.scene_type) for d in plan_drives(16, 0, 1.0)}
    assert len(pairs) == 16


def test_config_validation_names_the_value():
    drive = DriveSpec(seed=1, seconds=2.0, conditions="day", scene_type=None)
    with pytest.raises(ConfigError, match=r"share seeds \[1\]"):
        DataConfig(train_drives=(drive,), val_drives=(drive,))
    with pytest.raises(ConfigError, match="snow"):
        DriveSpec(seed=1, seconds=2.0, conditions="snow", scene_type=None)
    with pytest.raises(ConfigError, match="lidar"):
        preset("quick", modalities=("camera", "lidar"))
    with pytest.raises(ConfigError, match="'huge'"):
        preset("huge")
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="modality_dropout"):
        TrainConfig(modality_dropout=1.0)
    config = preset("quick", head="gated", modalities=("radar", "camera"), seed=3)
    assert config.modalities == ("camera", "radar")  # canonical order
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="model must map"):
        preset("quick", model={"camera": [48, 96]})
    old = config.to_dict()
    del old["model"]  # runs written before architectures were per preset
    assert RunConfig.from_dict(old).model == {}
    # a config.json of the wrong shape is a ConfigError naming what is wrong, never a TypeError
    for edit, needle in ((lambda d: d.update(modalities=None), "modalities must be a list"),
                         (lambda d: d.pop("head"), r"lacks \['head'\]"),
                         (lambda d: d["data"].update(camera_size=5), "malformed DataConfig"),
                         (lambda d: d["data"]["train_drives"][0].pop("seed"), "malformed DriveSpec"),
                         (lambda d: d.update(seed=2**70), r"seed must be an integer in \[0, 2\*\*63\)")):
        bad = json.loads(json.dumps(config.to_dict()))
        edit(bad)
        with pytest.raises(ConfigError, match=needle):
            RunConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="needs a DataConfig"):
        preset("quick", data=None)


def test_presets_name_their_architecture():
    """The shipped model's architecture is the default preset's; the ablation's is the compact one."""
    from fusion_rt.export.configs import DEPLOY_MODEL

    assert PRESETS["default"].model == DEPLOY_MODEL and PRESETS["ablation"].model == {}
    assert PRESETS["default"].model is not DEPLOY_MODEL  # a copy: a preset cannot change the constant


def test_modality_dropout_never_masks_everything():
    rng = np.random.default_rng(0)
    present = rng.random((2000, 4)) < 0.8
    present[:5] = False  # rows with nothing present stay empty
    keep = modality_dropout(present, 0.6, rng)
    assert not (keep & ~present).any()  # only masks, never adds
    has_any = present.any(axis=1)
    assert keep[has_any].any(axis=1).all()
    assert not keep[~has_any].any()
    assert 0.3 < keep[present].mean() < 0.5  # about 1 - p, plus the rescued rows
    np.testing.assert_array_equal(modality_dropout(present, 0.0, rng), present)
    again = modality_dropout(present, 0.6, np.random.default_rng(1))
    np.testing.assert_array_equal(again, modality_dropout(present, 0.6, np.random.default_rng(1)))


def test_modality_dropout_per_column_rates():
    """Context inputs (map, text) are masked at their own rate, the sensors at theirs."""
    rng = np.random.default_rng(0)
    present = np.ones((20000, 4), bool)
    keep = modality_dropout(present, np.array([0.1, 0.1, 0.6, 0.6]), rng)
    kept = keep.mean(axis=0)
    assert 0.87 < kept[0] < 0.92 and 0.87 < kept[1] < 0.92
    assert 0.37 < kept[2] < 0.43 and 0.37 < kept[3] < 0.43
    with pytest.raises(ConfigError, match="context_dropout"):
        TrainConfig(context_dropout=-0.1)


def test_pos_weights_from_label_frequencies():
    labels = np.zeros((100, 5), np.uint8)
    labels[:20, 0] = 1  # 20% -> 4
    labels[:, 1] = 1  # always -> clipped to 1 / max
    labels[:1, 2] = 1  # 1% -> 99, clipped to max
    bev = np.zeros((10, 4, 8, 8), np.uint8)
    bev[:, 0, :2, :2] = 1  # 4 / 64 -> sqrt(15)
    scene, bev_w = pos_weights(labels, bev, scene_max=10.0, bev_max=20.0)
    np.testing.assert_allclose(scene, [4.0, 1.0, 10.0, 1.0, 1.0], rtol=1e-6)  # never-seen classes: 1
    np.testing.assert_allclose(bev_w, [np.sqrt(15.0), 1.0, 1.0, 1.0], rtol=1e-6)


def test_read_logs_preprocesses_like_the_runtime(short_drive, tmp_path):
    from fusion_rt.logs import LogDataset
    from fusion_rt.preprocess import PreprocessConfig, decode_camera

    pre = PreprocessConfig()
    split, counts = read_logs([short_drive], pre, frame_stride=5)
    n = len(split)
    assert counts["frames"] >= 5 * (n - 1) and n >= 10
    assert split.camera.shape == (n, 3, 144, 256) and split.camera.dtype == np.float16
    assert split.radar.shape == (n, 2, 128, 64) and split.map.shape == (n, 5, 64, 64)
    assert split.labels.shape == (n, len(SCENE_LABELS)) and split.bev.shape == (n, 4, 64, 64)
    assert split.present[:, 0].all() and split.present[-1].all()
    first = next(iter(LogDataset(short_drive)))
    np.testing.assert_allclose(split.camera[0], decode_camera(first.camera, pre), atol=2e-3)
    assert split.stamp_ns[0] == first.stamp_ns
    # npz round trip without pickle
    split.save(tmp_path / "s.npz", extra=np.float64(2.5))
    back, extra = Split.load(tmp_path / "s.npz")
    assert float(extra["extra"]) == 2.5
    for name in ("camera", "radar", "map", "text", "present", "labels", "bev", "bev_known", "condition", "stamp_ns"):
        np.testing.assert_array_equal(getattr(back, name), getattr(split, name))
    # a damaged cache file is a typed error that says how to recover, not a zipfile traceback
    data = (tmp_path / "s.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="cut.npz is damaged.*delete it to rebuild"):
        Split.load(tmp_path / "cut.npz")


def test_log_without_ground_truth_is_refused(tmp_path):
    from fusion_rt.preprocess import PreprocessConfig

    path = _log_without_truth(tmp_path)
    with pytest.raises(LogError, match="no ground truth"):
        read_logs([path], PreprocessConfig())
    # model inputs only (export parity, calibration): every frame, unlabelled
    split, counts = read_logs([path], PreprocessConfig(), require_truth=False)
    assert len(split) == counts["no_ground_truth"] == counts["frames"] > 0
    assert (split.condition == "").all() and not split.labels.any() and split.bev.shape[1:] == (4, 64, 64)


def _log_without_truth(tmp_path: Path) -> Path:
    from fusion_rt.logs import LogWriter
    from fusion_rt.messages import GroundTruth
    from fusion_rt.sim import DriveConfig, simulate_drive

    path = tmp_path / "no_truth.mcap"
    with LogWriter(path) as writer:
        for msg in simulate_drive(DriveConfig(seconds=0.3, seed=7)):
            if not isinstance(msg, GroundTruth):
                writer.write(msg)
    return path


# -------------------------------------------------------------------------------- training run


def test_quick_run_learns_and_writes_a_complete_run(quick_run):
    out, metrics = quick_run
    for name in (*RUN_FILES, "train.log"):
        assert (out / name).is_file(), name
    curve = metrics["curve"]
    assert len(curve) == PRESETS["quick"].train.epochs
    assert curve[-1]["loss"] < 0.8 * curve[0]["loss"], curve
    overall = metrics["validation"]["overall"]
    assert GROUP_KEYS <= set(overall)
    assert overall["mean_scene_auc"] > 0.6, overall  # chance is 0.5
    config = json.loads((out / "config.json").read_text())
    for key in ("model", "preprocess", "rig", "run", "labels", "bev_classes"):
        assert key in config
    assert config["run"]["seed"] == 0 and config["run"]["head"] == "attention"
    assert [d["seed"] for d in config["run"]["data"]["train_drives"]]  # the drives are stated
    assert config["preprocess"]["radar_power_db_scale"] != 10.0  # fitted, not the default
    assert "epoch 6/6" in (out / "train.log").read_text()


def test_same_seed_same_weights(tmp_path, cache):
    """Determinism: a micro run (radar + text, 2 steps) twice with one seed gives identical bytes."""
    from fusion_rt.export.configs import TRAIN_SEED_BASE, VAL_SEED_BASE

    data = DataConfig(train_drives=plan_drives(1, TRAIN_SEED_BASE + 900, 1.0),
                      val_drives=plan_drives(1, VAL_SEED_BASE + 900, 1.0))
    config = RunConfig("micro", data, TrainConfig(epochs=1, batch_size=5), modalities=("radar", "text"), seed=4)
    from safetensors.numpy import load_file

    other = RunConfig("micro", data, TrainConfig(epochs=1, batch_size=5), modalities=("radar", "text"), seed=5)
    for name, cfg in (("a", config), ("b", config), ("c", other)):
        train(cfg, tmp_path / name, cache_dir=cache, threads=1, quiet=True)
    a, b, c = (load_file(str(tmp_path / n / "model.safetensors")) for n in "abc")
    assert a.keys() == b.keys() == c.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_architecture_overrides_reach_the_model_and_the_run(tmp_path, cache):
    """RunConfig.model sets the built encoders' and head's configs (others' entries are ignored),
    is recorded in config.json, and load_run rebuilds the same architecture from it."""
    from fusion_rt.export.configs import TRAIN_SEED_BASE, VAL_SEED_BASE

    data = DataConfig(train_drives=plan_drives(1, TRAIN_SEED_BASE + 901, 1.0),
                      val_drives=plan_drives(1, VAL_SEED_BASE + 901, 1.0))
    model = {"camera": {"stem_width": 8, "widths": [8, 16, 24], "depths": [0, 0, 1]},
             "attention": {"bev_queries": [4, 4], "num_layers": 1},
             "radar": {"no_such_field": 1}, "gated": {"no_such_field": 1}}  # not built: ignored
    config = RunConfig("micro", data, TrainConfig(epochs=1, batch_size=5), modalities=("camera", "text"),
                       model=model)
    train(config, tmp_path / "run", cache_dir=cache, threads=1, quiet=True)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["run"]["model"] == model
    assert recorded["model"]["encoders"]["camera"]["widths"] == [8, 16, 24]
    assert recorded["model"]["head_config"] == {"bev_queries": [4, 4], "num_layers": 1}
    run = load_run(tmp_path / "run")
    assert run.model.encoders["camera"].config.widths == (8, 16, 24)
    assert run.model.head.config.bev_queries == (4, 4) and len(run.model.head.blocks) == 1
    bad = RunConfig("micro", data, TrainConfig(epochs=1, batch_size=5), modalities=("camera", "text"),
                    model={"camera": {"width": 8}})
    with pytest.raises(ConfigError, match=r"encoders.camera has unknown fields \['width'\]"):
        train(bad, tmp_path / "bad", cache_dir=cache, threads=1, quiet=True)


def test_run_reloads_to_identical_outputs(quick_run, cache):
    """Weights come back through safetensors (no pickle) and reproduce the validation metrics."""
    from fusion_rt.export.data import load_data

    out, metrics = quick_run
    run = load_run(out)
    assert not run.model.training
    config = preset("quick")
    data = load_data(config.data, run.preprocess, cache)  # cached arrays, same preprocessing
    assert data.vocab.words == run.vocab.words
    pred = predict(run.model, data.val, run.vocab)
    again = summarize(data.val, pred, run.rig.class_names, run.modalities)
    assert again == json.loads(json.dumps(metrics["validation"]))
    pred2 = predict(load_run(out).model, data.val, run.vocab)
    np.testing.assert_array_equal(pred.scene, pred2.scene)


def test_an_incomplete_run_config_is_named(quick_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(quick_run[0], run)
    config = json.loads((run / "config.json").read_text())
    del config["rig"]
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"config.json lacks \['rig'\]"):
        load_run(run)


def test_an_interrupted_run_is_not_taken_for_a_finished_one(quick_run, tmp_path):
    """metrics.json is written last: a run directory without it (training interrupted in its final
    validation) is refused by load_run, so evaluate and export never package a half-finished run."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(quick_run[0], run)
    (run / "metrics.json").unlink()
    with pytest.raises(ConfigError, match="no metrics.json: not a finished training run"):
        load_run(run)


def test_ablation_report_refuses_what_it_cannot_read(tmp_path):
    from fusion_rt.export.ablation import main as ablation_main
    from fusion_rt.export.ablation import write_report

    with pytest.raises(ConfigError, match="no held-out results"):  # a mistyped --runs: nothing rewritten
        write_report(tmp_path / "no-such-runs", tmp_path / "results")
    assert not (tmp_path / "results").exists()
    damaged = tmp_path / "runs" / "attention-s0"
    damaged.mkdir(parents=True)
    (damaged / "heldout.json").write_text('{"row": "attention", "over')
    with pytest.raises(ConfigError, match="heldout.json.*delete it"):
        write_report(tmp_path / "runs", tmp_path / "results")
    assert ablation_main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "results"),
                          "--report-only"]) == 2


def test_ablation_rows_are_compared_over_the_same_seeds(tmp_path):
    """An unfinished ablation (attention has seed 0, radar-only seeds 0 and 1) reports both rows over
    seed 0 and names seed 1 as left out, instead of comparing means over different seed sets."""
    from fusion_rt.export.ablation import write_report

    def result(variant: str, seed: int, auc: float) -> None:
        run = tmp_path / "runs" / f"{variant}-s{seed}"
        run.mkdir(parents=True)
        overall = {"mean_scene_auc": auc, "hazard_auc": auc, "mean_bev_iou": 0.1}
        (run / "heldout.json").write_text(json.dumps({"seed": seed, "overall": overall, "per_condition": {}}))

    result("attention", 0, 0.90)
    result("radar-only", 0, 0.89)
    result("radar-only", 1, 0.70)
    report = write_report(tmp_path / "runs", tmp_path / "results")
    assert report["rows"]["attention"]["seeds"] == report["rows"]["radar-only"]["seeds"] == [0]
    assert report["seeds_left_out"] == [1]
    assert report["rows"]["radar-only"]["overall"]["mean_scene_auc"]["mean"] == 0.89
    assert "Seeds [1] are left out" in (tmp_path / "results" / "ablation.md").read_text()


def _micro(offset: int) -> RunConfig:
    """A run on two half-second drives, one epoch: seconds, not a minute."""
    from fusion_rt.export.configs import TRAIN_SEED_BASE, VAL_SEED_BASE

    data = DataConfig(train_drives=plan_drives(1, TRAIN_SEED_BASE + offset, 0.5),
                      val_drives=plan_drives(1, VAL_SEED_BASE + offset, 0.5), camera_size=(128, 72))
    return RunConfig("micro", data, TrainConfig(epochs=1, batch_size=5), modalities=("radar",))


def test_train_refuses_too_many_threads_before_creating_the_run(tmp_path):
    """threads=10**11 passed the positive check and overflowed in torch.set_num_threads: a
    ValueError traceback and a run directory holding train.log."""
    for threads in (10**11, 1025, 0, True):
        with pytest.raises(ConfigError, match=rf"threads must be an integer in \[1, 1024\], got {threads!r}"):
            train(_micro(910), tmp_path / "run", cache_dir=tmp_path / "cache", threads=threads, quiet=True)
        assert not (tmp_path / "run").exists()
    proc = run_cli("train", "--out", str(tmp_path / "run"), "--config", "quick", "--threads", "100000000000",
                   "--cache", str(tmp_path / "cache"))
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "100000000000" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("inside", [False, True])
def test_train_refuses_an_out_in_the_default_cache(tmp_path, monkeypatch, inside):
    """Without --cache the cache/output check was skipped: --out ~/.cache/fusion-rt trained a run
    into the cache folder (logs/ and arrays/ beside model.safetensors)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = tmp_path / "xdg" / "fusion-rt"
    cache.mkdir(parents=True)  # an existing, empty cache folder
    out = cache / "run" if inside else cache
    with pytest.raises(ConfigError, match="would overwrite"):
        train(_micro(911), out, threads=1, quiet=True)
    assert sorted(p.name for p in cache.iterdir()) == []


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--threads", "0"], r"--threads must be an integer in \[1, 1024\], got 0"),
        (["--threads", "100000000000"], r"got 100000000000"),
        (["--seeds", ""], r"--seeds names no seed, got ''"),
        (["--seeds", " , "], r"--seeds names no seed, got ' , '"),
        (["--seeds", "-1"], r"--seeds '-1': seed must be an integer in \[0, 2\*\*63\), got -1"),
        (["--seeds", "9223372036854775808"], r"got 9223372036854775808"),
        (["--seeds", "0,x"], r"--seeds must be comma-separated integers, got '0,x'"),
        (["--seeds", "0,1,0"], r"--seeds lists 0 more than once"),
        (["--runs", "{file}"], r"--runs '.*file' is a file"),
        (["--out", "{file}"], r"--out '.*file' is a file"),
        (["--out", "{tmp}/no/such/dir/x"], None),  # missing parents are created: accepted
        (["--cache", "{tmp}/runs"], r"--cache '.*runs' would overwrite"),
        (["--cache", "{tmp}/runs/camera-only-s0/cache"], r"--cache .* would overwrite"),
        (["--cache", "{tmp}/runs/cache"], None),  # beside the run directories: fine, as for train
    ],
)
def test_ablation_checks_its_arguments_before_any_work(tmp_path, monkeypatch, capsys, args, needle):
    """--threads 0, --seeds -1 and --runs FILE were refused only after a minute of recording held-out
    drives (--runs FILE as a FileExistsError traceback), and --seeds '' ended in 'no held-out results'."""
    from fusion_rt.export import ablation

    calls = []
    monkeypatch.setattr(ablation, "run_ablation", lambda *a, **k: calls.append(a))
    (tmp_path / "file").write_text("x")
    options = {"--runs": "{tmp}/runs", "--out": "{tmp}/out", "--config": "quick", "--cache": "{tmp}/cache",
               "--seeds": "0,1"}
    options.update(zip(args[::2], args[1::2], strict=True))
    argv = [x.format(tmp=tmp_path, file=tmp_path / "file") for kv in options.items() for x in kv]
    code = ablation.main(argv)
    err = capsys.readouterr().err
    if needle is None:
        assert code == 0 and len(calls) == 1, err
        return
    assert code == 2 and calls == [], err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ablation: error: "), err
    assert re.search(needle, lines[0]), lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


def test_ablation_passes_the_checked_seeds_on(tmp_path, monkeypatch):
    from fusion_rt.export import ablation

    calls = []
    monkeypatch.setattr(ablation, "run_ablation", lambda *a, **k: calls.append(a))
    assert ablation.main(["--runs", str(tmp_path / "r"), "--out", str(tmp_path / "o"), "--seeds", "2, 0,,5",
                          "--threads", "1", "--config", "quick"]) == 0
    assert calls == [(tmp_path / "r", tmp_path / "o", (2, 0, 5), "quick", None, 1)]


def test_evaluate_in_process_with_and_without_a_masked_sensor(quick_run, heldout_log):
    run = load_run(quick_run[0])
    full = evaluate_logs(run, [heldout_log])
    masked = evaluate_logs(run, [heldout_log], drop=["radar"])
    assert RESULT_KEYS <= set(full) and GROUP_KEYS <= set(full["overall"])
    assert set(full["per_condition"]) == {"night"}
    assert full["overall"]["samples"] == 60 and masked["dropped"] == ["radar"]
    assert masked["used"] == ["camera", "map", "text"]
    assert masked["overall"]["modality_share"]["scene"]["radar"] == 0.0
    assert full["overall"]["modality_share"]["scene"]["radar"] > 0.0
    with pytest.raises(ConfigError, match="every modality"):
        evaluate_logs(run, [heldout_log], drop=list(MODALITIES))


# ------------------------------------------------------------------------------------------ CLI


def test_evaluate_cli_writes_documented_json(quick_run, heldout_log, tmp_path):
    out = tmp_path / "eval.json"
    proc = run_cli("evaluate", str(quick_run[0]), "--log", str(heldout_log), "--drop", "camera", "--json",
                   str(out), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "scene labels" in proc.stdout and "BEV occupancy IoU" in proc.stdout
    result = json.loads(out.read_text())
    assert RESULT_KEYS <= set(result) and result["dropped"] == ["camera"]
    assert GROUP_KEYS <= set(result["per_condition"]["night"])


@pytest.mark.parametrize(
    "args, needle",
    [
        (["evaluate", "{tmp}/no_run", "--log", "{log}"], "does not exist"),
        (["evaluate", "{package}", "--log", "{log}"], "is a model package, not a training run"),
        (["evaluate", "{run}", "--log", "{log}", "--drop", "lidar"], "lidar"),
        (["evaluate", "{run}", "--log", "{tmp}/no_truth.mcap"], "no ground truth"),
        (["evaluate", "{run}", "--log", "{tmp}/missing.mcap"], "missing.mcap"),
        (["train", "--out", "{tmp}/r", "--modalities", "camera,lidar"], "lidar"),
        (["train", "--out", "{run}", "--config", "quick"], "not empty"),
        (["train", "--out", "{tmp}/r", "--config", "huge"], "huge"),
    ],
)
def test_bad_input_is_one_line_exit_2(quick_run, heldout_log, tmp_path, args, needle):
    _log_without_truth(tmp_path)
    fill = {"tmp": tmp_path, "run": quick_run[0], "log": heldout_log,
            "package": ROOT / "fusion_rt" / "packages" / "fusion-attention"}
    proc = run_cli(*[a.format(**fill) for a in args])
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_cli_parser_and_help_do_not_import_torch():
    script = textwrap.dedent(
        """
        import sys
        from fusion_rt.cli import build_parser
        build_parser()
        assert "torch" not in sys.modules
        print("NO-TORCH")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "NO-TORCH" in proc.stdout, proc.stderr
    help_text = run_cli("train", "--help")
    assert help_text.returncode == 0 and "--modalities" in help_text.stdout


def test_train_without_torch_is_one_line_exit_2(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch":
                    raise ImportError("blocked")
        sys.meta_path.insert(0, _Block())
        from fusion_rt.cli import main
        sys.exit(main(["train", "--out", {str(tmp_path / 'r')!r}, "--config", "quick"]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and 'fusion-rt[train]' in lines[0], proc.stderr


def test_a_run_directory_gets_its_missing_parents_like_every_output_folder(tmp_path):
    """export and quantize create an output folder's missing parents; train did not (it refused
    'runs/attn' without 'runs'). All three take the same rule now, and what cannot be created is
    still refused up front."""
    from fusion_rt.errors import OutputError
    from fusion_rt.export.train import check_out_dir

    check_out_dir(tmp_path / "runs" / "deeper" / "attn")  # nothing is created by the check itself
    assert not (tmp_path / "runs").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"run directory '.*attn' cannot be created: '.*file' is a file"):
        check_out_dir(tmp_path / "file" / "attn")


def test_a_run_can_train_for_another_camera_size(tmp_path, monkeypatch):
    """RunConfig.preprocess overrides what the data is preprocessed with (and so what the model is
    built for and the run's config.json says): e.g. a 288x512 camera input. Round-trips through JSON;
    a run without overrides reads back as before (no key), and a field the rig or the data decides
    is refused."""
    from fusion_rt.export import train as train_module

    config = preset("quick", preprocess={"camera_height": 288, "camera_width": 512})
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert "preprocess" not in preset("quick").to_dict()
    for bad in ({"radar_shape": [64, 32]}, {"radar_power_db_scale": 2.0}, {"camera_height": 3}):
        with pytest.raises(ConfigError):
            preset("quick", preprocess=bad)

    class Seen(Exception):
        pass

    def fake_load_data(data, base, *args, **kwargs):
        raise Seen(base.camera_shape)

    monkeypatch.setattr(train_module, "load_data", fake_load_data)
    with pytest.raises(Seen, match=r"\(3, 288, 512\)"):
        train(config, tmp_path / "run", cache_dir=tmp_path / "cache", threads=1, quiet=True)
