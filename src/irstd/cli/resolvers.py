"""OmegaConf resolvers the shipped configs use; registered when `irstd.cli` is imported."""

from __future__ import annotations

from omegaconf import OmegaConf


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


OmegaConf.register_new_resolver("irstd.milestones", milestones, replace=True)
