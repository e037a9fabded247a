"""DDP that works inside Hydra runs and multiruns: `trainer=ddp` (GPUs) and `trainer=ddp_cpu` (2 gloo processes).

Lightning's own launcher starts the other ranks by re-running the command line. Inside a Hydra multirun that
command line is the whole sweep (`-m` and every value), and the ranks land in a new timestamped directory. Here
each extra rank runs this one job: the entry module with the job's own overrides, in the job's run directory,
with Hydra's config output turned off so that only rank 0 writes the run's files. After the job the launching
process waits for its ranks and clears the rendezvous variables, so the next job of a multirun starts fresh.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

log = logging.getLogger(__name__)

RENDEZVOUS_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def quote_override_value(value: str) -> str:
    """A Hydra override value quoted so that paths with spaces, commas or '=' survive the parser."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def rank_command(entry_module: str, local_rank: int) -> list[str]:
    """The command line of one extra rank: this job's overrides, this job's run directory, no Hydra output."""
    from hydra.core.hydra_config import HydraConfig

    job = HydraConfig.get()
    return [sys.executable, "-m", entry_module, *job.overrides.task,
            f"hydra.run.dir={quote_override_value(job.runtime.output_dir)}",
            f"hydra.job.name={job.job.name}_rank{local_rank}", "hydra.output_subdir=null"]


class _JobLauncher(_SubprocessScriptLauncher):
    """Starts ranks 1..n-1 of this node with `rank_command`; rank 0 is the current process."""

    def __init__(self, entry_module: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entry_module = entry_module
        self.previous_environment: dict[str, str | None] = {}

    def _call_children_scripts(self) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import get_original_cwd

        if not HydraConfig.initialized():
            raise RuntimeError("the irstd DDP strategy starts its ranks as Hydra jobs: run it through irstd-train")
        self._check_can_spawn_children()
        environment = self.cluster_environment
        self.previous_environment = {name: os.environ.get(name) for name in RENDEZVOUS_VARIABLES}
        os.environ.update(MASTER_ADDR=environment.main_address, MASTER_PORT=str(environment.main_port),
                          NODE_RANK=str(environment.node_rank()), LOCAL_RANK=str(environment.local_rank()),
                          WORLD_SIZE=str(self.num_processes * self.num_nodes))
        self.procs = []
        for local_rank in range(1, self.num_processes):
            command = rank_command(self.entry_module, local_rank)
            log.debug("starting rank %d: %s", local_rank, " ".join(command))
            self.procs.append(subprocess.Popen(command, env={**os.environ, "LOCAL_RANK": str(local_rank)},
                                               cwd=get_original_cwd()))

    def release(self, failed: bool, timeout_s: float = 600.0) -> None:
        """Wait for the ranks this launcher started (kill them if the job failed), restore the environment."""
        for proc in self.procs:
            if failed and proc.poll() is None:
                proc.kill()
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.error("DDP rank process %d did not exit within %.0f s after the job: killing it", proc.pid,
                          timeout_s)
                proc.kill()
                code = proc.wait()
            if code != 0 and not failed:
                log.warning("DDP rank process %d exited with code %d", proc.pid, code)
        self.procs = []
        for name, value in self.previous_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self.previous_environment = {}


class HydraDDPStrategy(DDPStrategy):
    """Lightning's DDP with ranks started as Hydra jobs (see the module docstring).

    Args:
        entry_module: the module the extra ranks run (`python -m ENTRY_MODULE overrides...`).
        find_unused_parameters: True/False as in DDP, or "auto": on when a module of the model declares
            `has_unused_parameters = True` (ALCNet keeps layers of the released weights that its forward never uses).
        **kwargs: the rest of DDPStrategy's arguments (process_group_backend, timeout, static_graph...).
    """

    def __init__(self, entry_module: str = "irstd.cli.train", find_unused_parameters: bool | str = "auto",
                 **kwargs: Any) -> None:
        if find_unused_parameters not in (True, False, "auto"):
            raise ValueError(f"trainer.strategy.find_unused_parameters must be true, false or auto, "
                             f"got {find_unused_parameters!r}")
        self.auto_unused = find_unused_parameters == "auto"
        if not self.auto_unused:
            kwargs["find_unused_parameters"] = find_unused_parameters
        super().__init__(**kwargs)
        self.entry_module = entry_module

    def _configure_launcher(self) -> None:
        if self._start_method != "popen":
            super()._configure_launcher()
            return
        self._launcher = _JobLauncher(self.entry_module, self.cluster_environment, self.num_processes,
                                      self.num_nodes)

    def _setup_model(self, model: torch.nn.Module):
        if self.auto_unused:
            self._ddp_kwargs["find_unused_parameters"] = any(
                getattr(module, "has_unused_parameters", False) for module in model.modules())
        return super()._setup_model(model)

    def release(self, failed: bool) -> None:
        """End of the job in the launching process: ranks joined, process group destroyed, variables restored."""
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        if isinstance(self._launcher, _JobLauncher):
            self._launcher.release(failed)


def release_distributed(trainer: Any, failed: bool) -> None:
    """Call at the end of every job: a no-op unless the trainer ran HydraDDPStrategy."""
    strategy = getattr(trainer, "strategy", None)
    if isinstance(strategy, HydraDDPStrategy):
        strategy.release(failed)
