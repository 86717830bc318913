"""The PyTorch peers of `fusion-rt bench` (host side, [train] extra): the package's model in
PyTorch eager FP32 and `torch.compile`, timed on the benchmark's own preprocessed inputs.

`fusion_rt.bench` (the runtime side, which never imports torch) calls `load_torch_model` and
`peer_runners` only when `--peers` is asked for.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping

import numpy as np

from fusion_rt._optional import require
from fusion_rt.errors import ConfigError

__all__ = ["load_torch_model", "peer_runners"]


def load_torch_model(package, run_dir: str | os.PathLike | None, threads: int) -> tuple[object, dict]:
    """The package's model in PyTorch, and what to record about it: trained weights from `run_dir`,
    else the architecture from the package's provenance with its initial weights (latency does not
    depend on weight values)."""
    # torch's OpenMP workers spin after each op and starve the ONNX Runtime runs interleaved with
    # them (measured here: runtime 11.6 -> 7.1 ms, torch eager 77 -> 23 ms median with PASSIVE).
    # libgomp reads the policy once, when torch loads: it only takes effect if torch is not loaded yet.
    torch_loaded = "torch" in sys.modules
    if not torch_loaded:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch = require("torch", "the PyTorch peers (--peers)")
    torch.set_num_threads(threads)
    policy = os.environ.get("OMP_WAIT_POLICY", "(unset)")
    info: dict = {"omp_wait_policy": policy if not torch_loaded else f"{policy} (torch was loaded before the bench)"}
    if run_dir is not None:
        require("safetensors", "the PyTorch peers (--peers)")
        from fusion_rt.export.evaluate import load_run

        run = load_run(run_dir)
        model, weights = run.model, f"trained weights from {run_dir}"
        provenance = package.manifest.get("provenance") or {}
        shipped = (provenance.get("training_config") or {}).get("model")
        if isinstance(shipped, dict):  # the peers must be the package's network, not another run's
            from fusion_rt.export.models import FusionModelConfig

            ours, theirs = FusionModelConfig.from_dict(shipped).to_dict(), model.config.to_dict()
            differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
            if differ:
                raise ConfigError(f"--run {str(run_dir)!r} trained another architecture than package "
                                  f"{package.name!r} ({', '.join(differ)} differ): pass the run it was exported "
                                  f"from (provenance.run: {provenance.get('run')!r}), or leave --run out")
    else:
        cfg = (package.manifest.get("provenance") or {}).get("training_config")
        if not isinstance(cfg, dict) or not all(k in cfg for k in ("model", "rig", "preprocess")):
            raise ConfigError(f"package {str(package.root)!r} has no provenance.training_config to rebuild the "
                              f"PyTorch model from; pass --run RUN_DIR (the trained run it was exported from)")
        from fusion_rt.export.models import FusionModel, FusionModelConfig
        from fusion_rt.preprocess import PreprocessConfig
        from fusion_rt.rig import Rig

        torch.manual_seed(0)
        model = FusionModel(FusionModelConfig.from_dict(cfg["model"]), rig=Rig.from_dict(cfg["rig"]),
                            preprocess=PreprocessConfig.from_dict(cfg["preprocess"])).eval()
        weights = "initial weights, architecture from the package's provenance.training_config (pass --run " \
                  "for the trained weights; latency does not depend on them)"
    if tuple(model.config.modalities) != tuple(package.modalities):
        raise ConfigError(f"the PyTorch model's modalities {list(model.config.modalities)} differ from the "
                          f"package's {list(package.modalities)}")
    info["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads(), "weights": weights}
    return model, info


def peer_runners(model, buffers: Mapping[str, np.ndarray], modalities: tuple[str, ...], compile_too: bool,
                  say: Callable[[str], None]) -> tuple[dict[str, Callable[[], None]], dict[str, str]]:
    """{series name: run once} for PyTorch eager (and torch.compile when `compile_too` and it
    compiles), reading `buffers` in place; and {series name: why skipped}."""
    import torch

    inputs = {m: torch.from_numpy(buffers[m]) for m in modalities}  # shares the buffers
    present = torch.ones((1, len(modalities)), dtype=torch.bool)

    def runner(fn) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                fn(inputs, present)
        return run

    runners, skipped = {"model.torch_eager": runner(model)}, {}
    if not compile_too:
        skipped["model.torch_compile"] = "quick mode (a cold torch.compile takes ~40 s on 2 cores)"
        return runners, skipped
    say("compiling the model with torch.compile (a minute or so)")
    try:
        compiled = torch.compile(model)
        with torch.inference_mode():
            compiled(inputs, present)  # the cold compile happens here
    except Exception as exc:  # inductor raises many types (no C compiler, unsupported op...): a skip, named
        skipped["model.torch_compile"] = f"torch.compile failed: {type(exc).__name__}: " \
                                         f"{str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        return runners, skipped
    runners["model.torch_compile"] = runner(compiled)
    return runners, skipped


