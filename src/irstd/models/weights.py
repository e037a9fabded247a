"""Loading released LESPS / BasicIRSTD weights into our backbones.

Our ACM and ALCNet use the release's attribute names, so the key mapping is the identity once the
release's wrapper prefix (`model.`, from its `Net` module) is stripped; anything else is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import nn

from irstd.utils.files import load_torch_file

WRAPPER_PREFIX = "model."


def load_official_weights(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint into `model` strictly, in place.

    Accepts a release `.pth.tar` (`{'state_dict': {'model.<key>': tensor}}`), a plain state dict with
    or without the `model.` prefix, and a file written with `torch.save(model.state_dict(), path)`.
    Raises ValueError naming the file and every missing, unexpected or mis-shaped key.
    """
    checkpoint = load_torch_file(path)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"{path}: expected a state dict or {{'state_dict': ...}}, got {type(checkpoint).__name__}")
    # strip the prefix only when every key carries it, so that a mixed file is reported, not half-renamed
    if all(key.startswith(WRAPPER_PREFIX) for key in state):
        state = {key.removeprefix(WRAPPER_PREFIX): value for key, value in state.items()}

    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
                        for key in set(state) & set(expected) if state[key].shape != expected[key].shape)
    problems = [f"{label} ({len(keys)}): {', '.join(keys)}"
                for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                    ("shape mismatches", mis_shaped)) if keys]
    if problems:
        raise ValueError(f"{path} does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
