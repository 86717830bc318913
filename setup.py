"""Package discovery for the three source trees (pyproject.toml holds the metadata).

`fusion_rt/` is the runtime; `export/` and `calibration/` are top-level folders that install as
`fusion_rt.export` and `fusion_rt.calibration` (DESIGN.md section 1). A non-editable wheel needs
every subpackage listed, so the list is computed here rather than written by hand.
"""

from setuptools import find_packages, setup

_TREES = {"fusion_rt": "fusion_rt", "fusion_rt.export": "export", "fusion_rt.calibration": "calibration"}


def _packages() -> tuple[list[str], dict[str, str]]:
    packages, package_dir = [], {}
    for name, folder in _TREES.items():
        packages.append(name)
        package_dir[name] = folder
        for sub in find_packages(folder):
            packages.append(f"{name}.{sub}")
    # Subpackages of fusion_rt that are not export/calibration are found under fusion_rt/ itself.
    # fusion_rt/packages holds data (the shipped model package, listed in package-data), not code;
    # named here because Python can import the folder and setuptools warns on every build otherwise.
    packages.append("fusion_rt.packages")
    return sorted(set(packages)), package_dir


_packages_list, _package_dir = _packages()
setup(packages=_packages_list, package_dir=_package_dir)
