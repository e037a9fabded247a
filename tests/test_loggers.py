"""Dashboards: wandb (offline without an account) and TensorBoard get the scalars, the config and the LESPS panels."""

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import wandb
from hydra.core.global_hydra import GlobalHydra
from PIL import Image
from pytorch_lightning.loggers import WandbLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2

from conftest import compose_config, tiny_train_overrides
from irstd.training.loggers import WANDB_RUN_ID_KEY, finish_loggers, instantiate_group, resume_wandb_run, wandb_mode
from irstd.training.run import train

LESPS_EVERY_EPOCH = ["start=epoch", "start.Tepoch=0", "label_update.f=1"]
CREDENTIAL_VARIABLES = ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_BASE_URL", "NETRC")


def home_variables(home: Path) -> dict[str, str]:
    """Every place wandb and netrc look for settings and credentials, inside `home`."""
    return dict(HOME=str(home), WANDB_DIR=str(home), WANDB_CONFIG_DIR=str(home / "config"),
                WANDB_CACHE_DIR=str(home / "cache"), WANDB_DATA_DIR=str(home / "data"))


def no_account_environment(home: Path) -> dict[str, str]:
    """The current environment without W&B credentials."""
    return {**{k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARIABLES}, **home_variables(home)}


@pytest.fixture(scope="module")
def dashboard_run(tiny_dataset, tmp_path_factory):
    """Two epochs, a LESPS round each, with `logger=many` and no W&B account."""
    home = tmp_path_factory.mktemp("home")
    run_dir = tmp_path_factory.mktemp("dashboards") / "run"
    with pytest.MonkeyPatch.context() as patch:
        for name in CREDENTIAL_VARIABLES:
            patch.delenv(name, raising=False)
        for name, value in home_variables(home).items():
            patch.setenv(name, value)
        cfg = compose_config("train", run_dir, tiny_train_overrides(tiny_dataset, label="centroid", lesps="default")
                             + LESPS_EVERY_EPOCH + ["logger=many"])
        assert cfg.logger.wandb.mode == "offline"
        train(cfg)
        GlobalHydra.instance().clear()
    # wandb.finish() may return before wandb's service has written the whole run; stopping it, as the end of a
    # process does, flushes the run's files
    wandb.teardown()
    return run_dir


def wandb_records(run_dir: Path) -> list:
    """Every record of a run's .wandb file: wandb's LevelDB-style log (a 7-byte file header, then 32 KiB blocks
    of chunks with a CRC32C, a length and a type each); wandb ships no Python reader for it."""
    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    records, pending, position, block = [], b"", 7, 32768
    while position + 7 <= len(data):
        if block - position % block < 7:  # the tail of a block too short for a chunk header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position: position + 7])
        pending += data[position + 7: position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def wandb_history(records) -> list[dict]:
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for record in records if record.WhichOneof("record_type") == "history"]


def png(data: bytes | Path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data) if isinstance(data, bytes) else data).convert("RGB"))


def test_wandb_runs_offline_with_the_scalars_config_and_panels(dashboard_run):
    (offline_run,) = (dashboard_run / "wandb").glob("offline-run-*")
    records = wandb_records(offline_run)
    history = wandb_history(records)
    logged = set().union(*history)
    assert {"train/loss_step", "train/loss_epoch", "val/iou", "test/iou", "lesps/epoch_loss"} <= logged
    rounds = [row for row in history if "lesps/label_iou" in row]
    assert [row["lesps/round"] for row in rounds] == [1, 2]
    assert all(0 <= row["lesps/label_iou"] <= 1 and "trainer/global_step" in row for row in rounds)

    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.display_name, run.job_type, run.run_group, run.project) == ("train-run", "train", "", "irstd")
    config = {item.key: json.loads(item.value_json) for r in records if r.WhichOneof("record_type") == "config"
              for item in r.config.update}
    assert config["label_update"]["f"] == 1 and config["label"]["kind"] == "centroid"
    assert "${" not in json.dumps(config) and "hydra" not in config

    panels = [row for row in history if "lesps/panel/filenames" in row]
    assert [row["lesps/panel/captions"][0].split(":")[0] for row in panels] == ["round 1", "round 2"]
    for row, round_index in zip(panels, (1, 2), strict=True):
        shown = png(offline_run / "files" / row["lesps/panel/filenames"][0])
        assert np.array_equal(shown, png(dashboard_run / "lesps" / f"round_{round_index:04d}.png"))


def test_tensorboard_gets_the_scalars_and_panels(dashboard_run):
    scalars, images = {}, {}
    for path in sorted((dashboard_run / "tensorboard").glob("events.out.tfevents.*")):
        events = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
        events.Reload()
        scalars.update({tag: events.Scalars(tag) for tag in events.Tags()["scalars"]})
        images.update({tag: events.Images(tag) for tag in events.Tags()["images"]})
    assert {"train/loss_step", "val/iou", "test/iou", "lesps/epoch_loss", "lesps/lossd"} <= set(scalars)
    assert [event.value for event in scalars["lesps/round"]] == [1, 2]
    panels = images["lesps/panel"]
    assert len(panels) == 2 and panels[0].step < panels[1].step  # one per round
    assert np.array_equal(png(panels[-1].encoded_image_string), png(dashboard_run / "lesps" / "round_0002.png"))


@pytest.mark.parametrize(("environ", "netrc_host", "expected"), [
    ({}, None, "offline"),
    ({"WANDB_API_KEY": "fake-key"}, None, "online"),
    ({"WANDB_API_KEY": "fake-key", "WANDB_MODE": "disabled"}, None, "disabled"),
    ({"WANDB_MODE": "online"}, None, "online"),
    ({}, "api.wandb.ai", "online"),
    ({}, "wandb.example.com", "offline"),
    ({"WANDB_BASE_URL": "https://wandb.example.com"}, "wandb.example.com", "online"),
    ({"WANDB_MODE": "offline"}, "api.wandb.ai", "offline"),
])
def test_wandb_goes_online_only_with_an_api_key(tmp_path, environ, netrc_host, expected):
    if netrc_host:
        (tmp_path / ".netrc").write_text(f"machine {netrc_host}\n  login user\n  password fake-key\n")
    assert wandb_mode({"HOME": str(tmp_path), **environ}) == expected


def test_a_netrc_named_by_NETRC_counts(tmp_path):
    netrc_file = tmp_path / "elsewhere"
    netrc_file.write_text("machine api.wandb.ai login user password fake-key\n")
    assert wandb_mode({"HOME": str(tmp_path), "NETRC": str(netrc_file)}) == "online"
    assert wandb_mode({"HOME": str(tmp_path)}) == "offline"


def resumed_config(dataset: Path, run_dir: Path, *extra: str):
    cfg = compose_config("train", run_dir.parent / "resumed", tiny_train_overrides(dataset) + [
        "logger=[csv,wandb]", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", *extra])
    resume_wandb_run(cfg)
    GlobalHydra.instance().clear()
    return cfg


def test_a_resumed_run_continues_the_checkpoints_wandb_run_when_online(dashboard_run, tiny_dataset, monkeypatch):
    (offline_run,) = (dashboard_run / "wandb").glob("offline-run-*")
    run_id = offline_run.name.rsplit("-", 1)[1]
    checkpoint = torch.load(dashboard_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint[WANDB_RUN_ID_KEY] == run_id

    monkeypatch.setenv("WANDB_API_KEY", "fake-key")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    online = resumed_config(tiny_dataset, dashboard_run)
    assert (online.logger.wandb.mode, online.logger.wandb.id, online.logger.wandb.resume) == ("online", run_id, "allow")
    (_, wandb_logger) = instantiate_group(online.logger, "logger")  # builds the logger, starts no run
    assert isinstance(wandb_logger, WandbLogger) and wandb_logger.version == run_id

    explicit = resumed_config(tiny_dataset, dashboard_run, "logger.wandb.id=chosen")
    assert explicit.logger.wandb.id == "chosen" and "resume" not in explicit.logger.wandb

    monkeypatch.setenv("WANDB_MODE", "offline")  # an offline run cannot resume: it keeps its own id
    offline = resumed_config(tiny_dataset, dashboard_run)
    assert offline.logger.wandb.id is None and "resume" not in offline.logger.wandb


def test_each_job_of_a_multirun_is_its_own_wandb_run_in_the_sweeps_group(tiny_dataset, tmp_path):
    overrides = [o for o in tiny_train_overrides(tiny_dataset) if not o.startswith("trainer.max_epochs")]
    sweep, home = tmp_path / "sweep", tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "irstd.cli.train", "-m", *overrides, "trainer.max_epochs=1", "test=false",
         "logger=wandb", f"hydra.sweep.dir={sweep}", "seed=1,2"],
        cwd=tmp_path, env=no_account_environment(home), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = []
    for job in ("0", "1"):
        (offline_run,) = (sweep / job / "wandb").glob("offline-run-*")
        records = wandb_records(offline_run)
        runs.append(next(r.run for r in records if r.WhichOneof("record_type") == "run"))
        assert any("train/loss_epoch" in row for row in wandb_history(records))
    assert runs[0].run_id != runs[1].run_id
    assert runs[0].run_group == runs[1].run_group == "sweep"
    assert [run.display_name for run in runs] == ["train-sweep-0", "train-sweep-1"]


def test_a_failed_job_marks_its_wandb_run_failed(monkeypatch):
    statuses, exit_codes = [], []
    # finish_loggers recognises wandb's logger by its class name
    fake_logger = type("WandbLogger", (), {"finalize": lambda self, status: statuses.append(status)})
    monkeypatch.setattr(wandb, "finish", lambda exit_code=None: exit_codes.append(exit_code))
    finish_loggers([fake_logger()], failed=True)
    finish_loggers([fake_logger()])
    assert statuses == ["failed", "success"] and exit_codes == [1, 0]
