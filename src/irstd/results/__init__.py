"""The results layer: what runs left behind, set side by side and beside the paper.

- `runs`: the one reader of a run directory (overrides, config, metrics.json, lesps_rounds.csv, status) and of the
  jobs of a multirun.
- `tables`: the one table writer (Markdown and CSV, written atomically).
- `reference` and `paper/*.yaml`: the paper's reference numbers, as data files.
- `sweeps`: a multirun's jobs as one table and a Fig. 6 plot; `reproduce`: the paper's tables 1-3 and Fig. 6;
  `classic`: its training-free methods on SIRST; `single`: the point-supervision benchmark on SIRST alone
  (`make reproduce-single`). `irstd-reproduce` (`irstd.cli.reproduce`) runs them.
"""
