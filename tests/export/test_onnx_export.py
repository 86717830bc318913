"""Export: a run becomes a package the runtime's loader accepts, with parity proven on real frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.train

from fusion_rt.errors import ConfigError  # noqa: E402
from fusion_rt.package import load_package  # noqa: E402

from ..conftest import copy_log, record_test_drive  # noqa: E402
from ._fixtures import write_random_run  # noqa: E402


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    """A run directory in the training format, with untrained weights (export does not care)."""
    return write_random_run(tmp_path_factory.mktemp("runs") / "random")


@pytest.fixture(scope="module")
def parity_log(tmp_path_factory):
    """2 s: a simulated drive's first map arrives after about a second (a 1 s drive has none)."""
    return record_test_drive(tmp_path_factory, "parity", 2.0, seed=77, conditions="fog")


@pytest.fixture(scope="module")
def package(random_run, parity_log, tmp_path_factory):
    from fusion_rt.export.onnx_export import export_run

    return export_run(random_run, tmp_path_factory.mktemp("pkg") / "pkg", parity_log=parity_log, samples=4)


def test_package_is_valid_and_complete(package):
    pkg = load_package(package)
    assert pkg.modalities == ("camera", "radar", "map", "text")
    assert set(pkg.graphs) == {"camera", "radar", "map", "text", "head"}
    assert pkg.head.inputs[-1].name == "present" and pkg.head.inputs[-1].dtype == "bool"
    assert [o.name for o in pkg.head.outputs] == ["scene_logits", "bev_logits", "modality_share"]
    for spec in pkg.graphs.values():
        assert spec.inputs[0].shape[0] == "batch"  # dynamic batch axis
        assert spec.opset >= 17
    manifest = pkg.manifest
    for key in ("preprocess", "vocabulary", "latency_budget_ms", "provenance", "outputs", "max_age_ns"):
        assert manifest[key], key
    assert manifest["outputs"]["bev_classes"] == ["car", "truck", "pedestrian", "cyclist"]


def test_graphs_carry_no_exporter_debug_info(package):
    """No stack traces with this machine's paths, no FX text: only the graph ships."""
    import onnx

    for path in sorted(package.glob("*.onnx")):
        model = onnx.load(str(path))
        assert not any(n.metadata_props or n.doc_string for n in model.graph.node), path.name
        assert b"stack_trace" not in path.read_bytes(), path.name


def test_parity_report_on_real_frames(package):
    report = json.loads((package / "parity.json").read_text())
    assert "parity.mcap" in report["source"]
    held = report["frames_holding"]
    assert held == {"camera": 4, "radar": 4, "map": 4, "text": 4}  # frames holding every sensor preferred
    for graph, outputs in report["graphs"].items():
        for name, stats in outputs.items():
            assert stats["max_rel"] <= 1e-4, (graph, name, stats)
            assert stats["cosine"] > 0.99999, (graph, name, stats)


def test_dynamic_batch_runs_in_onnxruntime(package):
    import onnxruntime as ort

    pkg = load_package(package)
    session = ort.InferenceSession(str(pkg.graph_path("radar")), providers=["CPUExecutionProvider"])
    shape = [d for d in pkg.graphs["radar"].inputs[0].shape[1:]]
    for batch in (1, 3):
        (tokens,) = session.run(None, {"radar": np.zeros((batch, *shape), np.float32)})
        assert tokens.shape[0] == batch


def test_parity_inputs_say_which_modalities_the_log_lacks(random_run, parity_log, tmp_path):
    """A camera-only log checks the other encoders on zero placeholders only: counted, not hidden."""
    from fusion_rt.export.evaluate import load_run
    from fusion_rt.export.onnx_export import _sample_inputs
    from fusion_rt.logs import LogReader, LogWriter
    from fusion_rt.messages import CameraFrame

    camera_only = tmp_path / "camera_only.mcap"
    with LogReader(parity_log) as reader, LogWriter(camera_only) as writer:
        for item in reader.messages():
            if isinstance(item.message, CameraFrame):
                writer.write(item.message)
    run = load_run(random_run)
    inputs, source, held = _sample_inputs(run, camera_only, 4)
    assert held == {"camera": 4, "radar": 0, "map": 0, "text": 0} and "camera_only.mcap" in source
    assert not inputs["radar"].any()  # the zero placeholder
    _, _, held_full = _sample_inputs(run, parity_log, 4)
    assert held_full["camera"] == 4 and held_full["radar"] >= 1


def test_export_refuses_non_empty_output(random_run, package):
    from fusion_rt.export.onnx_export import export_run

    with pytest.raises(ConfigError, match="not empty"):
        export_run(random_run, package)


def test_a_failed_export_leaves_the_previous_package(random_run, package, tmp_path):
    """--overwrite replaces a package only once the new one is complete: a parity log without camera
    frames fails (before any graph is exported), and the package it was to replace still loads."""
    import shutil

    from fusion_rt.errors import FusionRTError
    from fusion_rt.export.onnx_export import export_run
    from fusion_rt.logs import LogWriter
    from fusion_rt.messages import TextContext
    from fusion_rt.package import load_package

    old = tmp_path / "pkg"
    shutil.copytree(package, old)
    with LogWriter(tmp_path / "text_only.mcap") as writer:
        writer.write(TextContext(stamp_ns=1, text="school zone"))
    with pytest.raises(FusionRTError, match="no usable samples"):
        export_run(random_run, old, parity_log=tmp_path / "text_only.mcap", samples=4, overwrite=True)
    assert load_package(old).sha256 == load_package(package).sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg", "text_only.mcap"]  # no staging folder left
    with pytest.raises(ConfigError, match="would overwrite the input"):
        export_run(random_run, random_run.parent, overwrite=True)


def test_an_unusable_parity_log_or_name_is_refused_before_exporting(random_run, tmp_path, monkeypatch):
    """A parity log with no usable frame failed only after every graph was exported (~10 s); an empty
    --name became the default name; --samples without --parity-log was ignored."""
    from fusion_rt.cli import main
    from fusion_rt.errors import LogError
    from fusion_rt.export import onnx_export
    from fusion_rt.logs import LogWriter
    from fusion_rt.messages import TextContext

    def no_export(*_args, **_kwargs):
        raise AssertionError("a graph was exported before the parity log was read")

    monkeypatch.setattr(onnx_export, "_export_one", no_export)
    with LogWriter(tmp_path / "text_only.mcap") as writer:
        writer.write(TextContext(stamp_ns=1, text="school zone"))
    with pytest.raises(LogError, match="no usable samples"):
        onnx_export.export_run(random_run, tmp_path / "a", parity_log=tmp_path / "text_only.mcap", samples=4)
    with pytest.raises(ConfigError, match="the package name must be a non-empty string, got ''"):
        onnx_export.export_run(random_run, tmp_path / "b", name="")
    assert main(["export", str(random_run), "--out", str(tmp_path / "c"), "--samples", "4"]) == 2
    assert not any((tmp_path / d).exists() for d in "abc")


def test_parity_stats_detect_divergence():
    from fusion_rt.export.onnx_export import parity_stats

    ref = np.linspace(-1, 1, 100)
    assert parity_stats(ref, ref)["max_abs"] == 0.0
    bad = parity_stats(ref, ref + 0.01)
    assert bad["max_rel"] == pytest.approx(0.01) and bad["cosine"] < 1.0


def test_onnxruntime_fuses_the_attention_graphs(package, tmp_path):
    """GELU is written so ONNX Runtime fuses it (no Erf left), and the key mask is one shared
    score bias (no Expand per attention): the head is dispatch-bound, so node count is latency."""
    import onnx
    import onnxruntime as ort

    for graph in ("head", "text"):
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / f"{graph}.optimized.onnx")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        ort.InferenceSession(str(load_package(package).graph_path(graph)), options,
                             providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
        assert "Erf" not in ops and any(op in ("Gelu", "BiasGelu") for op in ops), (graph, ops)
        if graph == "head":
            assert ops.count("Expand") <= 2 and ops.count("Where") <= 5, ops  # null key + queries; 4 inputs + bias


def test_export_encoder_swaps_into_a_package(package, parity_log, tmp_path):
    """One encoder exported alone (a camera of another input size) is a graph the package contract
    accepts and matches PyTorch at any batch; an unknown modality is refused by name."""
    import dataclasses
    import shutil

    import onnxruntime as ort

    from fusion_rt.export.models.camera_encoder import CameraEncoder, CameraEncoderConfig
    from fusion_rt.export.onnx_export import ExportError, export_encoder
    from fusion_rt.package import replace_graph
    from fusion_rt.preprocess import PreprocessConfig

    pkg = load_package(package)
    pre = dataclasses.replace(PreprocessConfig.from_dict(pkg.preprocess), camera_height=288, camera_width=512)
    torch.manual_seed(1)
    encoder = CameraEncoder(CameraEncoderConfig(widths=(32, 48, 96, 96), depths=(0, 1, 1, 0)), rig=pkg.rig,
                            preprocess=pre).eval()
    assert encoder.num_tokens == pkg.graphs["camera"].outputs[0].shape[1]  # 9 x 16 tokens, as the head expects
    out = tmp_path / "pkg"
    shutil.copytree(package, out)
    example = torch.randn(1, *pre.camera_shape)
    assert export_encoder(encoder, "camera", example, out / "camera_encoder.onnx") == out / "camera_encoder.onnx"

    assert (out / "parity.json").is_file()
    swapped = replace_graph(out, "camera", pre.to_dict())
    assert swapped.graphs["camera"].inputs[0].shape == ("batch", 3, 288, 512)
    assert "parity" not in swapped.manifest and not (out / "parity.json").exists()  # it covered the old graph

    session = ort.InferenceSession(str(swapped.graph_path("camera")), providers=["CPUExecutionProvider"])
    batch = torch.randn(3, *pre.camera_shape)
    with torch.no_grad():
        expected = encoder(batch).numpy()
    (tokens,) = session.run(None, {"image": batch.numpy()})
    np.testing.assert_allclose(tokens, expected, rtol=1e-4, atol=1e-4)

    with pytest.raises(ExportError, match="'lidar'"):
        export_encoder(encoder, "lidar", example, tmp_path / "lidar.onnx")


def test_bench_peers_take_only_the_run_the_package_came_from(package, random_run, tmp_path):
    """`bench --peers --run` builds the PyTorch peers from the run's weights: a run of another
    architecture than the package's would compare two different networks, so it is refused."""
    import shutil

    from fusion_rt.errors import ConfigError
    from fusion_rt.export.bench_peers import load_torch_model

    model, info = load_torch_model(load_package(package), random_run, threads=1)
    assert "trained weights" in info["torch"]["weights"]
    other = tmp_path / "other"
    shutil.copytree(package, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["provenance"]["training_config"]["model"]["token_dim"] = 32
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"another architecture .*token_dim differ"):
        load_torch_model(load_package(other), random_run, threads=1)


def test_parity_that_is_not_finite_fails_the_export(random_run, parity_log, tmp_path, monkeypatch):
    # max_rel NaN (an output not finite in either run) passed `max_rel > rtol` and the export was written.
    from fusion_rt.export import onnx_export

    real = onnx_export._check_parity

    def with_nan(*args):
        report = real(*args)
        report["head"]["scene_logits"] = dict(report["head"]["scene_logits"], max_rel=float("nan"))
        return report

    monkeypatch.setattr(onnx_export, "_check_parity", with_nan)
    with pytest.raises(onnx_export.ExportError, match=r"head\.scene_logits: max_rel nan"):
        onnx_export.export_run(random_run, tmp_path / "pkg", parity_log=parity_log, samples=2)
    assert not (tmp_path / "pkg").exists()


def test_source_commit_is_fusion_rt_s_own(tmp_path, monkeypatch):
    # Installed into a virtualenv inside the user's own git project, `git rev-parse HEAD` from the
    # module's folder recorded that project's commit as the package's source commit.
    import subprocess

    from fusion_rt.export import onnx_export

    commit = onnx_export._source_commit()
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(onnx_export.__file__).parent).stdout.strip()
    assert commit is None or commit.removesuffix("-dirty") == head  # a checkout of fusion-rt: its HEAD
    user = tmp_path / "proj"
    site = user / ".venv" / "lib" / "python3.11" / "site-packages" / "fusion_rt" / "export"
    site.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(user)], check=True)
    subprocess.run(["git", "-C", str(user), "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q",
                    "--allow-empty", "-m", "user app"], check=True)
    monkeypatch.setattr(onnx_export, "__file__", str(site / "onnx_export.py"))
    assert onnx_export._source_commit() is None


@pytest.mark.parametrize("radar", ["detections_only", "every_third_scan"])
def test_evaluate_and_replay_of_the_package_agree(random_run, package, parity_log, tmp_path, radar):
    # evaluate read logs with LogDataset's ages (radar 100 ms) where the package fuses radar up to
    # 150 ms old, ignored radar detections that replay bins, and scored float16-rounded camera
    # inputs: the same model gave other metrics through `evaluate` than through replay.
    from fusion_rt.export.evaluate import evaluate_logs, load_run
    from fusion_rt.logs import open_log
    from fusion_rt.logs.topics import resolve_topics
    from fusion_rt.replay import ReplayConfig, replay

    with open_log(parity_log) as log:
        tensor_topic = resolve_topics(log.topics(), ("radar",)).topics["radar"]
    scans = []

    def kept(item) -> bool:
        if item.topic != tensor_topic:
            return True
        scans.append(item)
        return radar == "every_third_scan" and len(scans) % 3 == 0

    log = copy_log(parity_log, tmp_path / f"{radar}.mcap", kept)
    evaluated = evaluate_logs(load_run(random_run), [log])["overall"]
    replayed = replay(log, package, ReplayConfig(out=None)).summary["metrics"]["overall"]
    for label, auc in replayed["scene_auc"].items():
        assert evaluated["scene_auc"][label] == pytest.approx(auc, abs=2e-5), (label, evaluated["scene_auc"], replayed)


def test_evaluate_leaves_out_the_camera_frames_the_runtime_rejects(random_run, package, tmp_path):
    """An 800x600 drive for a 640x360 rig camera: replay rejects every frame, evaluate scored them all
    (so the two disagreed). evaluate now reads with the runtime's size rule, and refuses the log."""
    from fusion_rt.errors import LogError
    from fusion_rt.export.evaluate import evaluate_logs, load_run
    from fusion_rt.replay import ReplayConfig, replay
    from fusion_rt.sim import DriveConfig
    from fusion_rt.sim.record import record_drive

    wide = tmp_path / "wide.mcap"
    record_drive(DriveConfig(seconds=1.0, seed=3, camera_size=(800, 600)), wide)
    assert replay(wide, package, ReplayConfig(out=None)).summary["outputs"] == 0
    with pytest.raises(LogError, match=r"camera frames rejected \(camera image size 800x600 differs from the rig's "
                                       r"camera 640x360\)"):
        evaluate_logs(load_run(random_run), [wide])
