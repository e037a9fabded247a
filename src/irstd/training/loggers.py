"""Experiment loggers: wandb's mode, run name and group, the resolved config on every dashboard, resumed runs.

Importing this module registers the `irstd.*` resolvers that `conf/logger/wandb.yaml` uses.
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.loggers import Logger, WandbLogger

from irstd.training.run_dir import with_label_kind
from irstd.utils.files import load_torch_file

log = logging.getLogger(__name__)

# the checkpoint key holding the wandb run id, so `ckpt_path=` can resume the same run
WANDB_RUN_ID_KEY = "wandb_run_id"
WANDB_HOST = "https://api.wandb.ai"
# modes in which wandb.init cannot resume a run on the server
NOT_RESUMABLE_MODES = ("offline", "dryrun", "disabled")


def wandb_mode(environ: Mapping[str, str] = os.environ) -> str:
    """`WANDB_MODE` when the user set it; else `online` when an API key is configured (WANDB_API_KEY,
    WANDB_IDENTITY_TOKEN_FILE or a netrc login for the W&B host), `offline` without one: no account needed."""
    if environ.get("WANDB_MODE"):
        return environ["WANDB_MODE"]
    if environ.get("WANDB_API_KEY") or environ.get("WANDB_IDENTITY_TOKEN_FILE") or _netrc_login(environ):
        return "online"
    return "offline"


def _netrc_login(environ: Mapping[str, str]) -> bool:
    """Whether the netrc file wandb reads (NETRC, else ~/.netrc, else ~/_netrc) holds a password for the host."""
    if environ.get("NETRC"):
        candidates = [Path(environ["NETRC"]).expanduser()]
    else:
        home = Path(environ.get("HOME", "~")).expanduser()
        candidates = [home / ".netrc", home / "_netrc"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return False
    try:
        entries = netrc.netrc(path)
    except (netrc.NetrcParseError, OSError):
        return False  # wandb warns about an unreadable netrc itself; without a login it cannot go online
    login = entries.authenticators(urlsplit(environ.get("WANDB_BASE_URL", WANDB_HOST)).netloc)
    return bool(login and login[2])


def job_name(task_name: str) -> str:
    """The wandb run name: the task and the run directory, with the sweep's name for a job of a multirun."""
    if not HydraConfig.initialized():
        return task_name
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir).name
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return f"{task_name}-{Path(hydra_cfg.sweep.dir).name}-{run_dir}"
    return f"{task_name}-{run_dir}"


def sweep_name() -> str | None:
    """The wandb group: the multirun's sweep directory name, so its jobs are grouped; None outside a multirun."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return None


def register_resolvers() -> None:
    for name, resolver in (("irstd.wandb_mode", wandb_mode), ("irstd.job_name", job_name),
                           ("irstd.sweep_name", sweep_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register_resolvers()


def _is_wandb(entry: Any) -> bool:
    return isinstance(entry, DictConfig) and str(entry.get("_target_", "")).endswith("WandbLogger")


def resume_wandb_run(cfg: DictConfig) -> None:
    """Point the wandb loggers of a resumed run (`ckpt_path=`) at the checkpoint's wandb run: its id, resume=allow.

    Only when the mode can resume (online): an offline run keeps its own id, so `wandb sync` of the two runs
    cannot overwrite one with the other. An id set explicitly (`logger.wandb.id=...`) wins.
    """
    entries = [entry for entry in (cfg.get("logger") or {}).values() if _is_wandb(entry)]
    if not cfg.get("ckpt_path") or not entries:
        return
    run_id = load_torch_file(cfg.ckpt_path).get(WANDB_RUN_ID_KEY)
    if run_id is None:
        return
    for entry in entries:
        if entry.get("id") is not None:
            continue
        if entry.get("mode") in NOT_RESUMABLE_MODES:
            log.info("wandb is %s: the checkpoint's wandb run %s is not resumed, this run gets its own id",
                     entry.get("mode"), run_id)
            continue
        with open_dict(entry):
            entry.id = run_id
            entry.resume = "allow"


class DashboardCallback(pl.Callback):
    """Puts the resolved config on every logger when fitting starts, and stores the wandb run id in checkpoints."""

    def __init__(self, config: dict[str, Any]):
        self.config = config

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            # after the data module's setup, which resolved label=auto
            config = with_label_kind(self.config, getattr(trainer.datamodule, "label_kind", None))
            for logger in trainer.loggers:
                logger.log_hyperparams(config)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        run_ids = [logger.version for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if run_ids:
            checkpoint[WANDB_RUN_ID_KEY] = run_ids[0]


def instantiate_loggers(cfg: DictConfig) -> tuple[list[Logger], list[pl.Callback]]:
    """The `logger` group's loggers (wandb resuming the checkpoint's run) and the callback that feeds them."""
    resume_wandb_run(cfg)
    loggers = instantiate_group(cfg.get("logger"), "logger")
    if not loggers:
        return [], []
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)  # present only in configs composed without the Hydra entry point (tests)
    return loggers, [DashboardCallback(config)]


def instantiate_group(cfg: DictConfig | None, kind: str) -> list[Any]:
    """Instantiate every `_target_` entry of a config group such as `callbacks` or `logger`."""
    objects: list[Any] = []
    if not cfg:
        return objects
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"config group {kind!r} must be a mapping of name -> {{_target_: ...}}")
    for name, entry in cfg.items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            objects.append(hydra.utils.instantiate(entry))
        elif entry is not None:
            raise TypeError(f"{kind}.{name} has no _target_; every entry of {kind} must name a class")
    return objects


def finish_loggers(loggers: list[Any], failed: bool = False) -> None:
    """Close every logger's run (a wandb run per job of a multirun, not one swallowing the sweep); a failed job's
    wandb run is marked failed, not finished."""
    for logger in loggers:
        logger.finalize("failed" if failed else "success")
        if type(logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish(exit_code=1 if failed else 0)
