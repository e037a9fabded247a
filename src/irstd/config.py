"""Where the shipped configs live, and the OmegaConf resolvers they use (registered on import).

The configs are the repository's top-level `conf/`, shipped inside the wheel as the package `irstd.conf`, so a
wheel install composes the same configs as a source checkout. Users add their own config groups and experiments
with `hydra.searchpath=[file://DIR]` (docs/configuration.md), without touching the package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf

CONFIG_MODULE = "irstd.conf"
# what `@hydra.main(config_path=...)` takes
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"


def config_root() -> Path:
    """The shipped config folder on disk (conf/ of a checkout, or irstd/conf inside an installed wheel)."""
    return Path(str(resources.files(CONFIG_MODULE)))


def milestones(total: int, *fractions: float) -> list[int]:
    """The steps (or epochs) at the given fractions of a schedule of `total`, rounded to whole numbers.

    `${irstd.milestones:${trainer.max_steps},0.5,0.75}` keeps the paper's LR decays at 50 % and 75 % of
    training when the length of training is changed on the command line.
    """
    if isinstance(total, bool) or not isinstance(total, int) or total <= 0:
        raise ValueError(f"irstd.milestones needs a positive whole schedule length (trainer.max_steps or "
                         f"trainer.max_epochs), got {total!r}")
    if not fractions or any(not 0 < fraction < 1 for fraction in fractions):
        raise ValueError(f"irstd.milestones needs fractions strictly between 0 and 1, got {list(fractions)}")
    return [round(total * fraction) for fraction in fractions]


def basename(path: str) -> str:
    """The name of the folder `path` points at, resolved (`.`, `..`, symlinks, a trailing slash): the split name
    `irstd-data split ROOT` writes by default, so `${irstd.basename:${data.root}}` finds its files."""
    if not str(path).strip():
        raise ValueError("irstd.basename needs a path (data.root), got an empty one")
    return Path(path).expanduser().resolve().name


OmegaConf.register_new_resolver("irstd.milestones", milestones, replace=True)
OmegaConf.register_new_resolver("irstd.basename", basename, replace=True)
