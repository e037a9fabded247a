"""One way to pick things by name: backbones, classic detectors and label-learning parts each keep a `Registry`.

Entries are "package.module:Class" strings imported on first use, so listing or picking one never imports the
others (DNA-Net does not load when a U-Net is built). Configs name an entry (`model.backbone.name: acm`), and the
registry's `build` turns a wrong name or argument into an error that names the config key and the choices.
"""

from __future__ import annotations

import importlib
from typing import Any


class Registry:
    """Named, lazily imported constructors of one kind.

    Args:
        kind: what the entries are, for messages ("backbone", "classic detector").
        key: the config key that names an entry, for messages ("model.backbone.name").
        entries: initial name -> "module:Class".
    """

    def __init__(self, kind: str, key: str, entries: dict[str, str] | None = None) -> None:
        self.kind = kind
        self.key = key
        self._entries: dict[str, str] = dict(entries or {})

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def register(self, name: str, target: str) -> None:
        """Make `build(name)` import `target` ("package.module:Class") on first use; replaces an entry of that name."""
        if ":" not in target:
            raise ValueError(f"{self.kind} {name!r}: target must read 'package.module:Class', got {target!r}")
        self._entries[name] = target

    def get(self, name: str) -> Any:
        """The class (or function) registered under `name`."""
        if name not in self._entries:
            raise ValueError(f"{self.key}={name!r} is not a known {self.kind}; choose one of {self.names()}")
        module_name, attribute = self._entries[name].split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def build(self, name: str, **kwargs: Any) -> Any:
        """Instantiate the entry registered under `name` with its keyword arguments."""
        cls = self.get(name)
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise TypeError(f"{self.key}={name} ({self.kind}): {err}") from err
