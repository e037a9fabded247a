"""Gather a Hydra multirun of `irstd-train -m ...` into one table and a plot like the paper's Fig. 6.

    python scripts/collect_sweep.py MULTIRUN_DIR [--out DIR]

Writes DIR/sweep.csv, DIR/sweep.md and DIR/sweep.png (DIR defaults to MULTIRUN_DIR): one row per job with the swept
values, the LESPS settings, the final labels' PA and IoU (the last round of lesps_rounds.csv, empty when no round
happened), the number of rounds, the test metrics and a status (finished, failed, missing metrics). MULTIRUN_DIR may
also be a directory holding several multiruns, e.g. the four Fig. 6 grids.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from irstd.results.sweeps import SweepError, collect_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("multirun_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: MULTIRUN_DIR)")
    args = parser.parse_args()
    try:
        result = collect_sweep(args.multirun_dir, args.out)
    except SweepError as error:
        raise SystemExit(f"collect_sweep: {error}") from None
    print(result["markdown"], end="")
    counts = Counter(row["status"] for row in result["rows"])
    print(f"{len(result['rows'])} jobs in {len(result['sweeps'])} multirun(s): "
          + (", ".join(f"{count} {status}" for status, count in counts.items()) or "none"))
    written = [result["csv"], result["md"]] + ([result["png"]] if result["png"] else [])
    print("wrote " + ", ".join(str(path) for path in written))
    if result["png"] is None:
        print("no plot: no jobs vary a setting")


if __name__ == "__main__":
    main()
