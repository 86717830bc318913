"""The INT8 recipe's whole-model speedup against the size of the camera encoder (issue #4's 2x).

The shipped package's graphs run about 1.5x faster as `ort-cpu-int8` than in FP32, not 2x: its
camera encoder (144x256 input) is about half of the FP32 graph time and runs 2.2-3.1x faster in
INT8, while the head, radar, map and text graphs (~2.5 ms together) are small, dispatch-bound
graphs that INT8 hardly speeds up (the head keeps FP32 compute: INT8 slows it here). The 2x was
set on shared/BASELINE.md's prototype, whose camera encoder (256x512 input) was 81% of its time.

This suite measures that directly, on the code a user runs: it builds a second package that
differs from the shipped one only in its camera encoder, at 288x512 (16:9 like the simulator's
640x360 camera; 1.1x the pixels of the prototype's 256x512) with the shipped encoder's stages plus
one more stride-2 stage, so the head still gets its 9x16 = 144 camera tokens and every other graph
is the shipped one, byte for byte. Its weights are untrained (batch-norm statistics from real
frames); speed does not depend on their values, and its task metric means nothing, so no
mixed-precision rounds run. Both packages are quantized by `quantize_package` (`ort-cpu-int8`, one
simulated drive for calibration) and timed by `BenchSession`: `int8_model_vs_fp32_model` is the
ratio of medians of every graph run once per step (interleaved, same process) that
bench/test_bench_budgets.py checks for the shipped package.

Needs the [train] extra (torch) to export the variant; about 80 s. Not part of `make
bench-quick` (CI): it checks how the recipe scales, not a budget of the shipped package. Run:

    .venv/bin/pytest bench/test_bench_int8_scaling.py --benchmark-only -s
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fusion_rt.bench import BenchConfig, BenchSession
from fusion_rt.package import load_package, replace_graph
from fusion_rt.preprocess import PreprocessConfig

torch = pytest.importorskip("torch", reason="exporting the camera variant needs the [train] extra")

VARIANT_HW = (288, 512)  # 2x the shipped 144x256: one more stride-2 stage keeps the 9x16 token grid
BN_FRAMES = 64  # frames whose batch statistics the untrained variant's batch norms take


def _frames(log: Path, config: PreprocessConfig, count: int) -> np.ndarray:
    from fusion_rt.logs.dataset import LogDataset
    from fusion_rt.preprocess import decode_camera

    frames = [decode_camera(sample.camera, config) for sample, _ in zip(LogDataset(log), range(count), strict=False)]
    return np.stack(frames)


def camera_variant_package(shipped: Path, out: Path, log: Path) -> Path:
    """A copy of `shipped` whose camera encoder reads VARIANT_HW (untrained weights, batch-norm
    statistics from `log`'s frames) and gives the same token grid through one more stride-2 stage."""
    from fusion_rt.export.configs import DEPLOY_MODEL
    from fusion_rt.export.models.camera_encoder import CameraEncoder, CameraEncoderConfig
    from fusion_rt.export.onnx_export import export_encoder

    package = load_package(shipped)
    shipped_cfg = CameraEncoderConfig(**DEPLOY_MODEL["camera"])
    config = dataclasses.replace(shipped_cfg, widths=(*shipped_cfg.widths, shipped_cfg.widths[-1]),
                                 depths=(*shipped_cfg.depths, 0))
    height, width = VARIANT_HW
    variant_pre = dataclasses.replace(PreprocessConfig.from_dict(package.preprocess), camera_height=height,
                                      camera_width=width)
    torch.manual_seed(0)
    encoder = CameraEncoder(config, rig=package.rig, preprocess=variant_pre)
    assert encoder.num_tokens == package.graphs["camera"].outputs[0].shape[1]
    frames = torch.from_numpy(_frames(log, variant_pre, BN_FRAMES))
    encoder.train()
    with torch.no_grad():
        for batch in frames.split(16):
            encoder(batch)
    encoder.eval()

    shutil.copytree(shipped, out)
    export_encoder(encoder, "camera", frames[:1], out / package.graphs["camera"].file)
    replace_graph(out, "camera", variant_pre.to_dict())
    return out


def _int8_ratio(fp32: Path, int8: Path, steps: int) -> dict:
    config = BenchConfig(package=fp32, int8_package=int8, steps=steps, warmup=10)
    with BenchSession(config) as session:
        session.warm_up()
        for _ in range(steps):
            session.step()
        result = session.result()
    return {"int8_model_vs_fp32_model": result.ratios["int8_model_vs_fp32_model"],
            "fp32_ms": result.stages["model.ort_fp32"]["p50"], "int8_ms": result.stages["model.ort_int8"]["p50"],
            "int8_vs_fp32_end_to_end": result.ratios.get("int8_vs_fp32")}


def test_int8_speedup_grows_with_the_camera(benchmark, real_package_path, tmp_path_factory, bench_quick):
    from fusion_rt.calibration.quantize import quantize_package
    from fusion_rt.calibration.recipes import QuantizeConfig
    from fusion_rt.sim import DriveConfig
    from fusion_rt.sim.record import record_drive

    work = tmp_path_factory.mktemp("int8-scaling")
    log = work / "calibration.mcap"
    record_drive(DriveConfig(seconds=6.0, seed=11, conditions="mixed"), log)
    packages = {"shipped": Path(real_package_path)}
    packages["camera_288x512"] = camera_variant_package(packages["shipped"], work / "camera-variant", log)
    # No mixed-precision rounds: the variant's untrained camera makes its task metric meaningless.
    config = QuantizeConfig(recipe="ort-cpu-int8", samples=48, max_rounds=0, latency_iterations=5)
    int8 = {name: work / f"{name}-int8" for name in packages}
    for name, path in packages.items():
        quantize_package(path, int8[name], config, [log])
    steps = 60 if bench_quick else 200

    def measure() -> dict:
        return {name: _int8_ratio(packages[name], int8[name], steps) for name in packages}

    measured = benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(measured)
    print("\n" + json.dumps(measured, indent=1))
    shipped, variant = measured["shipped"], measured["camera_288x512"]
    # The variant's FP32 graphs are dominated by the bigger camera encoder ...
    assert variant["fp32_ms"] > 1.5 * shipped["fp32_ms"], measured
    # ... and INT8 pays off more on them: the mechanism behind the 2x of issue #4.
    assert variant["int8_model_vs_fp32_model"] < shipped["int8_model_vs_fp32_model"], measured
