"""One exception root for everything fusion-rt raises on purpose.

Every message names the offending value and, where there is one, the fix. Catch
`FusionRTError` to handle any of them; the CLI turns them into one line and a
non-zero exit.
"""

from __future__ import annotations

__all__ = [
    "FusionRTError",
    "ConfigError",
    "BudgetError",
    "OutputError",
    "MissingExtraError",
    "LogError",
    "NotALogError",
    "TruncatedLogError",
    "CorruptRecordError",
    "DecodeError",
    "PackageError",
    "ManifestError",
    "GraphMismatchError",
    "IntegrityError",
    "UnsafePathError",
]


class FusionRTError(Exception):
    """Root of every error fusion-rt raises on purpose."""


class ConfigError(FusionRTError, ValueError):
    """An argument or configuration value is out of range or malformed."""


#: Where an extra's pip wheel is not how most users get the module.
_INSTALL_NOTES = {
    "tensorrt": " (needs an NVIDIA GPU and driver; on Jetson it comes with JetPack 6: "
                "apt package python3-libnvinfer)",
}


class MissingExtraError(FusionRTError, ImportError):
    """An optional dependency is needed but not installed; the message names the extra."""

    def __init__(self, module: str, extra: str, purpose: str = "", found: str | None = None,
                 minimum: str | None = None, note: str = "") -> None:
        why = f" for {purpose}" if purpose else ""
        where = _INSTALL_NOTES.get(module.split(".")[0], "")
        if found is None:
            text = f"'{module}' is required{why} but is not installed: pip install \"fusion-rt[{extra}]\"{where}"
        else:  # installed, but older than the feature needs
            text = (f"'{module}' {found} is too old{why}: it needs {module} >= {minimum}{note}; "
                    f"pip install -U \"fusion-rt[{extra}]\"{where}")
        super().__init__(text)
        self.module = module
        self.extra = extra
        self.found = found
        self.minimum = minimum


class BudgetError(ConfigError):
    """A latency budgets file (bench/budgets.toml) is unreadable, or a budget is missing or malformed."""


class OutputError(ConfigError):
    """An output path cannot be written, or would overwrite one of the command's inputs."""


class LogError(FusionRTError):
    """A sensor log cannot be read or written."""


class NotALogError(LogError):
    """The file is not an MCAP log at all (bad magic, empty, a directory...)."""


class TruncatedLogError(LogError):
    """The log ends in the middle of a record; raised only where truncation cannot be tolerated."""


class CorruptRecordError(LogError):
    """A record failed its CRC, its decompression or its parse."""


class DecodeError(FusionRTError, ValueError):
    """A message payload cannot be decoded into a sensor message (bad JPEG, wrong size...)."""


class UnsupportedMessageError(DecodeError):
    """A well-formed message in a form fusion-rt does not read (a depth or YUV camera, h264, a rotated
    map, a cloud without radar fields, detections in a world-fixed frame): skipped like a damaged one,
    but nothing is wrong with the log. Readers report it as a `decode` issue whose detail starts with
    this class's name after the topic, which is how replay tells it from damage."""


class PackageError(FusionRTError):
    """A model package is missing, malformed, or does not match its manifest."""


class ManifestError(PackageError):
    """manifest.json is missing, not JSON, or a field is missing or malformed."""


class GraphMismatchError(PackageError):
    """A graph's inputs, outputs, dtypes, shapes or opset differ from what the manifest says."""


class IntegrityError(PackageError):
    """A file's sha256 differs from the manifest (tampered or stale), or a file is missing."""


class UnsafePathError(PackageError):
    """A path in the package (a graph, its external data) points outside the package directory."""
