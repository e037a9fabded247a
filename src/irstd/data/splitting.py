"""Train/test split files for a folder of frames: ``ROOT/img_idx/train_NAME.txt`` and ``test_NAME.txt``.

A frame's side depends only on a hash of the seed and its file name, never on the other frames: adding
frames to ``ROOT/images`` and splitting again with the same seed keeps every earlier frame where it was.
Lines are image stems, sorted, as in SIRST's split files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from irstd.data.sources import IMAGE_EXTENSIONS, read_split_file, split_file_path
from irstd.utils.files import write_text_atomic

__all__ = ["in_test", "split_dataset"]


def in_test(name: str, seed: int, test: float) -> bool:
    """Whether the frame with file name ``name`` goes to the test split: a uniform draw in [0, 1) from
    sha256("SEED:NAME") falls below ``test``."""
    draw = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big") / 2**64
    return draw < test


def _frames(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"{folder} not found: a dataset keeps its frames in ROOT/images/")
    frames = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not frames:
        raise ValueError(f"{folder} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
    stems: dict[str, list[str]] = {}
    for frame in frames:
        stems.setdefault(frame.stem, []).append(frame.name)
    clashes = {stem: names for stem, names in stems.items() if len(names) > 1}
    if clashes:
        raise ValueError(f"{folder}: split files list stems, but several images share one: {clashes}; "
                         "rename or remove the extra files")
    return frames


def split_dataset(root: str | os.PathLike, *, test: float = 0.2, seed: int = 0, name: str | None = None,
                  force: bool = False) -> tuple[Path, Path, dict[str, int]]:
    """Split the frames of ``ROOT/images`` into ``img_idx/train_NAME.txt`` and ``test_NAME.txt``.

    ``test``: the expected fraction of test frames, in (0, 1). ``name`` defaults to the root folder's name.
    Existing split files with other contents are refused unless ``force``. Returns the two paths and
    ``{"train": n, "test": m}``.
    """
    if not 0 < test < 1:
        raise ValueError(f"test must be a fraction in (0, 1), got {test!r}")
    root = Path(root).resolve()
    name = root.name if name is None else name
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"split name must be a plain name (it goes into img_idx/train_NAME.txt), got {name!r}")
    sides: dict[str, list[str]] = {"train": [], "test": []}
    for frame in _frames(root / "images"):
        sides["test" if in_test(frame.name, seed, test) else "train"].append(frame.stem)
    empty = [side for side, stems in sides.items() if not stems]
    if empty:
        raise ValueError(f"the {empty[0]} split of the {sum(map(len, sides.values()))} frame(s) of {root / 'images'} "
                         f"would be empty with test={test}, seed={seed}; add frames or change test or seed")
    paths = {side: split_file_path(root, side, name) for side in sides}
    changed = [str(path) for side, path in paths.items() if path.is_file() and read_split_file(path) != sides[side]]
    if changed and not force:
        raise ValueError(f"{' and '.join(changed)} already exist(s) with other frames; pass force=True (--force) to "
                         "replace, or choose another name")
    for side, path in paths.items():
        write_text_atomic(path, "".join(f"{stem}\n" for stem in sides[side]))
    return paths["train"], paths["test"], {side: len(stems) for side, stems in sides.items()}
