"""`irstd-reproduce`: run the paper's Table 1, 2, 3 or Fig. 6 (`make reproduce-*`), or evaluate its training-free
methods on SIRST (`classic`), and write the results beside the paper's; or set point-supervision methods beside full
supervision on SIRST alone (`single`, `make reproduce-single`). The work is `irstd.results`.

    irstd-reproduce table1|table2|table3|fig6 [--scale smoke|paper] [--seeds N] [OVERRIDE ...]
    irstd-reproduce table2 --scale paper --collect outputs/reproduce/table2/paper/<timestamp>
    irstd-reproduce fig6 --collect outputs/reproduce/fig6/smoke/<timestamp>
    irstd-reproduce classic [--data-root SIRST] [--detectors tophat,rlcm] [OVERRIDE ...]
    irstd-reproduce single [--scale cpu|gpu|smoke] [--seeds N] [--backbones acm,alcnet] [--rows full,...] [OVERRIDE ...]
    irstd-reproduce single --collect outputs/reproduce/single/cpu/<timestamp>
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from irstd.results import classic, reproduce, single
from irstd.results.reference import TABLES
from irstd.results.runs import SweepError
from irstd.results.sweeps import collect_sweep

# conf/scale/<scale>.yaml each target runs at; the first is the default
SCALES = {"table": ("smoke", "paper"), "single": ("smoke", "cpu", "gpu", "demo")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="irstd-reproduce", description="Run the paper's Table 1, 2, 3 or Fig. 6 (make reproduce-*), or "
        "evaluate its training-free methods on SIRST (classic), and write the results beside the paper's; or set "
        "point-supervision methods beside full supervision on SIRST alone (single).")
    parser.add_argument("target", choices=[*TABLES, "fig6", "classic", "single"])
    parser.add_argument("--scale", choices=sorted({scale for scales in SCALES.values() for scale in scales}),
                        help="conf/scale/<scale>.yaml. Tables and fig6: smoke (CPU, minutes; the default) or paper "
                        "(GPU, 42,000 steps). single: smoke (the default), cpu (SIRST, 1,500 steps, about 15 min a "
                        "run on 2 cores), gpu (SIRST, 5,600 steps = 400 epochs) or demo (`make demo`: the synthetic "
                        "data, minutes a run); with --collect, read from the jobs")
    parser.add_argument("--seeds", type=int, default=1, help="run seeds 0..N-1 of every experiment")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/reproduce"),
                        help="runs go to OUT_DIR/<target>/<scale>/<timestamp>/")
    parser.add_argument("--collect", type=Path, metavar="DIR",
                        help="run nothing: rewrite the results of an existing table, fig6, classic or single directory")
    parser.add_argument("--data-root", help="classic: the SIRST folder (default: data=sirst's, "
                        "${paths.data_dir}/SIRST)")
    parser.add_argument("--detectors", help="classic: comma-separated detector names (default: all registered)")
    parser.add_argument("--backbones", help="single: comma-separated model= choices (default: acm,alcnet; at "
                        "--scale gpu acm,alcnet,dnanet; at demo acm)")
    parser.add_argument("--rows", help="single: comma-separated conf/experiment/single/ files (default: all)")
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
    scales = SCALES["single" if args.target == "single" else "table"]
    if args.scale is not None and args.scale not in scales:
        parser.error(f"{args.target} runs at --scale {' | '.join(scales)}, not {args.scale}")
    args.scale = args.scale or scales[0]
    if args.target == "single":
        return _single(parser, args)
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
    elif args.target == "single":
        print_results(single.write_single_results(args.collect, args.scale))
    else:
        print_results(reproduce.write_results(args.collect, args.target, args.scale or SCALES["table"][0]))
    return 0


def _single(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """`single`: the rows x backbones x seeds of SIRST alone, then its table."""
    try:
        backbones = single.choose(args.backbones, single.DEFAULT_BACKBONES[args.scale], single.available_backbones(),
                                  "backbone")
        rows = single.choose(args.rows, single.available_rows(), single.available_rows(), "row")
    except ValueError as error:
        parser.error(str(error))
    sweep_dir, status = single.run_single(args.scale, args.seeds, args.out_dir, backbones, rows, args.overrides)
    print_results(sweep_dir / "results.md")
    return _report(status, "a job of the sweep failed", "the table shows the jobs that finished")


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
