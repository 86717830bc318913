"""Build TensorRT engines for every graph of a package (`fusion-rt build-engine`).

Follows the TensorRT 10/11 Python API:
- explicit quantization only: INT8 comes from the package's Q/DQ nodes (the `tensorrt-int8`
  recipe: symmetric int8 weights and activations); implicit calibrators are deprecated in 10.x and
  gone in 11;
- TensorRT 11 networks are always strongly typed, so precision follows the graph: an FP16 engine
  needs an FP16 package (`fusion-rt quantize --recipe fp16`). On TensorRT 10 (JetPack 6 ships
  10.3) the FP16 builder flag is used. A package that is already Q/DQ (`tensorrt-int8`) builds
  only with `--precision int8-qdq`; `--precision fp32` turns TF32 off so FP32 layers compute in FP32;
- one optimization profile per graph for the dynamic batch axis (min 1, opt, max); with `--dla`
  the batch is fixed at 1, the runtime's (DLA has no dynamic shapes), and N must be below the DLA count;
- a timing cache reused across builds (faster rebuilds, consistent tactics), one file per TensorRT
  version and GPU since TensorRT refuses a cache made by another; a cache it refuses anyway (a
  `--timing-cache` file from elsewhere, a corrupt file) is reported and replaced by a fresh one;
- each engine is written as `engines/<graph>.engine` with `engines/<graph>.json` holding its
  metadata (TensorRT version, GPU name and compute capability, precision, DLA core, source graph
  sha256), which `fusion_rt.backends.tensorrt` checks before it deserializes anything.

TensorRT and the CUDA bindings are imported lazily; without them the build stops with one line
naming `pip install "fusion-rt[tensorrt]"`. `plan_network` and `profile_shapes` are pure and
tested without a GPU.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fusion_rt.errors import ConfigError, FusionRTError, OutputError
from fusion_rt.outputs import atomic_output
from fusion_rt.package import GraphSpec, ModelPackage, load_package, sha256_file, write_manifest

__all__ = ["BuildOptions", "NetworkPlan", "plan_network", "profile_shapes", "build_engines", "EngineBuildError",
           "PRECISIONS", "default_timing_cache", "check_dla_core", "attach_timing_cache", "save_timing_cache"]

PRECISIONS = ("fp32", "fp16", "int8-qdq")


class EngineBuildError(FusionRTError):
    """TensorRT could not parse a graph or build an engine."""


def default_timing_cache(tensorrt_version: str, gpu_name: str, compute_capability: tuple[int, int]) -> Path:
    """$FUSION_RT_TRT_TIMING_CACHE, else ~/.cache/fusion-rt/tensorrt/timing-<TensorRT>-sm<CC>-<GPU>.cache.

    TensorRT only uses a timing cache made by the same version on the same kind of device, so the
    default file is keyed by both and a cache of another version or GPU is never fed in.
    """
    env = os.environ.get("FUSION_RT_TRT_TIMING_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    version = re.sub(r"[^A-Za-z0-9.]+", "-", tensorrt_version.strip()).strip("-") or "unknown"
    gpu = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    major, minor = compute_capability
    return base / "fusion-rt" / "tensorrt" / f"timing-{version}-sm{major}{minor}-{gpu}.cache"


def attach_timing_cache(config, cache_bytes: bytes, source: Path, say: Callable[[str], None]) -> bytes:
    """Give the builder `config` the timing cache serialized in `cache_bytes` (b"": a fresh one).

    TensorRT refuses a cache made by another TensorRT version or GPU, or a corrupt one
    (`set_timing_cache` returns False, `create_timing_cache` may return None): the build log says
    so and the build goes on with a fresh cache, or without one if even that fails. Returns the
    bytes now in use (b"" when the stored cache was refused).
    """
    if cache_bytes:
        try:
            cache = config.create_timing_cache(cache_bytes)
        except Exception:  # the bindings' error on an unreadable blob: treated like a refused cache
            cache = None
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return cache_bytes
        say(f"timing cache {str(source)!r} is not usable here (made by another TensorRT version or GPU, or "
            "corrupt): starting a fresh one, saved in its place")
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        say("TensorRT could not create a timing cache: building without one")
    return b""


def save_timing_cache(path: Path, data: bytes, say: Callable[[str], None]) -> None:
    """Write the timing cache atomically (the old file or the new one, never half of one). A cache
    that cannot be written is reported, not fatal: no engine depends on it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            tmp.write_bytes(data)
    except (OSError, OutputError) as exc:
        say(f"timing cache not saved: {exc}")


def check_dla_core(core: int, available: int) -> None:
    """Refuse `--dla core` unless the builder (TensorRT and device) has that many DLA cores."""
    if not 0 <= core < available:
        fix = f"pass --dla 0..{available - 1}" if available else "build without --dla"
        raise ConfigError(f"--dla {core}: this device and TensorRT have {available} DLA core(s); {fix}")


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp16"  # fp32 | fp16 | int8-qdq (int8 needs a tensorrt-int8 package)
    opt_batch: int = 1  # the batch the runtime uses; tactics are timed for it
    max_batch: int = 8  # largest batch the engine accepts (optimization profile max)
    workspace_mb: int = 1024  # builder scratch memory; Jetson Orin Nano has 8 GB shared, keep it modest
    dla_core: int | None = None  # run on this DLA core (Jetson AGX/NX), GPU fallback for unsupported layers
    timing_cache: Path | None = None  # None: default_timing_cache(<TensorRT version and GPU>)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.opt_batch, int) or not isinstance(self.max_batch, int) \
                or not 1 <= self.opt_batch <= self.max_batch <= 1024:
            raise ConfigError(f"batch sizes must satisfy 1 <= opt ({self.opt_batch!r}) <= max ({self.max_batch!r}) "
                              "<= 1024")
        if not isinstance(self.workspace_mb, int) or self.workspace_mb < 16:
            raise ConfigError(f"workspace must be at least 16 MB, got {self.workspace_mb!r}")
        if self.dla_core is not None and (not isinstance(self.dla_core, int) or self.dla_core < 0):
            raise ConfigError(f"DLA core must be a non-negative integer, got {self.dla_core!r}")
        if self.dla_core is not None and self.precision == "fp32":
            raise ConfigError("DLA runs FP16 or INT8 only: pass --precision fp16 or int8-qdq with --dla")
        if self.dla_core is not None and self.opt_batch != 1:
            # DLA engines have no dynamic shapes ("the runtime dimensions must be the same as the
            # dimensions used for building"), and the runtime feeds one frame at a time
            raise ConfigError(f"--dla engines are built at the batch the runtime feeds, 1: --opt-batch "
                              f"{self.opt_batch} would give engines that refuse every frame")

    @property
    def batches(self) -> tuple[int, int, int]:
        """(min, opt, max) batch of the optimization profile. DLA does not support dynamic shapes
        (min, opt and max must be equal, or every layer falls back to the GPU), so a DLA build is
        fixed at opt_batch."""
        if self.dla_core is not None:
            return self.opt_batch, self.opt_batch, self.opt_batch
        return 1, self.opt_batch, self.max_batch


@dataclass(frozen=True)
class NetworkPlan:
    """How to create the network and which builder flags to set, for one TensorRT version."""

    strongly_typed: bool
    builder_flags: tuple[str, ...]  # names of trt.BuilderFlag members
    cleared_flags: tuple[str, ...] = ()  # trt.BuilderFlag members to clear where this TensorRT has them


def plan_network(tensorrt_version: str, precision: str, package_recipe: str, dla: bool = False) -> NetworkPlan:
    """Pure: the network mode and flags for building `precision` from a package made by `package_recipe`.

    `package_recipe` is the manifest's precision recipe name: "fp32", "fp16", "tensorrt-int8" or
    "ort-cpu-int8". Raises ConfigError, naming the command that fixes it, when the package cannot
    give that precision on this TensorRT.
    """
    try:
        major = int(tensorrt_version.split(".")[0])
    except ValueError:
        raise ConfigError(f"cannot read the TensorRT version {tensorrt_version!r}") from None
    if major < 10:
        raise ConfigError(f"TensorRT {tensorrt_version} is too old: fusion-rt needs TensorRT 10 or newer "
                          "(JetPack 6 ships 10.3)")
    if package_recipe == "ort-cpu-int8":
        raise ConfigError("this package was quantized for ONNX Runtime on CPU (uint8 activations); TensorRT needs "
                          "symmetric int8: fusion-rt quantize FP32_PKG --recipe tensorrt-int8 --calib LOG --out PKG")
    if package_recipe == "tensorrt-int8" and precision != "int8-qdq":
        # Q/DQ graphs are explicitly quantized: TensorRT 10 would build them weakly typed without the
        # INT8 flag, TensorRT 11 takes the precision from the graph; either way not a `precision` engine.
        raise ConfigError(f"--precision {precision}: this package is already INT8 Q/DQ (recipe tensorrt-int8); "
                          "build it with --precision int8-qdq")
    if precision == "int8-qdq" and package_recipe != "tensorrt-int8":
        raise ConfigError(f"--precision int8-qdq needs a Q/DQ package (recipe tensorrt-int8), this one is "
                          f"{package_recipe!r}: fusion-rt quantize PKG --recipe tensorrt-int8 --calib LOG --out PKG2")
    if precision == "fp32" and package_recipe != "fp32":
        raise ConfigError(f"--precision fp32 needs an FP32 package, this one is {package_recipe!r}")
    flags: list[str] = []
    if major >= 11:
        # Strongly typed always: the graph's own types decide. FP16 engines come from FP16 graphs.
        if precision == "fp16" and package_recipe != "fp16":
            raise ConfigError("TensorRT 11 builds strongly typed networks, so FP16 must be in the graph: "
                              "fusion-rt quantize PKG --recipe fp16 --calib LOG --out PKG_FP16, then build from it")
        strongly_typed = True
    elif precision == "int8-qdq":
        # TensorRT 10 explicit quantization, weakly typed: INT8 for Q/DQ-wrapped layers, FP16 for the rest.
        strongly_typed = False
        flags += ["INT8", "FP16"]
    elif precision == "fp16":
        # Every TensorRT 10 has BuilderFlag.FP16 (deprecated from 10.12, removed in 11, handled above).
        strongly_typed = package_recipe == "fp16"
        if not strongly_typed:
            flags.append("FP16")
    else:
        strongly_typed = False
    if dla:
        flags.append("GPU_FALLBACK")
    # TF32 is on by default: FP32 matmuls and convolutions would round their inputs to 10-bit mantissas.
    cleared = ("TF32",) if precision == "fp32" else ()
    return NetworkPlan(strongly_typed=strongly_typed, builder_flags=tuple(flags), cleared_flags=cleared)


def profile_shapes(spec: GraphSpec, opt_batch: int, max_batch: int,
                   min_batch: int = 1) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Pure: (min, opt, max) shapes per input, the named (dynamic) batch axis spanning min_batch..max_batch."""
    shapes = {}
    for tensor in spec.inputs:
        dims = []
        for i, d in enumerate(tensor.shape):
            if isinstance(d, int):
                dims.append((d, d, d))
            elif i == 0:
                dims.append((min_batch, opt_batch, max_batch))
            else:
                raise ConfigError(f"graph {spec.name!r} input {tensor.name!r} has a dynamic axis {d!r} at position "
                                  f"{i}; only the batch axis may be dynamic for TensorRT profiles")
        shapes[tensor.name] = tuple(tuple(axis[k] for axis in dims) for k in range(3))
    return shapes


def _recipe(package: ModelPackage) -> str:
    recipe = package.manifest.get("precision_recipe", {})
    return str(recipe.get("name", package.precision)) if isinstance(recipe, dict) else package.precision


def build_engines(package_dir: str | os.PathLike, out_dir: str | os.PathLike, options: BuildOptions,
                  progress: Callable[[str], None] | None = None, overwrite: bool = False) -> Path:
    """Copy the package to `out_dir` and build an engine per graph into `out_dir/engines/`."""
    from fusion_rt._optional import require
    from fusion_rt.backends.tensorrt import EngineMetadata, current_device, engine_paths
    from fusion_rt.outputs import check_outputs, staged_dir

    say = progress or (lambda _msg: None)
    package = load_package(package_dir)
    trt = require("tensorrt", "building TensorRT engines")
    try:
        device = current_device()
    except FusionRTError:
        raise
    except Exception as exc:  # the CUDA bindings raise their own errors when no GPU is visible
        raise EngineBuildError(f"no usable CUDA GPU for TensorRT: {exc}") from exc
    plan = plan_network(trt.__version__, options.precision, _recipe(package), dla=options.dla_core is not None)
    check_outputs(dirs={"--out": out_dir}, inputs=[package.root])
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except (RuntimeError, TypeError) as exc:  # "factory function returned nullptr" when CUDA cannot start
        raise EngineBuildError(f"TensorRT could not start a builder (CUDA initialisation failed?): {exc}") from exc
    min_batch, opt_batch, max_batch = options.batches
    if options.dla_core is not None:
        check_dla_core(options.dla_core, int(builder.num_DLA_cores))
        if options.max_batch != max_batch:
            say(f"DLA has no dynamic shapes: the batch is fixed at --opt-batch {opt_batch} "
                f"(--max-batch {options.max_batch} not used)")
    cache_path = options.timing_cache or default_timing_cache(trt.__version__, device.gpu_name,
                                                              device.compute_capability)
    try:
        cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    except OSError as exc:
        say(f"timing cache {str(cache_path)!r} not readable ({exc.strerror or exc}): starting a fresh one")
        cache_bytes = b""
    # Built beside out_dir and moved into place when every engine is built and the package validates.
    with staged_dir(out_dir, overwrite) as out:
        shutil.copytree(package.root, out, ignore=shutil.ignore_patterns("engines"), dirs_exist_ok=True)
        (out / "engines").mkdir()

        engines = {}
        for name, spec in package.graphs.items():
            say(f"building {name} ({options.precision}, {'strongly' if plan.strongly_typed else 'weakly'} typed)")
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
            network = builder.create_network(flags)
            parser = trt.OnnxParser(network, logger)
            if not parser.parse_from_file(str(package.graph_path(name))):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise EngineBuildError(f"TensorRT could not parse graph {name!r}: {errors}")
            config = builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
            for flag in plan.builder_flags:
                config.set_flag(getattr(trt.BuilderFlag, flag))
            for flag in plan.cleared_flags:
                if hasattr(trt.BuilderFlag, flag):
                    config.clear_flag(getattr(trt.BuilderFlag, flag))
            if options.dla_core is not None:
                config.default_device_type = trt.DeviceType.DLA
                config.DLA_core = options.dla_core
            profile = builder.create_optimization_profile()
            for tensor, (lo, opt, hi) in profile_shapes(spec, opt_batch, max_batch, min_batch).items():
                profile.set_shape(tensor, lo, opt, hi)
            config.add_optimization_profile(profile)
            cache_bytes = attach_timing_cache(config, cache_bytes, cache_path, say)
            serialized = builder.build_serialized_network(network, config)
            if serialized is None:
                raise EngineBuildError(f"TensorRT failed to build graph {name!r} (see the TensorRT log above)")
            timing = config.get_timing_cache()
            if timing is not None:  # saved after every graph: a later failure keeps the tactics timed so far
                cache_bytes = bytes(timing.serialize())
                save_timing_cache(cache_path, cache_bytes, say)
            engine_path, meta_path = engine_paths(out, name)
            engine_path.write_bytes(bytes(serialized))
            meta = EngineMetadata(tensorrt_version=trt.__version__, gpu_name=device.gpu_name,
                                  compute_capability=device.compute_capability, source_sha256=spec.sha256,
                                  precision=options.precision, dla_core=options.dla_core)
            meta_path.write_text(json.dumps(meta.to_dict(), indent=2, sort_keys=True) + "\n")
            engines[name] = {"file": str(engine_path.relative_to(out)), "sha256": sha256_file(engine_path),
                             "metadata": str(meta_path.relative_to(out))}
        manifest = {k: v for k, v in package.manifest.items() if k != "format_version"}
        manifest["engines"] = {"precision": options.precision, "opt_batch": opt_batch,
                               "max_batch": max_batch, "dla_core": options.dla_core, "graphs": engines}
        write_manifest(out, manifest)
        load_package(out)
    out = Path(out_dir)
    say(f"wrote {out}")
    return out
