"""Benchmarks with the peers measured side by side, latency budgets, environment fingerprint (issue #7).

`fusion-rt bench` and the pytest-benchmark suites in bench/ call the same functions here:

- `BenchSession`: every alternative runs in one process, interleaved step by step (a fresh
  seeded random order each step), after warm-up, on the same inputs: a simulated drive's camera JPEG, radar
  tensor, map and text. Series (ms per sample):
  - the runtime (`FusionRuntime.push` of a camera frame, radar features cached):
    `camera_preprocess`, `camera_encoder`, `head`, `overhead`, `end_to_end` from its own timings;
  - each stage alone, through runners built with the runtime's options: `alone.camera_decode`
    (JPEG decode only), `alone.<m>_preprocess`, `alone.<m>_encoder`, `alone.head`;
  - `peer.raw_session`: the work of `end_to_end` without the runtime: camera preprocessing, then
    raw `session.run` of the camera encoder and the head with pre-built feeds;
  - `peer.all_encoders`: camera preprocessing, every encoder, the head, serially (a runtime that
    re-encodes every modality at each frame);
  - `model.ort_fp32`: raw `session.run` of every graph (the whole model, no preprocessing);
  - with an INT8 package: `int8.end_to_end` (its runtime) and `model.ort_int8`;
  - with the PyTorch peers (`[train]` extra): `model.torch_eager` (FP32, inference mode) and
    `model.torch_compile` where it compiles, on the same preprocessed inputs.
- Ratios of medians (`RATIO_DEFINITIONS`) and budget verdicts against `bench/budgets.toml`
  (`load_budgets`, `check_budgets`, `verdict_table`).
- `fingerprint()`: what the numbers were measured on; `histogram_png()`: latency histograms (OpenCV).

torch is never imported here: the PyTorch peers live in `fusion_rt.export.bench_peers` (host side),
loaded only when they are asked for.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fusion_rt.errors import BudgetError, ConfigError

if TYPE_CHECKING:
    from fusion_rt.package import ModelPackage

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "BUDGET_STAGES",
    "DEVICE_CLASSES",
    "DEFAULT_BUDGETS",
    "RATIO_DEFINITIONS",
    "StageBudget",
    "RatioBudget",
    "Budgets",
    "Verdict",
    "BenchConfig",
    "BenchSession",
    "BenchResult",
    "load_budgets",
    "check_budgets",
    "verdict_table",
    "fingerprint",
    "host_cpu",
    "int8_dot_product",
    "INT8_DOT_PRODUCTS",
    "detect_device_class",
    "int8_ratios_apply",
    "replay_realtime_factor",
    "histogram_png",
    "run_bench",
]

#: Stages with absolute budgets, per device class.
BUDGET_STAGES: tuple[str, ...] = ("camera_preprocess", "camera_encoder", "radar_encoder", "map_encoder",
                                  "text_encoder", "head", "end_to_end")
DEVICE_CLASSES: tuple[str, ...] = ("cpu-x86-2core", "jetson-orin", "desktop-gpu")
#: The budgets file of a source checkout (a wheel has no bench/: pass --budgets).
DEFAULT_BUDGETS = Path(__file__).resolve().parents[1] / "bench" / "budgets.toml"

#: ratio -> (numerator series, denominator series); a tuple is a sum of medians.
RATIO_DEFINITIONS: dict[str, tuple[str | tuple[str, ...], str | tuple[str, ...]]] = {
    "runtime_vs_raw_session": ("end_to_end", "peer.raw_session"),
    "critical_path_vs_all_encoders": ("end_to_end", "peer.all_encoders"),
    "critical_path_vs_stages_alone": ("end_to_end", ("alone.camera_preprocess", "alone.camera_encoder", "alone.head")),
    "int8_vs_fp32": ("int8.end_to_end", "end_to_end"),
    "int8_model_vs_fp32_model": ("model.ort_int8", "model.ort_fp32"),
    "fp32_vs_torch_eager": ("model.ort_fp32", "model.torch_eager"),
    "int8_vs_torch_eager": ("model.ort_int8", "model.torch_eager"),
    "fp32_vs_torch_compile": ("model.ort_fp32", "model.torch_compile"),
    "torch_compile_vs_torch_eager": ("model.torch_compile", "model.torch_eager"),
}
#: Every ratio a budget may name: the ratios of medians, the derived encoder shares and the replay
#: real-time factor. A name outside it (a typo) would never be measured, so it is refused.
BUDGETABLE_RATIOS: tuple[str, ...] = (*RATIO_DEFINITIONS, "non_camera_encoder_share",
                                      "critical_path_vs_all_encoders_ideal", "replay_realtime_factor")
_OPS = {"max": "<=", "below": "<", "min": ">="}
_WITHOUT_DOT = "ratios_without_int8_dot_product"
_MS = 1_000_000


# --------------------------------------------------------------------------------------------- budgets


@dataclass(frozen=True)
class StageBudget:
    """Absolute budget of one stage on one device class (ms)."""

    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class RatioBudget:
    """`value <op> limit`, op one of "<=" (max), "<" (below), ">=" (min)."""

    name: str
    op: str
    limit: float

    def holds(self, value: float) -> bool:
        return {"<=": value <= self.limit, "<": value < self.limit, ">=": value >= self.limit}[self.op]


@dataclass(frozen=True)
class Budgets:
    """The parsed budgets file."""

    path: Path
    ratios: dict[str, RatioBudget]  # enforced: a miss fails `--check` and the CI run
    devices: dict[str, dict[str, StageBudget]]
    descriptions: dict[str, str] = field(default_factory=dict)
    targets: dict[str, RatioBudget] = field(default_factory=dict)  # the project's goals: reported, never failing
    # [ratios_without_int8_dot_product]: what replaces a [ratios] entry on a CPU without int8 dot
    # products, where ONNX Runtime's INT8 kernels are no faster than FP32 and the speed gate keeps
    # every graph at FP32 compute (so "INT8 at least 10% faster" cannot hold; "no slower" can)
    without_int8_dot_product: dict[str, RatioBudget] = field(default_factory=dict)


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise BudgetError(f"{where} must be a positive number, got {value!r}")
    return float(value)


def load_budgets(path: str | os.PathLike | None = None) -> Budgets:
    """Parse and validate a budgets file (default: bench/budgets.toml); BudgetError names the bad value."""
    path = Path(path) if path is not None else DEFAULT_BUDGETS
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BudgetError(f"budgets file {str(path)!r} does not exist (pass --budgets FILE)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BudgetError(f"cannot read budgets file {str(path)!r}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise BudgetError(f"budgets file {str(path)!r} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"ratios", "targets", "devices", _WITHOUT_DOT})
    if unknown:
        raise BudgetError(f"{path}: unknown top-level tables {unknown}; expected [ratios], [targets], "
                          f"[{_WITHOUT_DOT}] and [devices.<class>]")
    ratios, targets, without_dot = (_ratio_table(path, data, table) for table in ("ratios", "targets", _WITHOUT_DOT))
    stray = sorted(set(without_dot) - set(ratios))
    if stray:  # it replaces [ratios] entries: one of its own would be enforced on those CPUs only
        raise BudgetError(f"{path}: {_WITHOUT_DOT} {stray} replace no [ratios] entry; it has {sorted(ratios)}")
    devices: dict[str, dict[str, StageBudget]] = {}
    descriptions: dict[str, str] = {}
    for device, table in _table(path, data, "devices").items():
        where = f"{path}: devices.{device}"
        if device not in DEVICE_CLASSES:  # a misspelt class would never be detected nor checked
            raise BudgetError(f"{where}: unknown device class {device!r}; known: {list(DEVICE_CLASSES)}")
        if not isinstance(table, dict):
            raise BudgetError(f"{where} must be a table, got {table!r}")
        extra = sorted(set(table) - {"description", "stages"})
        if extra:
            raise BudgetError(f"{where}: unknown keys {extra}; expected description and stages")
        descriptions[device] = str(table.get("description", ""))
        stages = {}
        for stage, spec in _table(path, table, "stages", f"devices.{device}.").items():
            if stage not in BUDGET_STAGES:
                raise BudgetError(f"{where}.stages.{stage}: unknown stage; expected one of {list(BUDGET_STAGES)}")
            if not isinstance(spec, dict) or not spec or set(spec) - {"p50", "p99"}:
                raise BudgetError(f"{where}.stages.{stage} must look like {{ p50 = 3.0, p99 = 6.0 }} (ms), "
                                  f"got {spec!r}")
            p50 = _number(spec["p50"], f"{where}.stages.{stage}.p50") if "p50" in spec else None
            p99 = _number(spec["p99"], f"{where}.stages.{stage}.p99") if "p99" in spec else None
            if p50 is not None and p99 is not None and p99 < p50:
                raise BudgetError(f"{where}.stages.{stage}: p99 {p99:g} ms is below p50 {p50:g} ms")
            stages[stage] = StageBudget(p50, p99)
        devices[device] = stages
    return Budgets(path=path, ratios=ratios, devices=devices, descriptions=descriptions, targets=targets,
                   without_int8_dot_product=without_dot)


def _table(path: Path, data: dict, name: str, where: str = "") -> dict:
    """data[name] (empty when absent), which must be a TOML table."""
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise BudgetError(f"{path}: {where}{name} must be a table, got {table!r}")
    return table


def _ratio_table(path: Path, data: dict, table: str) -> dict[str, RatioBudget]:
    out = {}
    for name, spec in _table(path, data, table).items():
        where = f"{path}: {table}.{name}"
        if name not in BUDGETABLE_RATIOS:
            raise BudgetError(f"{where}: unknown ratio {name!r} (it would never be measured); known: "
                              f"{list(BUDGETABLE_RATIOS)}")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in _OPS:
            raise BudgetError(f"{where} must be one of {{ max = x }}, {{ below = x }}, {{ min = x }}, got {spec!r}")
        (key, value), = spec.items()
        out[name] = RatioBudget(name, _OPS[key], _number(value, f"{where}.{key}"))
    return out


@dataclass(frozen=True)
class Verdict:
    """One budget against its measurement. `by`: how far past the limit (ratio units or ms; 0 when met)."""

    name: str  # "ratio:<name>", "target:<name>" or "<device>:<stage>.p50"
    measured: float | None
    op: str
    limit: float
    ok: bool | None  # None: not measured in this run

    @property
    def is_target(self) -> bool:
        """A goal from [targets]: reported, but a miss fails nothing."""
        return self.name.startswith("target:")

    @property
    def by(self) -> float:
        if self.ok is not False or self.measured is None:
            return 0.0
        return abs(self.measured - self.limit)

    @property
    def by_pct(self) -> float:
        return 100.0 * self.by / self.limit

    @classmethod
    def from_dict(cls, d: Mapping) -> Verdict:
        return cls(d["budget"], d["measured"], d["op"], d["limit"], d["ok"])

    def to_dict(self) -> dict:
        return {"budget": self.name, "measured": self.measured, "op": self.op, "limit": self.limit, "ok": self.ok,
                "by": self.by, "by_pct": self.by_pct}


def check_budgets(budgets: Budgets, stages: Mapping[str, Mapping[str, float]], ratios: Mapping[str, float],
                  device_class: str | None, ratios_only: bool = False, int8_dot_product: bool = True) -> list[Verdict]:
    """Verdicts of every ratio budget, and of `device_class`'s stage budgets unless `ratios_only`.

    A stage budget reads the series of the same name (the runtime's own timing), else `alone.<stage>`.
    Without `int8_dot_product` (INT8 timed on a CPU that lacks them, see `int8_ratios_apply`) the
    budgets' `without_int8_dot_product` entries replace their [ratios] namesakes.
    """
    verdicts = []
    enforced = budgets.ratios if int8_dot_product else {**budgets.ratios, **budgets.without_int8_dot_product}
    for kind, table in (("ratio", enforced), ("target", budgets.targets)):
        for name, budget in table.items():
            value = ratios.get(name)
            verdicts.append(Verdict(f"{kind}:{name}", value, budget.op, budget.limit,
                                    None if value is None else budget.holds(value)))
    if ratios_only or device_class is None:
        return verdicts
    if device_class not in budgets.devices:
        raise BudgetError(f"device class {device_class!r} has no budgets in {budgets.path}; "
                          f"it has {sorted(budgets.devices)}")
    for stage, budget in budgets.devices[device_class].items():
        series = stages.get(stage) or stages.get(f"alone.{stage}")
        for stat, limit in (("p50", budget.p50_ms), ("p99", budget.p99_ms)):
            if limit is None:
                continue
            value = None if series is None else series[stat]
            verdicts.append(Verdict(f"{device_class}:{stage}.{stat}", value, "<=", limit,
                                    None if value is None else value <= limit))
    return verdicts


def _input_sizes(package: ModelPackage, graph: str) -> list[list[int | None]]:
    """A graph's input shapes with every dynamic axis as None, whatever its name ('batch', 's77')."""
    return [[d if isinstance(d, int) else None for d in t.shape] for t in package.graphs[graph].inputs]


def verdict_table(verdicts: Sequence[Verdict], targets: bool = False) -> str:
    """Plain-text table of the missed budgets (or, with `targets`, the missed targets) and by how
    much ('' when none missed)."""
    missed = [v for v in verdicts if v.ok is False and v.is_target == targets]
    if not missed:
        return ""
    rows = [("budget", "measured", "limit", "missed by")]
    for v in missed:
        unit = " ms" if v.name.endswith((".p50", ".p99")) else ""
        digits = 3  # more where 3 would print a miss as the limit itself (0.25045 vs 0.25: "missed by 0.000")
        while digits < 6 and round(v.measured, digits) == round(v.limit, digits):
            digits += 1
        pct = f"{v.by_pct:.0f}" if v.by_pct >= 1 else f"{v.by_pct:.1g}"
        rows.append((v.name, f"{v.measured:.{digits}f}{unit}", f"{v.op} {v.limit:g}{unit}",
                     f"{v.by:.{digits}f}{unit} ({pct}%)"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


# ----------------------------------------------------------------------------------------- fingerprint


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


_CPU_ID_KEYS = ("cpu family", "model", "stepping", "CPU implementer", "CPU part")  # x86, then ARM


def _cpuinfo() -> dict:
    info: dict = {"model": platform.processor() or None, "flags": [], "id": None}
    ids: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware") and not info.get("model_name"):
            info["model_name"] = value.strip()
        elif key in ("flags", "Features") and not info["flags"]:
            info["flags"] = sorted(value.split())
        elif key in _CPU_ID_KEYS and key not in ids:
            ids[key] = value.strip()  # tells CPU generations apart where the model name is generic
    info["model"] = info.pop("model_name", None) or info["model"]
    info["id"] = ", ".join(f"{k} {v}" for k, v in ids.items()) or None
    return info


#: CPU flags (/proc/cpuinfo) of the int8 dot-product instructions that make ONNX Runtime's INT8
#: kernels faster than FP32, by name. Without one (x86 with AVX2 only) the u8 x s8 GEMM is no faster
#: than FP32's FMA: measured on an AMD EPYC (Zen 2, AVX2), the camera encoder ran 0.92-1.02x in INT8.
_INT8_DOT_FLAGS = (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"), ("asimddp", "ARM dot product"))
INT8_DOT_PRODUCTS = ", ".join(name for _, name in _INT8_DOT_FLAGS)


def int8_dot_product(flags: Sequence[str] | None = None) -> str | None:
    """The int8 dot-product instruction set of this CPU (or of `flags`), by name; None when it has
    none; "unknown" when its flags cannot be read (not Linux), which no check takes for "none"."""
    have = set(_cpuinfo()["flags"] if flags is None else flags)
    if not have:
        return "unknown"
    return next((name for flag, name in _INT8_DOT_FLAGS if flag in have), None)


def host_cpu() -> dict:
    """This CPU's model name and int8 dot-product support, for reports that time INT8 against FP32."""
    cpu = _cpuinfo()
    return {"cpu_model": cpu["model"], "cpu_id": cpu["id"], "machine": platform.machine(),
            "int8_dot_product": int8_dot_product(cpu["flags"])}


def _run_line(cmd: Sequence[str], timeout: float = 5.0) -> str | None:
    """First non-empty output line of a command, or None (missing binary, error, timeout)."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError:
        return None
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # tegrastats runs until stopped: take what it printed
        proc.kill()
        out, _ = proc.communicate()
    lines = [line.strip() for line in (out or "").splitlines() if line.strip()]
    return " | ".join(lines[:4]) if cmd[0] == "nvpmodel" else (lines[0] if lines else None)


def fingerprint(packages: Mapping[str, str | os.PathLike] | None = None) -> dict:
    """Where the numbers come from: CPU model and flags, cores, load, Python, library versions
    (read from the installed metadata, nothing imported), the sha256 of each package's manifest,
    and on a Jetson the power mode (`nvpmodel -q`) and one `tegrastats` line."""
    cpu = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    out = {
        "cpu_model": cpu["model"], "cpu_id": cpu["id"], "cpu_flags": cpu["flags"], "machine": platform.machine(),
        "int8_dot_product": int8_dot_product(cpu["flags"]),
        "cores": os.cpu_count(), "usable_cores": usable,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(), "platform": platform.platform(),
        "versions": {name: _version(dist) for name, dist in (
            ("fusion-rt", "fusion-rt"), ("numpy", "numpy"), ("onnxruntime", "onnxruntime"),
            ("onnxruntime-gpu", "onnxruntime-gpu"), ("torch", "torch"), ("tensorrt", "tensorrt"))},
        "packages": {},
        "jetson": None,
    }
    import cv2  # whichever OpenCV is installed (a wheel, JetPack's system build): the one in use

    out["versions"]["opencv"] = cv2.__version__
    for label, root in dict(packages or {}).items():
        manifest = Path(root) / "manifest.json"
        out["packages"][label] = {"path": str(root),
                                  "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()
                                  if manifest.is_file() else None}
    tegra = Path("/etc/nv_tegra_release")
    if tegra.is_file() or shutil.which("tegrastats") or shutil.which("nvpmodel"):
        release = tegra.read_text(errors="replace").splitlines()[0].strip() if tegra.is_file() else None
        out["jetson"] = {"l4t_release": release, "nvpmodel": _run_line(["nvpmodel", "-q"]),
                         "tegrastats": _run_line(["tegrastats", "--interval", "200"], timeout=1.5)}
    return out


def int8_ratios_apply(fp: Mapping, providers: Sequence[str] = ("cpu",)) -> bool:
    """False when the INT8 ratios of this run time ONNX Runtime's CPU kernels on a CPU without int8
    dot products (fingerprint `fp`), where the budgets' [ratios_without_int8_dot_product] apply."""
    return fp.get("int8_dot_product") is not None or tuple(providers)[:1] != ("cpu",)


def detect_device_class(fp: Mapping, threads: int = 2, providers: Sequence[str] = ("cpu",)) -> str | None:
    """The budgets' device class this machine and run belong to, when that is clear; else None.
    `cpu-x86-2core` was measured on 2 usable x86-64 cores with AVX-512 VNNI, 2 threads, the CPU
    provider: a run that differs in any of them is not held to its stage budgets."""
    if fp.get("jetson"):
        return "jetson-orin"
    if (fp.get("machine") in ("x86_64", "AMD64") and fp.get("usable_cores") == 2
            and "avx512_vnni" in (fp.get("cpu_flags") or ()) and threads == 2 and tuple(providers) == ("cpu",)):
        return "cpu-x86-2core"
    return None


# ----------------------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class BenchConfig:
    """What to measure. `steps`/`warmup` are interleaved rounds of every series."""

    package: Path
    int8_package: Path | None = None
    peers: bool = False  # PyTorch eager (+ torch.compile unless quick): needs the [train] extra
    run_dir: Path | None = None  # trained run for the PyTorch peer's weights (default: rebuilt from provenance)
    steps: int = 300
    warmup: int = 20
    threads: int = 2  # ONNX Runtime intra-op threads per session, and torch threads
    providers: tuple[str, ...] = ("cpu",)  # ONNX Runtime execution providers (fusion_rt.backends.PROVIDERS)
    quick: bool = False  # no torch.compile (its cold compile alone takes ~40 s here)
    seed: int = 2  # the simulated drive the inputs come from

    def __post_init__(self) -> None:
        for name, lo in (("steps", 5), ("warmup", 0), ("threads", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {value!r}")
        for name in ("package", "int8_package", "run_dir"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
                if not Path(value).is_dir():
                    raise ConfigError(f"{name.replace('_', ' ')} {str(value)!r} is not a directory")


@dataclass
class BenchResult:
    """Per-series percentiles (ms), ratios of medians, what was skipped and why."""

    stages: dict[str, dict[str, float]]
    ratios: dict[str, float]
    skipped: dict[str, str]
    info: dict
    samples_ms: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict:
        return {"stages": self.stages, "ratios": self.ratios, "skipped": self.skipped, **self.info}


def _stats(samples_ns: Sequence[int]) -> dict[str, float]:
    a = np.asarray(samples_ns, dtype=np.float64) / _MS
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"count": int(a.size), "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(a.max()),
            "mean": float(a.mean())}


def _inputs(package, seed: int) -> dict:
    """One message per modality from a simulated drive (the newest of each kind)."""
    from fusion_rt.messages import CameraFrame, MapRaster, RadarTensor, TextContext
    from fusion_rt.sim import DriveConfig, simulate_drive

    kinds = {"camera": CameraFrame, "radar": RadarTensor, "map": MapRaster, "text": TextContext}
    camera = package.rig.camera.intrinsics  # the runtime refuses images of another size
    drive = list(simulate_drive(DriveConfig(seconds=1.5, seed=seed, conditions="day",
                                            camera_size=(camera.width, camera.height))))
    messages = {m: next(x for x in reversed(drive) if isinstance(x, kinds[m])) for m in package.modalities}
    if "radar" in messages:  # a package's own radar (other bins or extents): the tensor resampled onto it
        messages["radar"] = _on_radar(messages["radar"], package.rig.radar)
        drive = [_on_radar(x, package.rig.radar) if isinstance(x, RadarTensor) else x for x in drive]
    return {"drive": drive, "messages": messages}


def _on_radar(msg, radar):
    """`msg` (a simulated RadarTensor, on the default rig's radar) on `radar`'s grid and extents: the
    same returns resampled, which times like that radar's tensor (timing only: the cells move)."""
    import dataclasses

    import cv2

    bins = (radar.num_range_bins, radar.num_azimuth_bins)
    extent = (radar.range_min_m, radar.range_max_m, -radar.azimuth_max_rad, radar.azimuth_max_rad)
    if msg.data.shape[1:] == bins and (msg.range_min_m, msg.range_max_m, msg.azimuth_min_rad,
                                       msg.azimuth_max_rad) == extent:
        return msg
    data = np.stack([cv2.resize(np.ascontiguousarray(c), bins[::-1], interpolation=cv2.INTER_AREA) for c in msg.data])
    return dataclasses.replace(msg, data=data.astype(np.float32, copy=False), range_min_m=extent[0],
                               range_max_m=extent[1], azimuth_min_rad=extent[2], azimuth_max_rad=extent[3])


class _Probe:
    """A named callable run once per step; it appends its own samples (ns) to the session's series."""

    def __init__(self, name: str, fn: Callable[[], None]) -> None:
        self.name = name
        self.fn = fn


class BenchSession:
    """Builds every alternative on the same inputs; `step()` runs each once (in a fresh random order).

    Use as a context manager: `with BenchSession(cfg) as s: s.warm_up(); for _ in ...: s.step()`,
    then `s.result()`. `step` is what pytest-benchmark times in bench/.
    """

    def __init__(self, config: BenchConfig, say: Callable[[str], None] | None = None) -> None:
        from fusion_rt.backends import OrtConfig, SessionFromOnnx, create_runner
        from fusion_rt.package import load_package
        from fusion_rt.runtime import NP_DTYPES, FusionRuntime

        self.config = config
        self._say = say or (lambda _m: None)
        self.skipped: dict[str, str] = {}
        self.series: dict[str, list[int]] = {}
        self._closers: list[Callable[[], None]] = []
        self._steps = 0
        self._order = random.Random(config.seed)  # probe order per step
        self._measured_from = 0  # steps before this one were warm-up
        self.info: dict = {}
        threads = config.threads
        ort_config = OrtConfig(threads=threads, providers=config.providers)
        self.package = load_package(config.package)
        pkg = self.package
        if "camera" not in pkg.modalities:
            raise ConfigError(f"package {pkg.name!r} has no camera modality; the benchmark triggers on camera frames")
        torch_model = self._torch_model() if config.peers else None  # fails early (missing extra) before building

        self.runtime = FusionRuntime(pkg, threads=threads, providers=config.providers)
        self._closers.append(self.runtime.close)
        rt = self.runtime
        self.preprocess = rt.preprocess
        data = _inputs(pkg, config.seed)
        for m in data["drive"]:
            rt.push(m)
        self.messages = data["messages"]
        self._stamp = data["drive"][-1].stamp_ns

        # one preallocated [1, ...] input per modality, filled by the real preprocessing
        self.buffers: dict[str, np.ndarray] = {}
        for m in pkg.modalities:
            first = self._preprocess_fn(m)(None)
            self.buffers[m] = np.empty((1, *first.shape), dtype=first.dtype)
            self._preprocess_fn(m)(self.buffers[m][0])
        # the stages alone: runners with the runtime's options, each with its own I/O binding
        self.alone = {g: create_runner(pkg, g, "onnxruntime", ort_config) for g in (*pkg.modalities, "head")}
        for runner in self.alone.values():
            runner.activate()
            self._closers.append(runner.deactivate)
        self.feeds = {m: {self.alone[m].input_names[0]: self.buffers[m]} for m in pkg.modalities}
        tokens = {m: self.alone[m].infer(self.feeds[m])[pkg.encoder(m).tokens_output].copy() for m in pkg.modalities}
        present_dtype = NP_DTYPES[next(t.dtype for t in pkg.head.inputs if t.name == "present")]
        self.head_feed = {f"{m}_tokens": tokens[m] for m in pkg.modalities}
        self.head_feed["present"] = np.ones((1, len(pkg.modalities)), dtype=present_dtype)
        # raw session.run peers: plain sessions (no I/O binding), the same session options
        self.raw = {g: SessionFromOnnx(pkg.graph_path(g), ort_config)() for g in (*pkg.modalities, "head")}
        self.raw_feeds = {m: {self.raw[m].get_inputs()[0].name: self.buffers[m]} for m in pkg.modalities}

        self.int8 = None
        if config.int8_package is not None:
            pkg8 = load_package(config.int8_package)
            if pkg8.precision != "int8" or pkg.precision == "int8":  # else int8_vs_fp32 measures something else
                raise ConfigError(f"--int8 {str(config.int8_package)!r} is a {pkg8.precision} package and --package "
                                  f"{str(config.package)!r} a {pkg.precision} one: --int8 takes the INT8 package "
                                  "(fusion-rt quantize --recipe ort-cpu-int8) of the FP32 one --package names")
            if pkg8.modalities != pkg.modalities:
                raise ConfigError(f"--int8 package modalities {list(pkg8.modalities)} differ from "
                                  f"{list(pkg.modalities)}")
            for g in (*pkg.modalities, "head"):  # the same inputs feed both: their shapes must agree
                if _input_sizes(pkg8, g) != _input_sizes(pkg, g):
                    raise ConfigError(f"--int8 package graph {g!r} takes inputs "
                                      f"{[list(t.shape) for t in pkg8.graphs[g].inputs]}, the FP32 package's "
                                      f"{[list(t.shape) for t in pkg.graphs[g].inputs]}: not the same model")
            self.int8 = FusionRuntime(pkg8, threads=threads, providers=config.providers)
            self._closers.append(self.int8.close)
            for m in data["drive"]:
                self.int8.push(m)
            self.raw8 = {g: SessionFromOnnx(pkg8.graph_path(g), ort_config)() for g in (*pkg.modalities, "head")}
            self.raw8_feeds = {m: {self.raw8[m].get_inputs()[0].name: self.buffers[m]} for m in pkg.modalities}
        else:
            self.skipped["int8"] = "no --int8 package given"
        if not config.peers:
            self.skipped["torch"] = "--peers not given"

        self.probes = self._probes(torch_model)
        self.info = {"package": {"path": str(pkg.root), "name": pkg.name, "precision": pkg.precision},
                     "int8_package": None if self.int8 is None else {
                         "path": str(self.int8.package.root), "name": self.int8.package.name,
                         "precision": self.int8.package.precision},
                     "threads": threads, "providers": list(ort_config.providers),
                     "inputs": {"camera_bytes": len(self.messages["camera"].data),
                                "camera_input": list(self.buffers["camera"].shape)},
                     **self.info}

    # ------------------------------------------------------------------------------------ inputs
    def _preprocess_fn(self, modality: str) -> Callable[[np.ndarray | None], np.ndarray]:
        from fusion_rt.preprocess import decode_camera, map_input, radar_tensor_input

        msg, cfg = self.messages[modality], self.preprocess
        if modality == "camera":
            return lambda out: decode_camera(msg, cfg, out=out)
        if modality == "radar":
            return lambda out: radar_tensor_input(msg, cfg, out=out)
        if modality == "map":
            return lambda out: map_input(msg, cfg, out=out)
        vocab = self.runtime.vocabulary
        return lambda out: vocab.text_input(msg, out=out)

    def _next_stamp(self, step_ns: int = 25 * _MS) -> int:
        self._stamp += step_ns
        return self._stamp

    # ------------------------------------------------------------------------------------ probes
    def _record(self, name: str, ns: int) -> None:
        self.series.setdefault(name, []).append(int(ns))

    def _push_step(self, rt, prefix: str) -> None:
        """Radar now (cached, off the critical path), map/text re-stamped now and then, a camera frame timed."""
        from dataclasses import replace

        msgs = self.messages
        stamp = self._next_stamp()
        if "radar" in msgs:
            rt.push(replace(msgs["radar"], stamp_ns=stamp))
        if self._steps % 10 == 0:
            for m in ("map", "text"):
                if m in msgs:
                    rt.push(replace(msgs[m], stamp_ns=stamp))
        outputs = rt.push(replace(msgs["camera"], stamp_ns=self._next_stamp()))
        if len(outputs) != 1:
            camera = rt.stats()["messages"]["camera"]
            raise ConfigError(f"package {rt.package.name!r} gave no output for the benchmark's camera frame: "
                              f"rejected {camera['reasons']['rejected']} {camera['last_detail']}")
        (out,) = outputs
        for stage, ms in out.timings_ms.items():
            self._record(f"{prefix}{stage}", round(ms * _MS))

    def _probes(self, torch_model) -> list[_Probe]:
        from fusion_rt.preprocess import decode_compressed_bgr

        pkg, clock = self.package, time.perf_counter_ns
        probes = [_Probe("runtime", lambda: self._push_step(self.runtime, ""))]
        camera = self.messages["camera"]
        fmt = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}.get(camera.encoding.lower())
        if fmt is not None:
            def decode() -> None:
                t = clock()
                decode_compressed_bgr(camera, fmt, self.preprocess)
                self._record("alone.camera_decode", clock() - t)
            probes.append(_Probe("decode", decode))

        def stages_alone() -> None:
            for m in pkg.modalities:
                fn, buf = self._preprocess_fn(m), self.buffers[m][0]
                t = clock()
                fn(buf)
                self._record(f"alone.{m}_preprocess", clock() - t)
            for m in pkg.modalities:
                t = clock()
                self.alone[m].infer(self.feeds[m])
                self._record(f"alone.{m}_encoder", clock() - t)
            t = clock()
            self.alone["head"].infer(self.head_feed)
            self._record("alone.head", clock() - t)
        probes.append(_Probe("alone", stages_alone))

        cam_pre = self._preprocess_fn("camera")
        cam_buf = self.buffers["camera"][0]

        def raw_session() -> None:
            t = clock()
            cam_pre(cam_buf)
            self.raw["camera"].run(None, self.raw_feeds["camera"])
            self.raw["head"].run(None, self.head_feed)
            self._record("peer.raw_session", clock() - t)
        probes.append(_Probe("raw_session", raw_session))

        def all_encoders() -> None:
            t = clock()
            cam_pre(cam_buf)
            for m in pkg.modalities:
                self.alone[m].infer(self.feeds[m])
            self.alone["head"].infer(self.head_feed)
            self._record("peer.all_encoders", clock() - t)
        probes.append(_Probe("all_encoders", all_encoders))

        def model(raw: dict, feeds: dict, name: str) -> Callable[[], None]:
            def run() -> None:
                t = clock()
                for m in pkg.modalities:
                    raw[m].run(None, feeds[m])
                raw["head"].run(None, self.head_feed)
                self._record(name, clock() - t)
            return run
        probes.append(_Probe("ort_fp32", model(self.raw, self.raw_feeds, "model.ort_fp32")))
        if self.int8 is not None:
            probes.append(_Probe("int8", lambda: self._push_step(self.int8, "int8.")))
            probes.append(_Probe("ort_int8", model(self.raw8, self.raw8_feeds, "model.ort_int8")))
        if torch_model is not None:
            probes += self._torch_probes(torch_model)
        return probes

    # ------------------------------------------------------------------------------------ torch peers
    def _torch_model(self):
        """The package's model in PyTorch (fusion_rt.export.bench_peers: the runtime never imports torch)."""
        from fusion_rt._optional import require_available

        # names the extra, without importing torch: load_torch_model sets OMP_WAIT_POLICY first
        require_available("torch", "the PyTorch peers (--peers)")
        from fusion_rt.export.bench_peers import load_torch_model

        model, info = load_torch_model(self.package, self.config.run_dir, self.config.threads)
        self.info.update(info)
        return model

    def _torch_probes(self, model) -> list[_Probe]:
        from fusion_rt.export.bench_peers import peer_runners

        runners, skipped = peer_runners(model, self.buffers, self.package.modalities, not self.config.quick,
                                         self._say)
        self.skipped.update(skipped)
        clock = time.perf_counter_ns

        def timed(name: str, run: Callable[[], None]) -> Callable[[], None]:
            def probe() -> None:
                t = clock()
                run()
                self._record(name, clock() - t)
            return probe

        return [_Probe(name.split(".", 1)[1], timed(name, run)) for name, run in runners.items()]

    # ------------------------------------------------------------------------------------ running
    def step(self) -> None:
        """One round: every probe once, in a fresh random order (seeded).

        Not a rotation: rotating keeps each probe's neighbour fixed, so the runtime always ran right
        after PyTorch eager and paid for the caches and threads it left behind (10% in the runtime's
        ratios); a random order gives every probe every predecessor equally often.
        """
        for probe in self._order.sample(self.probes, len(self.probes)):
            probe.fn()
        self._steps += 1

    def warm_up(self, rounds: int | None = None) -> None:
        """Run `rounds` steps (default config.warmup) and forget their samples."""
        for _ in range(self.config.warmup if rounds is None else rounds):
            self.step()
        self.series.clear()
        self._measured_from = self._steps

    def result(self) -> BenchResult:
        order = ("", "alone.", "peer.", "model.", "int8.")  # the runtime's own stages first

        def key(name: str) -> tuple[int, str]:
            prefix = name.split(".", 1)[0] + "." if "." in name else ""
            return (order.index(prefix) if prefix in order else len(order), "")

        names = sorted((n for n, v in self.series.items() if v), key=key)  # stable: keeps measuring order
        stages = {name: _stats(self.series[name]) for name in names}
        medians = {name: s["p50"] for name, s in stages.items()}

        def median(spec) -> float | None:
            names = (spec,) if isinstance(spec, str) else spec
            if any(n not in medians for n in names):
                return None
            return sum(medians[n] for n in names)

        ratios = {}
        for name, (num, den) in RATIO_DEFINITIONS.items():
            a, b = median(num), median(den)
            if a is not None and b:
                ratios[name] = a / b
        enc = [f"alone.{m}_encoder" for m in self.package.modalities]
        if all(e in medians for e in enc):
            other = sum(medians[e] for e in enc if e != "alone.camera_encoder")
            ratios["non_camera_encoder_share"] = other / medians["peer.all_encoders"]
            # what critical_path_vs_all_encoders should come to: 1 - that share
            ratios["critical_path_vs_all_encoders_ideal"] = 1.0 - ratios["non_camera_encoder_share"]
        samples = {name: np.asarray(v, dtype=np.float64) / _MS for name, v in self.series.items()}
        return BenchResult(stages=stages, ratios=ratios, skipped=dict(self.skipped),
                           info={**self.info, "steps": self._steps - self._measured_from}, samples_ms=samples)

    def close(self) -> None:
        for close in reversed(self._closers):
            close()
        self._closers.clear()

    def __enter__(self) -> BenchSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def replay_realtime_factor(package: str | os.PathLike, seconds: float = 10.0, threads: int = 2, seed: int = 7) -> dict:
    """Burst replay of a simulated drive of `seconds` through `package`: log seconds per wall second
    (the median of three runs after a warm-up run, which pays for the page cache and session set-up)."""
    from fusion_rt.replay import ReplayConfig, replay
    from fusion_rt.sim import DriveConfig
    from fusion_rt.sim.record import record_drive

    with tempfile.TemporaryDirectory(prefix="fusion-rt-bench-") as tmp:
        log = Path(tmp) / "drive.mcap"
        record_drive(DriveConfig(seconds=seconds, seed=seed, conditions="mixed"), log)
        config = ReplayConfig(mode="burst", threads=threads, keep_frames=False, worst_frames=0)
        rtfs = [replay(log, package, config).summary["realtime_factor"] for _ in range(4)][1:]
    return {"realtime_factor": statistics.median(rtfs), "runs": rtfs, "seconds": seconds, "package": str(package)}


# ----------------------------------------------------------------------------------------- histogram

#: Series drawn in the histogram, in this order, when measured.
HISTOGRAM_SERIES = ("end_to_end", "peer.raw_session", "peer.all_encoders", "int8.end_to_end", "model.ort_fp32",
                    "model.ort_int8", "model.torch_eager", "model.torch_compile")


def histogram_png(samples_ms: Mapping[str, np.ndarray], path: str | os.PathLike, title: str = "",
                  series: Sequence[str] = HISTOGRAM_SERIES, bins: int = 60) -> Path:
    """One latency histogram per series on a shared ms axis (p50 green, p99 red), drawn with OpenCV."""
    import cv2

    names = [s for s in series if s in samples_ms and len(samples_ms[s])]
    if not names:
        raise ConfigError("no samples to draw")
    left, right, row_h, top = 190, 30, 90, 40
    width = 960
    height = top + row_h * len(names) + 50
    img = np.full((height, width, 3), 255, np.uint8)
    hi = max(float(np.percentile(samples_ms[s], 99.5)) for s in names) * 1.1
    plot_w = width - left - right

    def x_of(ms: float) -> int:
        return left + int(round(min(ms, hi) / hi * plot_w))

    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, title[:110], (10, 25), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    edges = np.linspace(0.0, hi, bins + 1)
    for i, name in enumerate(names):
        a = samples_ms[name]
        y0 = top + i * row_h
        base = y0 + row_h - 15
        counts, _ = np.histogram(np.clip(a, 0, hi), bins=edges)
        scale = (row_h - 25) / max(1, counts.max())
        for j, c in enumerate(counts):
            if c:
                cv2.rectangle(img, (x_of(edges[j]), base - int(c * scale)), (x_of(edges[j + 1]) - 1, base),
                              (180, 130, 70), -1)
        cv2.line(img, (left, base), (width - right, base), (120, 120, 120), 1)
        p50, p99 = np.percentile(a, [50, 99])
        for value, color in ((p50, (40, 160, 40)), (p99, (40, 40, 220))):
            cv2.line(img, (x_of(value), y0 + 8), (x_of(value), base), color, 2)
        cv2.putText(img, name, (8, y0 + 35), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"p50 {p50:.2f}  p99 {p99:.2f} ms", (8, y0 + 55), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    axis_y = top + row_h * len(names) + 5
    step = _nice_step(hi / 8)
    tick = 0.0
    while tick <= hi:
        x = x_of(tick)
        cv2.line(img, (x, axis_y - 5), (x, axis_y), (0, 0, 0), 1)
        cv2.putText(img, f"{tick:g}", (x - 10, axis_y + 18), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        tick += step
    cv2.putText(img, "ms", (width - right - 10, axis_y + 38), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    from fusion_rt.outputs import atomic_output

    path = Path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix or ".png", img)
    except cv2.error as exc:
        raise ConfigError(f"cannot write the histogram to {str(path)!r}: {exc.err}") from exc
    if not ok:
        raise ConfigError(f"cannot write the histogram to {str(path)!r}: OpenCV could not encode it")
    with atomic_output(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return path


def _nice_step(raw: float) -> float:
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


# ----------------------------------------------------------------------------------------- one call


def unmeasured_budgets(verdicts: Sequence[Verdict], skipped: Mapping[str, str], peers: bool) -> dict[str, str]:
    """Enforced ratio budgets this run did not measure, each with why: a gate that passes them
    would pass what it never checked (`--check` fails on them)."""
    out = {}
    for v in verdicts:
        if v.ok is not None or v.is_target or not v.name.startswith("ratio:"):
            continue
        name = v.name.split(":", 1)[1]
        series = " ".join(str(s) for s in RATIO_DEFINITIONS.get(name, ()))
        if name in skipped:
            out[name] = skipped[name]
            continue
        why = []  # every missing side (int8_vs_torch_eager with --int8 but no --peers blamed the INT8 side)
        if "int8" in series and "int8" in skipped:
            why.append(skipped["int8"])
        if "torch" in series and not peers:
            why.append("--peers not given")
        else:  # each series' own reason (torch.compile skipped in quick mode, or failed)
            why += [skipped[str(s)] for s in RATIO_DEFINITIONS.get(name, ()) if str(s) in skipped]
        out[name] = "; ".join(dict.fromkeys(why)) or "not measured"
    return out


def run_bench(config: BenchConfig, budgets: Budgets | None, device_class: str | None = None,
              replay_seconds: float = 0.0, say: Callable[[str], None] | None = None) -> dict:
    """Measure (warm-up, then `config.steps` interleaved steps), check budgets; the JSON-ready report."""
    say = say or (lambda _m: None)
    packages = {"fp32": config.package, **({"int8": config.int8_package} if config.int8_package else {})}
    fp = fingerprint(packages)
    notes = []
    if device_class is None:
        device_class = detect_device_class(fp, config.threads, config.providers)
        if device_class is None:
            notes.append("no device class matches this machine and run (cpu-x86-2core: 2 usable x86-64 cores with "
                         "AVX-512 VNNI, --threads 2, the cpu provider): stage budgets not checked "
                         "(pass --device-class)")
        elif budgets is not None and device_class not in budgets.devices:
            notes.append(f"this machine looks like {device_class!r}, which has no stage budgets in {budgets.path}")
            device_class = None
    elif budgets is not None and device_class not in budgets.devices:
        raise BudgetError(f"device class {device_class!r} has no budgets in {budgets.path}; "
                          f"it has {sorted(budgets.devices)}")
    dot = int8_ratios_apply(fp, config.providers)
    # the enforced INT8 ratios that [ratios_without_int8_dot_product] replaces in this run
    relaxed = (sorted(budgets.without_int8_dot_product) if budgets is not None and config.int8_package and not dot
               else [])
    if config.int8_package and not dot:
        held = ("" if budgets is None else f", and [{_WITHOUT_DOT}] applies" if relaxed
                else f"; {budgets.path} has no [{_WITHOUT_DOT}], so [ratios] applies to them as it is")
        notes.append(f"this CPU ({fp['cpu_model']}) has no int8 dot-product instructions ({INT8_DOT_PRODUCTS}): "
                     "ONNX Runtime's INT8 kernels are no faster than FP32 on it, so the INT8 ratios speak of this "
                     f"CPU, not of the recipe{held}")
    with BenchSession(config, say=say) as session:
        say(f"warm-up: {config.warmup} steps")
        session.warm_up()
        say(f"measuring: {config.steps} interleaved steps of {len(session.probes)} series groups")
        for k in range(config.steps):
            session.step()
            if (k + 1) % max(1, config.steps // 5) == 0:
                say(f"  step {k + 1}/{config.steps}")
        result = session.result()
    if replay_seconds > 0:
        target = config.int8_package or config.package
        say(f"burst replay of a {replay_seconds:g} s simulated drive through {target}")
        rep = replay_realtime_factor(target, replay_seconds, config.threads)
        result.ratios["replay_realtime_factor"] = rep["realtime_factor"]
        result.info["replay"] = rep
    else:
        default = ", the --quick default" if config.quick else ""
        result.skipped["replay_realtime_factor"] = f"no replay (--replay-seconds 0{default})"
    verdicts = [] if budgets is None else check_budgets(budgets, result.stages, result.ratios, device_class,
                                                        int8_dot_product=dot)
    unmeasured = unmeasured_budgets(verdicts, result.skipped, config.peers)
    fp["load_average_after"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    report = {"fusion_rt_bench": 1, "device_class": device_class,
              "budgets_file": None if budgets is None else str(budgets.path),
              "config": {"steps": config.steps, "warmup": config.warmup, "threads": config.threads,
                         "quick": config.quick, "peers": config.peers},
              **result.to_dict(), "verdicts": [v.to_dict() for v in verdicts],
              "missed": sum(v.ok is False and not v.is_target for v in verdicts), "unmeasured": unmeasured,
              "targets_missed": sum(v.ok is False and v.is_target for v in verdicts), "notes": notes,
              "relaxed_int8_budgets": relaxed,
              "fingerprint": fp}
    report["_samples_ms"] = result.samples_ms  # for the histogram; dropped before JSON
    return report
