"""Start rules: the epoch at which label updates begin during training.

Each rule sees, at the end of every training epoch, the epoch index, that epoch's mean training loss and the
planned number of epochs, and answers whether updates start now. Once a rule has fired the caller stops asking
it. Rules are small state objects (their state goes into checkpoints) picked by name through `START_RULES`:

- `loss`: the first epoch whose mean loss is below `Tloss` (LESPS's released code).
- `epoch`: after `Tepoch` epochs (LESPS's paper).
- `fraction`: after a fraction of the planned epochs (PAL and Diffuse-to-Detect start at 20 %).
- `plateau` (ours): when the training loss stops falling, measured relative to itself, so the same setting
  serves any backbone, loss scale or dataset size (docs/labels/start.md says why it is a good moment).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from irstd.registry import Registry


class StartRule:
    """Base of the start rules; `fires` is asked once per epoch until it returns True."""

    name = "base"

    def fires(self, epoch: int, epoch_loss: float, max_epochs: int | None) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        """Why it fired, for the log."""
        return self.name

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stateless rules have nothing to restore."""


class LossBelow(StartRule):
    """Start at the first epoch whose mean training loss is below `Tloss` (the released LESPS code)."""

    name = "loss"

    def __init__(self, Tloss: float = 10.0):
        if not Tloss >= 0:
            raise ValueError(f"start.Tloss must be >= 0 (0: never), got {Tloss}")
        self.Tloss = Tloss

    def fires(self, epoch: int, epoch_loss: float, max_epochs: int | None) -> bool:
        return epoch_loss < self.Tloss

    def describe(self) -> str:
        return f"mean training loss below Tloss={self.Tloss}"


class AfterEpoch(StartRule):
    """Start once `Tepoch` epochs have run (the paper's initial evolution epoch)."""

    name = "epoch"

    def __init__(self, Tepoch: int = 50):
        if Tepoch < 0:
            raise ValueError(f"start.Tepoch must be >= 0, got {Tepoch}")
        self.Tepoch = Tepoch

    def fires(self, epoch: int, epoch_loss: float, max_epochs: int | None) -> bool:
        return epoch + 1 > self.Tepoch

    def describe(self) -> str:
        return f"after Tepoch={self.Tepoch} epochs"


class AfterFraction(StartRule):
    """Start once `fraction` of the planned epochs have run (PAL and Diffuse-to-Detect: 0.2)."""

    name = "fraction"

    def __init__(self, fraction: float = 0.2):
        if not 0 <= fraction < 1:
            raise ValueError(f"start.fraction must lie in [0, 1), got {fraction}")
        self.fraction = fraction

    def fires(self, epoch: int, epoch_loss: float, max_epochs: int | None) -> bool:
        if not max_epochs or max_epochs <= 0:
            raise ValueError("start=fraction needs a planned number of epochs: set trainer.max_epochs (or "
                             "trainer.max_steps, from which the epochs are counted)")
        return epoch + 1 > self.fraction * max_epochs

    def describe(self) -> str:
        return f"after {self.fraction:.0%} of the planned epochs"


class LossPlateau(StartRule):
    """Start when the training loss has stopped falling: over the last `window` epochs, the smoothed loss fell by
    less than `min_drop` of its own value, after at least `min_epochs` epochs.

    Relative, so it needs no per-backbone or per-dataset threshold (Tloss does: focal losses range from < 1 to
    > 100 with the number of target pixels). From points, a plateau is when the network has learned what the
    points teach early (a blob around each point) and before it shrinks its output onto the points (the mapping
    degeneration of LESPS Sec. 3), which is when updates help most.
    """

    name = "plateau"

    def __init__(self, window: int = 5, min_drop: float = 0.05, min_epochs: int = 5, smoothing: float = 0.5):
        if window < 1 or min_epochs < 1:
            raise ValueError(f"start.window and start.min_epochs must be >= 1, got {window}, {min_epochs}")
        if not 0 < min_drop < 1:
            raise ValueError(f"start.min_drop must lie in (0, 1), got {min_drop}")
        if not 0 <= smoothing < 1:
            raise ValueError(f"start.smoothing must lie in [0, 1), got {smoothing}")
        self.window, self.min_drop, self.min_epochs, self.smoothing = window, min_drop, min_epochs, smoothing
        self.smoothed: list[float] = []

    def fires(self, epoch: int, epoch_loss: float, max_epochs: int | None) -> bool:
        if not math.isfinite(epoch_loss):
            return False
        last = self.smoothed[-1] if self.smoothed else epoch_loss
        self.smoothed.append(self.smoothing * last + (1 - self.smoothing) * epoch_loss)
        if len(self.smoothed) < max(self.min_epochs, self.window + 1):
            return False
        before, now = self.smoothed[-1 - self.window], self.smoothed[-1]
        return before - now < self.min_drop * abs(before)

    def describe(self) -> str:
        return f"smoothed loss fell < {self.min_drop:.0%} over {self.window} epochs"

    def state_dict(self) -> dict[str, Any]:
        return {"smoothed": list(self.smoothed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.smoothed = list(state.get("smoothed", []))


START_RULES = Registry("start rule", "start.name", {
    "loss": "irstd.labels.start:LossBelow",
    "epoch": "irstd.labels.start:AfterEpoch",
    "fraction": "irstd.labels.start:AfterFraction",
    "plateau": "irstd.labels.start:LossPlateau",
})


def build_start_rule(config: dict[str, Any]) -> StartRule:
    """A rule from its config: `{"name": "loss", "Tloss": 10.0}`.

    Keys that belong to another rule are left out, so that an experiment which sets `start.Tepoch` still composes
    with `start=loss`; a key no rule takes is an error naming it (a typo)."""
    params = dict(config)
    if "name" not in params:
        raise ValueError(f"start needs a name (one of {START_RULES.names()}), got {config}")
    name = params.pop("name")
    own = set(inspect.signature(START_RULES.get(name)).parameters)
    others = {key for rule in START_RULES.names() for key in inspect.signature(START_RULES.get(rule)).parameters}
    unknown = sorted(set(params) - own - others)
    if unknown:
        raise ValueError(f"start={name}: unknown key(s) {', '.join(f'start.{key}' for key in unknown)}; "
                         f"start={name} takes {', '.join(sorted(own))}")
    return START_RULES.build(name, **{key: value for key, value in params.items() if key in own})
