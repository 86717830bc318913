"""`python -m fusion_rt` is `fusion-rt`; `run` is the console script's entry point."""

import sys


def run() -> int:
    """`fusion_rt.cli.main`, with Ctrl-C while the CLI is still being imported one line too (exit 130)."""
    try:
        from fusion_rt.cli import main
    except KeyboardInterrupt:
        if sys.stderr is not None:
            print("fusion-rt: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
