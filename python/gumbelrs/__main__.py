"""The ``gumbelrs`` command (also ``python -m gumbelrs``)."""

from __future__ import annotations

import argparse
import sys

#: Subcommands that parse their own options (with the argument types of gumbelrs._args).
PASS_THROUGH = ("bench", "demo", "run", "estimators")


def _interruptible(command, argv: list[str]) -> int:
    """Runs ``command``; Ctrl-C exits with status 130 (its report folder is
    only ever replaced whole, so nothing half-written stays behind)."""
    try:
        return command(argv)
    except KeyboardInterrupt:
        print("interrupted: no report was written (finished work of `gumbelrs run` stays in "
              "its checkpoint)", file=sys.stderr)
        return 130


def _cuda_status(torch) -> str:
    import importlib.util

    if not torch.cuda.is_available():
        return "no CUDA device visible to torch (gumbelrs runs on the CPU)"
    devices = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    if importlib.util.find_spec("cupy") is None:
        extra = "cuda12" if (torch.version.cuda or "").startswith("12") else "cuda"
        return (f"{devices}; CuPy not installed, so CUDA tensors raise an error "
                f"(pip install 'gumbelrs[{extra}]')")
    from gumbelrs import cuda

    return f"{devices}; CuPy installed: CUDA tensors run the GPU kernels (checks: " \
        f"{cuda.get_checks()})"


def _version() -> str:
    """The installed distribution's version, without importing torch."""
    from importlib.metadata import version

    return version("gumbelrs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gumbelrs", description="Fast, reproducible Gumbel-Softmax for PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"gumbelrs {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run every application in a quick mode and write a report "
                                "(options: --help)", add_help=False)
    sub.add_parser("run", help="run one application at full size (options: --help)",
                   add_help=False)
    sub.add_parser("info", help="versions, SIMD level and threads")
    sub.add_parser("bench", help="time gumbelrs against torch side by side (options: --help)",
                   add_help=False)
    sub.add_parser("estimators", help="bias and variance of the gradient estimators "
                                      "(options: --help)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command not in PASS_THROUGH and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    import torch

    import gumbelrs

    if args.command == "demo":
        from gumbelrs.demo import main as demo

        return _interruptible(demo, rest)
    if args.command == "run":
        from gumbelrs.apps._cli import main as run

        return _interruptible(run, rest)
    if args.command == "bench":
        from gumbelrs.bench import main as bench

        bench(rest)
    elif args.command == "estimators":
        from gumbelrs._estimators_cli import main as estimators

        estimators(rest)
    else:
        print(f"gumbelrs {gumbelrs.__version__}")
        print(f"torch {torch.__version__}")
        from gumbelrs import _core

        pool = "torch's OpenMP threads" if _core.uses_openmp() else "own rayon pool"
        print(f"SIMD: {_core.simd_level()} (CPU supports {_core.simd_detected()})")
        print(f"threads: gumbelrs {gumbelrs.get_num_threads()} on {pool}, "
              f"torch {torch.get_num_threads()}")
        print(f"CUDA: {_cuda_status(torch)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
