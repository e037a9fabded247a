"""Reproduce the paper's tables and Fig. 6 (`make reproduce-*`); the logic lives in `irstd.reproduce`.

    python scripts/reproduce.py table1|table2|table3|fig6 [--scale smoke|paper] [--seeds N] [OVERRIDE ...]
    python scripts/reproduce.py table2 --scale paper --collect outputs/reproduce/table2/paper/<timestamp>
    python scripts/reproduce.py classic [--data-root SIRST] [--detectors tophat,rlcm] [OVERRIDE ...]
"""

from irstd.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
