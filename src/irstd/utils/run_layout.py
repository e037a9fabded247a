"""The names of the files a run directory holds, shared by what writes them and what reads them back."""

METRICS_FILE = "metrics.json"
# one row per label-update round (irstd.lesps.callback.ROUND_FIELDS)
ROUNDS_FILE = "lesps_rounds.csv"
RESOLVED_CONFIG_FILE = "config_resolved.yaml"
