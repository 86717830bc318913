"""`fusion-rt quantize`: bad input ends as one line on stderr and exit code 2."""

from __future__ import annotations

import pytest

from ..conftest import run_cli


@pytest.mark.parametrize("case", ["recipe", "log", "package", "rounds", "method"])
def test_bad_input_is_one_line_exit_2(case, calib_package, calib_log, tmp_path):
    args = {"recipe": ["--recipe", "int4"], "log": ["--recipe", "fp16"], "package": ["--recipe", "fp16"],
            "rounds": ["--recipe", "fp16", "--max-rounds", "-1"],  # named as typed, not as the config field
            "method": ["--recipe", "fp16", "--method", "entropy"]}[case]  # was ignored
    pkg = str(tmp_path) if case == "package" else str(calib_package)
    log = str(tmp_path / "missing.mcap") if case == "log" else str(calib_log)
    result = run_cli("quantize", pkg, *args, "--calib", log, "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fusion-rt: error:")
    assert {"recipe": "int4", "log": "missing.mcap", "package": "manifest.json", "rounds": "--max-rounds must be",
            "method": "--method entropy calibrates the int8 recipes"}[case] in lines[0]


def test_a_folder_that_is_no_bag_is_one_line(calib_package, tmp_path):
    folder = tmp_path / "not_a_bag"
    folder.mkdir()
    result = run_cli("quantize", str(calib_package), "--recipe", "fp16", "--calib", str(folder),
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not_a_bag" in lines[0] and "ROS 2 bag" in lines[0]


def test_a_log_with_two_cameras_needs_topics(calib_package, calib_log, tmp_path):
    """Calibration resolves topics as replay does: two camera topics are refused (they used to be
    read as one stream, every frame of both), and --topics picks one."""
    from fusion_rt.logs import LogReader, LogWriter
    from fusion_rt.messages import CameraFrame

    two = tmp_path / "two_cameras.mcap"
    cameras = 0
    with LogReader(calib_log) as reader, LogWriter(two) as writer:
        for item in reader.messages():
            if isinstance(item.message, CameraFrame):
                cameras += 1
                writer.write(item.message, topic="/cam/a/image/compressed")
                writer.write(item.message, topic="/cam/b/image/compressed")
            else:
                writer.write(item.message, topic=item.topic)
    args = ("quantize", str(calib_package), "--recipe", "ort-cpu-int8", "--calib", str(two), "--samples", "8",
            "--max-rounds", "0", "--tolerance", "0.99", "--json")
    refused = run_cli(*args, "--out", str(tmp_path / "refused"))
    assert refused.returncode == 2 and "2 topics could be the camera" in refused.stderr, refused.stderr
    assert "--topics camera=/cam/a/image/compressed" in refused.stderr
    picked = run_cli(*args, "--out", str(tmp_path / "picked"), "--topics", "camera=/cam/a/image/compressed",
                     timeout=300)
    assert picked.returncode in (0, 1), picked.stderr
    assert f"calibration: 8 frames of {cameras} " in picked.stderr  # one camera's frames, not both


@pytest.mark.parametrize("recipe,rounds,says", [("ort-cpu-int8", 2, "after 1 mixed-precision round "),
                                                ("fp16", 0, "fp16 keeps ops FP32 for overflow")])
def test_a_missed_tolerance_says_what_ran(calib_package, calib_log, tmp_path, monkeypatch, capsys, recipe, rounds,
                                          says):
    # The warning claimed "--max-rounds" rounds whatever ran: fp16 runs none, int8 may stop early.
    from fusion_rt import cli
    from fusion_rt.calibration import quantize
    from fusion_rt.package import load_package

    acceptance = {"primary_metric": "mean_scene_auc", "fp32": 0.9, "new": 0.8, "relative_drop": 0.11,
                  "tolerance": 0.005, "size_ratio": 0.3, "speedup_median": 1.5, "worst_output_cosine": 0.99,
                  "outputs_finite": True}
    report = {"acceptance": acceptance, "mixed_precision": {"rounds": [{"round": r} for r in range(rounds)]}}
    monkeypatch.setattr(quantize, "quantize_package", lambda *a, **k: quantize.QuantizeResult(
        load_package(calib_package), report, within_tolerance=False))
    code = cli.main(["quantize", str(calib_package), "--recipe", recipe, "--calib", str(calib_log),
                     "--out", str(tmp_path / "out"), "--max-rounds", "4"])
    err = capsys.readouterr().err
    assert code == 1 and says in err and "4 mixed-precision" not in err


def test_an_onnxruntime_too_old_to_quantize_is_named(calib_package, calib_log, tmp_path, monkeypatch):
    """onnxruntime < 1.31 (the newest for Python 3.10 is 1.23) lacks the calibration cache API and fails
    on the head's shapes: quantize stopped deep inside with an ImportError traceback. It is refused
    up front, naming the version found and the one needed, before any log is read."""
    import onnxruntime

    from fusion_rt.calibration import QuantizeConfig, quantize_package
    from fusion_rt.errors import MissingExtraError

    monkeypatch.setattr(onnxruntime, "__version__", "1.23.2")
    with pytest.raises(MissingExtraError, match=r"'onnxruntime' 1\.23\.2 is too old .*>= 1\.31.*Python >= 3\.11"):
        quantize_package(calib_package, tmp_path / "out", QuantizeConfig(recipe="fp16"), [tmp_path / "unread.mcap"])
    assert not (tmp_path / "out").exists()


def test_a_graph_onnx_runtime_cannot_load_is_one_line(calib_package, calib_log, tmp_path):
    """A package that passes load_package but holds a graph ONNX Runtime refuses (here an op of a
    domain it lacks) ended quantize in an onnxruntime traceback; it is one line naming the graph."""
    import json
    import shutil

    import onnx

    from fusion_rt.package import describe_graph, write_manifest

    pkg = tmp_path / "pkg"
    shutil.copytree(calib_package, pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    spec = manifest["graphs"]["radar"]
    model = onnx.load(str(pkg / spec["file"]))
    node = model.graph.node[-1]
    node.output[0], out = "raw", node.output[0]
    model.graph.node.append(onnx.helper.make_node("Frobnicate", ["raw"], [out], domain="com.example.fusion"))
    model.opset_import.append(onnx.helper.make_opsetid("com.example.fusion", 1))
    onnx.save(model, str(pkg / spec["file"]))
    manifest["graphs"]["radar"] = describe_graph(pkg, spec["file"], "radar", "encoder", "radar").to_dict()
    manifest.pop("format_version")
    write_manifest(pkg, manifest)
    result = run_cli("quantize", str(pkg), "--recipe", "fp16", "--calib", str(calib_log), "--samples", "8",
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "radar" in lines[0] and "Frobnicate" in lines[0], lines
    assert "calibration:" not in result.stderr  # refused before any log was read
    assert not (tmp_path / "out").exists()


def test_fp32_graphs_names_graphs_of_the_package(calib_package, calib_log, tmp_path):
    result = run_cli("quantize", str(calib_package), "--recipe", "ort-cpu-int8", "--calib", str(calib_log),
                     "--out", str(tmp_path / "out"), "--fp32-graphs", "head, lidar")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--fp32-graphs ['lidar'] are not graphs of" in lines[0], lines  # the option's name


def test_scene_labels_the_truth_lacks_are_named(calib_package, calib_log, tmp_path, capsys):
    """A package labelled in other words than the ground truth: its metric was 'not measured' with
    advice to pass a labelled log, which the log already was. The warning names the labels."""
    import json
    import shutil

    from fusion_rt.cli import main

    pkg = tmp_path / "pkg"
    shutil.copytree(calib_package, pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["outputs"]["scene_labels"] = [f"my_{name}" for name in manifest["outputs"]["scene_labels"]]
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    code = main(["quantize", str(pkg), "--recipe", "fp16", "--calib", str(calib_log), "--samples", "8",
                 "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "not measured: the package's scene labels ['my_car', 'my_truck'," in err, err
    assert "mean_scene_auc n/a -> n/a (n/a," in out, out  # was Python's "None -> None"
    assert "pass --eval-log" not in err
    report = json.loads((tmp_path / "out" / "quantization_report.json").read_text())
    assert report["evaluation"]["unscored"]["scene_labels"][0] == "my_car"


@pytest.mark.parametrize(("args", "says"), [
    (["--recipe", "fp16", "--no-speed-gate"], "--no-speed-gate turns off the speed gate of ort-cpu-int8; fp16 has"),
    (["--recipe", "tensorrt-int8", "--no-speed-gate"], "; tensorrt-int8 has none (leave --no-speed-gate out)"),
    (["--recipe", "ort-cpu-int8", "--fp32-graphs", ","], "--fp32-graphs names no graph: ','"),
])
def test_options_that_would_do_nothing_are_refused(calib_package, calib_log, tmp_path, args, says):
    """--no-speed-gate with a recipe that has no gate ran to completion, as did --fp32-graphs ','."""
    result = run_cli("quantize", str(calib_package), "--calib", str(calib_log), "--out", str(tmp_path / "out"), *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_quiet_keeps_the_warnings(calib_package, tmp_path_factory, tmp_path):
    """--quiet dropped the calibration coverage warning with the progress lines."""
    from tests.conftest import record_test_drive

    fog = record_test_drive(tmp_path_factory, "fog", 1.0, seed=11, conditions="fog")
    rain = record_test_drive(tmp_path_factory, "rain", 1.0, seed=12, conditions="rain")
    result = run_cli("quantize", str(calib_package), "--recipe", "ort-cpu-int8", "--calib", str(fog), "--eval-log",
                     str(rain), "--samples", "8", "--no-speed-gate", "--max-rounds", "0", "--quiet",
                     "--out", str(tmp_path / "out"))
    assert result.returncode in (0, 1), result.stderr
    lines = result.stderr.strip().splitlines()
    warning = "fusion-rt: warning: no labelled calibration frame has condition rain"
    assert any(line.startswith(warning) for line in lines), lines
    assert not any(line.startswith("calibrating") for line in lines)  # progress stays quiet
