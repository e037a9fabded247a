"""Plot the quality of the evolved labels over training (the paper's Fig. 7a) from a run's lesps_rounds.csv.

    python scripts/plot_evolution.py RUN_DIR [--out RUN_DIR/lesps_curve.png]

The first point is the labels before the first round (the point labels).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from irstd.results.runs import read_rounds  # noqa: E402
from irstd.utils.run_layout import ROUNDS_FILE  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rounds = read_rounds(args.run_dir)
    if not rounds:
        raise SystemExit(f"{args.run_dir / ROUNDS_FILE} is missing or has no rounds")
    epochs = [int(rounds[0]["epoch"])] + [int(r["epoch"]) + 1 for r in rounds]
    iou = [float(rounds[0]["label_iou_before"])] + [float(r["label_iou"]) for r in rounds]
    pa = [float(rounds[0]["label_pa_before"])] + [float(r["label_pa"]) for r in rounds]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(epochs, iou, marker="o", label="IoU of labels (>= 0.5) vs masks")
    axis.plot(epochs, pa, marker="s", label="PA of labels (>= 0.5) vs masks")
    axis.set(xlabel="epoch", ylabel="fraction", ylim=(0, 1), title=f"label evolution: {args.run_dir.name}")
    axis.grid(alpha=0.3)
    axis.legend()
    out = args.out or args.run_dir / "lesps_curve.png"
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    print(f"wrote {out}: label IoU {iou[0]:.3f} (point labels) -> {iou[-1]:.3f} after {len(rounds)} rounds")


if __name__ == "__main__":
    main()
