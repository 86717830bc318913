"""The distribution: the wheel carries all three source trees, and the runtime needs no torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREES = {"fusion_rt": "fusion_rt", "export": "fusion_rt/export", "calibration": "fusion_rt/calibration"}

# Installs an import hook that makes torch and tensorrt (and their submodules) impossible to import.
_BLOCKER = textwrap.dedent(
    """
    import sys
    class _Block:
        BLOCKED = ("torch", "tensorrt", "torchvision", "tensorflow")
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None
    sys.meta_path.insert(0, _Block())
    """
)


def _expected_wheel_files() -> set[str]:
    expected = set()
    for folder, installed in TREES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder)
            if folder == "fusion_rt" and rel.parts[0] in ("export", "calibration"):
                continue
            expected.add(f"{installed}/{rel.as_posix()}")
    # the shipped model package, so `pip install fusion-rt` can run the demo and replay without a checkout
    for path in (ROOT / "fusion_rt" / "packages").rglob("*"):
        if path.is_file():
            expected.add(f"fusion_rt/{path.relative_to(ROOT / 'fusion_rt').as_posix()}")
    return expected


def test_wheel_contains_every_module(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in TREES:
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # every importable folder is listed (setuptools' deprecation warning for fusion_rt/packages otherwise)
    assert "absent from the `packages` configuration" not in proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("fusion_rt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _expected_wheel_files() - names
    assert not missing, f"wheel lacks {sorted(missing)}"
    assert not any(n.startswith(("tests/", "bench/", "export/", "calibration/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "fusion-rt = fusion_rt.__main__:run" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_export_and_calibration_install_under_fusion_rt():
    import fusion_rt.calibration
    import fusion_rt.export

    assert Path(fusion_rt.export.__file__).parent.name == "export"
    assert Path(fusion_rt.calibration.__file__).parent.name == "calibration"


def test_runtime_imports_and_runs_without_torch_or_tensorrt(tmp_path):
    log = tmp_path / "drive.mcap"
    script = _BLOCKER + textwrap.dedent(
        f"""
        import importlib, pkgutil, fusion_rt
        for mod in pkgutil.walk_packages(fusion_rt.__path__, "fusion_rt."):
            if mod.name.split(".")[1] in ("export", "calibration", "__main__"):
                continue
            importlib.import_module(mod.name)
        from fusion_rt.cli import main
        try:
            main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        assert main(["simulate", {str(log)!r}, "--seconds", "1", "--quiet", "--json"]) == 0
        assert main(["log", "info", {str(log)!r}]) == 0
        assert not any(m.split(".")[0] in ("torch", "tensorrt") for m in sys.modules)
        print("RUNTIME-OK")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RUNTIME-OK" in proc.stdout
    assert "simulate" in proc.stdout  # --help listed the verbs
    assert log.stat().st_size > 0


def test_missing_extra_names_the_extra():
    from fusion_rt._optional import require
    from fusion_rt.errors import FusionRTError, MissingExtraError

    try:
        require("tensorrt", purpose="building engines")
    except MissingExtraError as exc:
        assert isinstance(exc, FusionRTError)
        assert 'pip install "fusion-rt[tensorrt]"' in str(exc)
        assert "building engines" in str(exc)
    else:
        pytest.skip("tensorrt is installed here")


def test_cli_parser_loads_no_opencv():
    """`fusion-rt --help` (and every verb's parser) lists the simulator's conditions without
    loading its renderer: OpenCV costs ~0.2 s of every command's start-up otherwise."""
    script = textwrap.dedent(
        """
        import sys
        from fusion_rt.cli import build_parser
        build_parser()
        import fusion_rt.sim as sim
        assert "day" in sim.CONDITIONS
        assert "cv2" not in sys.modules, "building the parser imported cv2"
        assert sim.DriveConfig.__module__ == "fusion_rt.sim.drive"  # the lazy names still resolve
        print("PARSER-OK")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PARSER-OK" in proc.stdout


def test_version_requirements_parse_release_numbers():
    from fusion_rt._optional import _version, require_version
    from fusion_rt.errors import MissingExtraError

    assert _version("1.23.2") < _version("1.31") <= _version("1.31.0") < _version("1.32.0.dev20260101")
    assert _version("2.13.0+cpu") == (2, 13, 0) and _version("1.31rc1") == (1, 31)
    import numpy

    assert require_version("numpy", "1.0", "dev") is numpy
    with pytest.raises(MissingExtraError, match=r"'numpy' .* is too old for testing: it needs numpy >= 999\.0"):
        require_version("numpy", "999.0", "dev", "testing")
