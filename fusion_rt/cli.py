"""`fusion-rt <verb>`: the command line. Each verb's docstring is its help text.

User errors (bad arguments, missing or broken files) end as one line on stderr and exit code 2,
never a traceback. Long work shows progress on stderr when it is a terminal. `--json` gives
machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fusion_rt import __version__
from fusion_rt.errors import ConfigError, FusionRTError

__all__ = ["main"]

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus a pointer to --help), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _verb(sub: argparse._SubParsersAction, name: str, func: Callable, **kw) -> argparse.ArgumentParser:
    """Register `func` as a verb; its docstring's first line is the summary, the rest the description."""
    doc = (func.__doc__ or "").strip()
    summary = doc.splitlines()[0] if doc else ""
    parser = sub.add_parser(name, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                            **kw)
    parser.set_defaults(func=func)
    return parser


def _camera_size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"camera size must look like 640x360, got {text!r}") from None


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _progress(total: float, description: str, quiet: bool):
    """A rich progress bar on stderr, live only when stderr is a terminal."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.1f}/{task.total:.0f} s"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=_stderr_console(), transient=True,
        disable=quiet or not sys.stderr.isatty(),
    )


# --------------------------------------------------------------------------------------------- verbs


def cmd_simulate(args: argparse.Namespace) -> int:
    """Simulate a drive and record it as an MCAP sensor log.

    The synthetic world renders the same scenes to every sensor: a JPEG camera
    (sensor_msgs/CompressedImage + CameraInfo, ~20 Hz), a radar range-azimuth tensor and
    CFAR detections (PointCloud2, ~20 Hz), a local map (nav_msgs/OccupancyGrid, ~1 Hz), scene
    context text (std_msgs/String, ~1 Hz) and ground truth per camera frame. Sensors run at
    their own rates with jitter, stamped in integer nanoseconds. The same arguments give a
    byte-identical file. Prints the drive's summary (add --json for JSON).

    example: fusion-rt simulate drive.mcap --seconds 60 --seed 1 --conditions mixed
    """
    from fusion_rt.sim import DriveConfig
    from fusion_rt.sim.record import record_drive

    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"output path {str(out)!r} is a directory; give a file name such as drive.mcap")
    if not out.parent.exists():
        raise ConfigError(f"output folder {str(out.parent)!r} does not exist")
    config = DriveConfig(seconds=args.seconds, seed=args.seed, conditions=args.conditions,
                         camera_size=args.camera_size, scene_type=args.scene_type, jpeg_quality=args.jpeg_quality)
    start = time.perf_counter()
    with _progress(config.seconds, "simulating", args.quiet or args.json) as progress:
        task = progress.add_task("simulating", total=config.seconds)
        first: list[int] = []

        def advance(stamp_ns: int) -> None:
            if not first:
                first.append(stamp_ns)
            progress.update(task, completed=min(config.seconds, (stamp_ns - first[0]) / 1e9))

        summary = record_drive(config, out, compression=args.compression, progress=advance)
    wall = time.perf_counter() - start
    result = {"log": str(out), "bytes": out.stat().st_size, "wall_s": round(wall, 2),
              "realtime_factor": round(summary.duration_s / wall, 2) if wall > 0 else None, **summary.to_dict()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_drive_summary(result)
    return 0


def _print_drive_summary(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{result['log']}[/bold]: {result['duration_s']:.1f} s of driving, "
                  f"{result['bytes'] / 1e6:.1f} MB, simulated in {result['wall_s']:.1f} s "
                  f"({result['realtime_factor']}x real time)")
    table = Table(title="messages", show_edge=False)
    table.add_column("type")
    table.add_column("count", justify="right")
    for kind, count in result["messages"].items():
        table.add_row(kind, str(count))
    console.print(table)
    frames = max(1, result["camera_frames"])
    conditions = ", ".join(f"{k} {100 * v / frames:.0f}%" for k, v in result["conditions"].items())
    scenes = ", ".join(f"{k} {100 * v / frames:.0f}%" for k, v in result["scene_types"].items())
    console.print(f"conditions: {conditions}")
    console.print(f"scene types: {scenes}")
    console.print("agents: " + ", ".join(f"{k} {v}" for k, v in result["agents"].items()))
    console.print("labels (share of frames): " + ", ".join(f"{k} {v:.2f}" for k, v in result["label_rate"].items()))
    console.print(f"radar detections per scan: {result['radar_detections_per_scan']}")
    seen = ", ".join(f"{k} {v:.0%}" for k, v in result["camera_sees_of_radar_visible"].items() if v is not None)
    console.print(f"camera sees, of the agents radar detects: {seen}")


def cmd_log_info(args: argparse.Namespace) -> int:
    """Describe a sensor log: topics, schemas, message counts, rates and time span.

    Like `ros2 bag info`. Reading is defensive: records that fail their CRC or parse are
    listed with their byte offsets, and a truncated file is described up to the cut.

    example: fusion-rt log info drive.mcap --json
    """
    from fusion_rt.logs import format_info, log_info

    info = log_info(args.file)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(format_info(info))
    return 0


# --------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fusion-rt",
        description="fusion-rt: train, export, quantize, run and replay multimodal sensor-fusion models "
        "(camera, radar, map, text) on edge hardware.",
        epilog="Run 'fusion-rt <verb> --help' for a verb's options.",
    )
    parser.add_argument("--version", action="version", version=f"fusion-rt {__version__}")
    sub = parser.add_subparsers(title="verbs", metavar="<verb>", parser_class=_Parser)

    from fusion_rt.sim import CONDITIONS, SCENE_TYPES

    p = _verb(sub, "simulate", cmd_simulate)
    p.add_argument("out", metavar="OUT.mcap", help="log file to write")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the drive in seconds (default 60)")
    p.add_argument("--seed", type=int, default=0, help="world seed: same seed, same bytes (default 0)")
    p.add_argument("--conditions", default="mixed", choices=(*CONDITIONS, "mixed"),
                   help="weather/light for the whole drive, or 'mixed' to change along it (default mixed)")
    p.add_argument("--scene-type", default=None, choices=SCENE_TYPES,
                   help="keep one scene type for the whole drive (default: several along the drive)")
    p.add_argument("--camera-size", type=_camera_size, default=(640, 360), metavar="WxH",
                   help="camera resolution (default 640x360)")
    p.add_argument("--jpeg-quality", type=int, default=85, help="JPEG quality 1-100 (default 85)")
    p.add_argument("--compression", default="zstd", choices=("zstd", "lz4", "none"),
                   help="MCAP chunk compression (default zstd)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    log = sub.add_parser("log", help="inspect sensor logs", description="Inspect sensor logs.")
    log_sub = log.add_subparsers(title="log verbs", metavar="<log verb>", parser_class=_Parser)
    log.set_defaults(func=lambda _args: log.print_help() or EXIT_USAGE)
    p = _verb(log_sub, "info", cmd_log_info)
    p.add_argument("file", metavar="FILE.mcap", help="log to describe")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except FusionRTError as exc:
        print(f"fusion-rt: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fusion-rt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
