"""`irstd-reproduce`: run the paper's Table 1, 2, 3 or Fig. 6 (`make reproduce-*`), or evaluate its training-free
methods on SIRST (`classic`), and write the results beside the paper's. The work is `irstd.results`.

    irstd-reproduce table1|table2|table3|fig6 [--scale smoke|paper] [--seeds N] [OVERRIDE ...]
    irstd-reproduce table2 --scale paper --collect outputs/reproduce/table2/paper/<timestamp>
    irstd-reproduce fig6 --collect outputs/reproduce/fig6/smoke/<timestamp>
    irstd-reproduce classic [--data-root SIRST] [--detectors tophat,rlcm] [OVERRIDE ...]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from irstd.results import classic, reproduce
from irstd.results.reference import TABLES
from irstd.results.runs import SweepError
from irstd.results.sweeps import collect_sweep


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="irstd-reproduce", description="Run the paper's Table 1, 2, 3 or Fig. 6 (make reproduce-*), or "
        "evaluate its training-free methods on SIRST (classic), and write the results beside the paper's.")
    parser.add_argument("target", choices=[*TABLES, "fig6", "classic"])
    parser.add_argument("--scale", choices=("smoke", "paper"), default="smoke",
                        help="conf/scale/<scale>.yaml: smoke (CPU, minutes) or paper (GPU, 42,000 steps)")
    parser.add_argument("--seeds", type=int, default=1, help="run seeds 0..N-1 of every experiment")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/reproduce"),
                        help="runs go to OUT_DIR/<target>/<scale>/<timestamp>/")
    parser.add_argument("--collect", type=Path, metavar="DIR",
                        help="run nothing: rewrite the results of an existing table, fig6 or classic directory")
    parser.add_argument("--data-root", help="classic: the SIRST folder (default: data=sirst's, "
                        "${paths.data_dir}/SIRST)")
    parser.add_argument("--detectors", help="classic: comma-separated detector names (default: all registered)")
    parser.add_argument("overrides", nargs="*", help="more irstd-train overrides for every job, e.g. "
                        "trainer.max_steps=20000 or hydra/launcher=submitit_slurm (classic: irstd-eval overrides)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.collect is not None:
        return _collect(parser, args)
    if args.target == "classic":
        return _classic(parser, args)
    if args.target == "fig6":
        parent, status = reproduce.run_fig6(args.scale, args.seeds, args.out_dir, args.overrides)
        print_results(parent / "sweep.md")
        return _report(status, "a Fig. 6 grid failed", "the table shows the jobs that finished")
    sweep_dir, status = reproduce.run_table(args.target, args.scale, args.seeds, args.out_dir, args.overrides)
    print_results(sweep_dir / "results.md")
    return _report(status, "the multirun failed", "the table shows the jobs that finished")


def _collect(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """--collect: rewrite the results of a finished directory, running nothing."""
    if args.target == "classic":
        print_results(classic.write_classic_results(args.collect))
    elif args.target == "fig6":
        try:
            print_results(collect_sweep(args.collect)["md"])
        except SweepError as error:
            parser.exit(1, f"{parser.prog}: {error}\n")
    else:
        print_results(reproduce.write_results(args.collect, args.target, args.scale))
    return 0


def _classic(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """`classic`: no training, so --scale and --seeds do not apply."""
    try:
        detectors = classic.detector_names(args.detectors)
    except ValueError as error:
        parser.error(str(error))
    run_dir, status = classic.run_classic(detectors, args.data_root, args.out_dir, args.overrides)
    print_results(run_dir / "results.md")
    return _report(status, "an evaluation failed", "the table shows the detectors that finished")


def _report(status: int, failure: str, consequence: str) -> int:
    if status:
        print(f"{failure} (exit status {status}); {consequence}", file=sys.stderr)
    return status


def print_results(path: Path) -> None:
    print(path.read_text())
    beside = [other.name for other in sorted(path.parent.glob(f"{path.stem}.*")) if other != path]
    print(f"results: {path}" + (f" (and {', '.join(beside)} beside it)" if beside else ""))


if __name__ == "__main__":
    raise SystemExit(main())
