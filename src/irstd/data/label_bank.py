"""On-disk bank of the evolving LESPS soft labels, one immutable file per round.

Layout under the bank root::

    manifest.json       which rounds exist and which one is current
    round_0000.npz      round 0: the point labels
    round_0001.npz      ...

A round is written completely under a temporary name, renamed to its final
name and only then made current by atomically replacing ``manifest.json``.
Readers (DataLoader workers in other processes) resolve the current round from
the manifest and read from that one immutable file, so they see either the old
round or the new one, never a mix. Files are deleted only after a manifest that
no longer lists them is in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from irstd.utils.files import atomic_write, sha256_file, write_text_atomic

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LOCK_NAME = "writer.lock"
# Decoded rounds are held in memory per process; two covers the current round
# plus one explicitly requested older round without growing with training length.
_MAX_CACHED_ROUNDS = 2
# A reader that resolved a round which got pruned before it opened the file
# re-resolves; pruning only touches old rounds, so a couple of retries suffice.
_RESOLVE_ATTEMPTS = 5


class LabelBankError(RuntimeError):
    """The label bank is missing, inconsistent or was asked for something it does not hold."""


def round_file_name(round_index: int) -> str:
    return f"round_{round_index:04d}.npz"


class _LoadedRound:
    """A verified round kept in memory.

    The compressed bytes are held in memory rather than an open file so that
    forked DataLoader workers never share a file offset and pruning or
    rewriting the file on disk cannot affect a round already opened.
    """

    def __init__(self, path: Path, data: bytes, names: list[str]) -> None:
        self.path = path
        self.npz = np.load(io.BytesIO(data), allow_pickle=False)
        self.keys = {name: _array_key(i) for i, name in enumerate(names)}

    def array(self, name: str) -> np.ndarray:
        try:
            return self.npz[self.keys[name]]
        except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError) as exc:
            raise LabelBankError(_corrupt_message(self.path, f"cannot decode {name!r}: {exc}")) from exc


def _array_key(position: int) -> str:
    # Image names may hold '/', spaces or dots; positional keys are always safe
    # zip member names, and the manifest maps them back to names.
    return f"a{position}"


def _corrupt_message(path: Path, problem: str) -> str:
    return (
        f"label bank round file {path} is unusable ({problem}). Roll back to an earlier round with "
        f"LabelBank.rollback(round) (see LabelBank.rounds()), or delete the run's label bank to restart "
        f"from the point labels."
    )



def _format_names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    more = len(names) - limit
    return shown + (f" ... (+{more} more)" if more > 0 else "")


def _prepare_labels(labels: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Convert to contiguous float32 and reject what cannot be a soft label."""
    prepared = {}
    for name, value in labels.items():
        if not isinstance(name, str):
            raise LabelBankError(f"label bank image names must be str, got {name!r} ({type(name).__name__})")
        array = np.asarray(value)
        if array.dtype.kind not in "fiub":
            raise LabelBankError(f"label for image {name!r} has non-real dtype {array.dtype}")
        if array.ndim != 2:
            raise LabelBankError(f"label for image {name!r} must be 2-D (H, W), got shape {array.shape}")
        # float64 values beyond float32 range become inf here, which _refuse_non_finite then rejects
        with np.errstate(over="ignore"):
            prepared[name] = np.ascontiguousarray(array, dtype=np.float32)
    return prepared


def _refuse_non_finite(root: Path, labels: dict[str, np.ndarray], round_index: int, current: int | None) -> None:
    """A round holding NaN or inf is never written: training on it would turn every loss non-finite."""
    bad = [name for name, array in labels.items() if not np.isfinite(array).all()]
    if not bad:
        return
    first = labels[bad[0]]
    kept = "the bank stays empty" if current is None else f"round {current} stays current"
    cause = ("Check the point labels and the round-0 initialiser (label_init)" if round_index == 0 else
             "A label update (label_update) makes them from the predictions of a diverged model: lower "
             "model.optimizer.lr and resume from the last checkpoint")
    raise LabelBankError(
        f"label bank {root}: round {round_index} refused, the labels of {len(bad)} image(s) "
        f"({_format_names(bad)}) hold non-finite values (NaN or inf; {int((~np.isfinite(first)).sum())} of "
        f"{first.size} pixels of {bad[0]!r}); {kept}. {cause}."
    )


class LabelBank:
    """Round-by-round store of per-image float32 soft labels under one directory.

    Safe for one writer process and any number of reader processes; the object
    is picklable so it can be handed to DataLoader workers.
    """

    def __init__(self, root: str | os.PathLike, keep: int | None = None) -> None:
        """Open the bank at `root`, creating the directory if needed (round 0 is not created).

        `keep` bounds how many rounds stay on disk after each commit (None keeps
        all); round 0, the current round and the one before it are always kept.
        """
        if keep is not None and keep < 2:
            raise ValueError(
                f"data.bank_keep must be null (keep all rounds) or >= 2, got {keep}: the current round "
                f"and the one before it are always kept so readers of the previous round stay safe"
            )
        self._root = Path(root)
        self._keep = keep
        self._root.mkdir(parents=True, exist_ok=True)
        self._reset_caches()

    def _reset_caches(self) -> None:
        self._manifest_cache: dict[str, Any] | None = None
        self._manifest_key: tuple[int, int, int] | None = None
        self._loaded: OrderedDict[tuple[str, str], _LoadedRound] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        # Caches are per process: a worker re-reads the manifest and re-verifies files itself.
        return {"root": str(self._root), "keep": self._keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._root = Path(state["root"])
        self._keep = state["keep"]
        self._reset_caches()

    def __repr__(self) -> str:
        return f"LabelBank({str(self._root)!r}, keep={self._keep})"

    @property
    def root(self) -> Path:
        """Directory holding the manifest and the round files."""
        return self._root

    @property
    def _manifest_path(self) -> Path:
        return self._root / MANIFEST_NAME

    # ----------------------------------------------------------------- reading

    def exists(self) -> bool:
        """True once round 0 has been written (the manifest is present)."""
        return self._manifest_path.is_file()

    def _manifest(self, force: bool = False) -> dict[str, Any]:
        """The current manifest, re-read only when the file on disk changed."""
        try:
            stat = os.stat(self._manifest_path)
        except FileNotFoundError:
            raise LabelBankError(
                f"label bank {self._root} has no rounds yet (no {MANIFEST_NAME}); call initialize() first"
            ) from None
        key = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
        if force or key != self._manifest_key or self._manifest_cache is None:
            self._load_manifest()
        assert self._manifest_cache is not None
        return self._manifest_cache

    def _load_manifest(self) -> None:
        with open(self._manifest_path, "rb") as handle:
            # Key from the descriptor actually read, so a concurrent replace is noticed next time.
            stat = os.fstat(handle.fileno())
            raw = handle.read()
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            raise LabelBankError(
                f"label bank manifest {self._manifest_path} is not valid JSON: {exc}"
            ) from exc
        if manifest.get("format") != FORMAT_VERSION:
            raise LabelBankError(
                f"label bank manifest {self._manifest_path} has format {manifest.get('format')!r}, "
                f"this version reads format {FORMAT_VERSION}"
            )
        self._manifest_cache = manifest
        self._manifest_key = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
        recorded = {(entry["file"], entry["sha256"]) for entry in manifest["rounds"].values()}
        for cache_key in [k for k in self._loaded if k not in recorded]:
            del self._loaded[cache_key]

    @staticmethod
    def _recorded(manifest: dict[str, Any]) -> list[int]:
        return sorted(int(r) for r in manifest["rounds"])

    def _entry(self, manifest: dict[str, Any], round_index: int) -> dict[str, Any]:
        entry = manifest["rounds"].get(str(round_index))
        if entry is None:
            raise LabelBankError(
                f"label bank {self._root} has no round {round_index}; "
                f"recorded rounds: {self._recorded(manifest)}"
            )
        return entry

    def _open_round(self, entry: dict[str, Any]) -> _LoadedRound:
        """Load and verify a round file once per process; later calls hit the cache."""
        cache_key = (entry["file"], entry["sha256"])
        loaded = self._loaded.get(cache_key)
        if loaded is not None:
            self._loaded.move_to_end(cache_key)
            return loaded
        path = self._root / entry["file"]
        data = path.read_bytes()  # FileNotFoundError is handled by the caller
        actual = hashlib.sha256(data).hexdigest()
        if actual != entry["sha256"]:
            raise LabelBankError(
                _corrupt_message(path, f"sha256 {actual} does not match the manifest's {entry['sha256']}")
            )
        try:
            loaded = _LoadedRound(path, data, entry["names"])
        except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError) as exc:
            raise LabelBankError(_corrupt_message(path, f"not a readable npz archive: {exc}")) from exc
        self._loaded[cache_key] = loaded
        while len(self._loaded) > _MAX_CACHED_ROUNDS:
            self._loaded.popitem(last=False)
        return loaded

    def _resolve(self, round_index: int | None) -> tuple[int, dict[str, Any], _LoadedRound]:
        """Pick a round from the manifest and open it, re-resolving if it was pruned meanwhile."""
        for _ in range(_RESOLVE_ATTEMPTS):
            manifest = self._manifest()
            chosen = manifest["current"] if round_index is None else round_index
            entry = self._entry(manifest, chosen)
            try:
                return chosen, entry, self._open_round(entry)
            except FileNotFoundError:
                # Files are deleted only after the manifest stops listing them: if the fresh
                # manifest still lists this exact file, it is genuinely missing.
                fresh = self._manifest(force=True)
                if fresh["rounds"].get(str(chosen)) == entry:
                    raise LabelBankError(
                        f"label bank round file {self._root / entry['file']} is missing although the "
                        f"manifest records round {chosen}. Roll back to an earlier round with "
                        f"LabelBank.rollback(round); recorded rounds: {self._recorded(fresh)}"
                    ) from None
        raise LabelBankError(
            f"label bank {self._root}: round {round_index if round_index is not None else 'current'} kept "
            f"disappearing while being opened ({_RESOLVE_ATTEMPTS} attempts); is another writer pruning "
            f"with a very small keep?"
        )

    def current_round(self) -> int:
        """Number of the round readers currently get."""
        return int(self._manifest()["current"])

    def rounds(self) -> list[int]:
        """Recorded rounds in ascending order (empty before initialize())."""
        if not self.exists():
            return []
        return self._recorded(self._manifest())

    def names(self) -> list[str]:
        """Image names in round-0 order."""
        return list(self._entry(self._manifest(), 0)["names"])

    def read(self, name: str, round: int | None = None) -> np.ndarray:
        """Label of one image (float32, H x W, a fresh array) from `round`, default the current one.

        Cheap enough to call per sample: the manifest is re-read only when it
        changed and the round stays decoded in memory.
        """
        round_index, _, loaded = self._resolve(round)
        if name not in loaded.keys:
            raise LabelBankError(f"label bank round {round_index} has no image {name!r}")
        return loaded.array(name)

    def read_round(self, round: int | None = None) -> dict[str, np.ndarray]:
        """All labels of one round (default the current one) as a consistent snapshot."""
        _, entry, loaded = self._resolve(round)
        return {name: loaded.array(name) for name in entry["names"]}

    def round_meta(self, round: int | None = None) -> dict:
        """User metadata stored with `round` (default the current one)."""
        manifest = self._manifest()
        chosen = manifest["current"] if round is None else round
        return dict(self._entry(manifest, chosen)["meta"])

    # ----------------------------------------------------------------- writing

    @contextlib.contextmanager
    def _writer(self) -> Iterator[dict[str, Any] | None]:
        """Hold the writer lock; yields the manifest (None if absent) after cleaning leftovers.

        The lock is released by the kernel if the writer dies, so a killed writer never blocks
        the next one, and it makes removing `.tmp` files of other writers safe.
        """
        with open(self._root / LOCK_NAME, "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                manifest = self._manifest(force=True) if self.exists() else None
                self._remove_leftovers(manifest)
                yield manifest
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _remove_leftovers(self, manifest: dict[str, Any] | None) -> None:
        """Delete temp files and round files the manifest does not list (from killed writers)."""
        listed = set() if manifest is None else {e["file"] for e in manifest["rounds"].values()}
        for path in self._root.iterdir():
            is_round = path.name.startswith("round_") and path.name.endswith(".npz")
            if path.name.endswith(".tmp") or (is_round and path.name not in listed):
                path.unlink(missing_ok=True)

    def initialize(self, labels: Mapping[str, np.ndarray], meta: dict | None = None) -> int:
        """Write round 0 (the point labels) and make it current; returns 0.

        Fails if the bank already has rounds: use commit() or rollback(0) then.
        """
        prepared = _prepare_labels(labels)
        if not prepared:
            raise LabelBankError("label bank initialize() needs at least one image")
        with self._writer() as manifest:
            if manifest is not None:
                raise LabelBankError(
                    f"label bank {self._root} is already initialized (rounds {self._recorded(manifest)}); "
                    f"use commit() for a new round or rollback(0) to return to the point labels"
                )
            _refuse_non_finite(self._root, prepared, 0, None)
            manifest = {"format": FORMAT_VERSION, "current": 0, "rounds": {}}
            self._write_round(manifest, 0, list(prepared), prepared, meta)
        return 0

    def commit(self, labels: Mapping[str, np.ndarray], meta: dict | None = None) -> int:
        """Write the next round (current + 1), make it current, prune old rounds; returns its number.

        `labels` must hold exactly the images of round 0 with the same shapes.
        """
        prepared = _prepare_labels(labels)
        with self._writer() as manifest:
            if manifest is None:
                raise LabelBankError(f"label bank {self._root} has no round 0; call initialize() first")
            base = manifest["rounds"]["0"]
            self._check_matches_base(base, prepared)
            new_round = int(manifest["current"]) + 1
            _refuse_non_finite(self._root, prepared, new_round, int(manifest["current"]))
            self._write_round(manifest, new_round, base["names"], prepared, meta)
        return new_round

    def _check_matches_base(self, base: dict[str, Any], labels: dict[str, np.ndarray]) -> None:
        expected = dict(zip(base["names"], (tuple(s) for s in base["shapes"]), strict=True))
        missing = [n for n in expected if n not in labels]
        extra = [n for n in labels if n not in expected]
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"missing {len(missing)} image(s): {_format_names(missing)}")
            if extra:
                problems.append(f"{len(extra)} image(s) not in round 0: {_format_names(extra)}")
            raise LabelBankError(
                f"label bank commit must hold exactly the round-0 images; {'; '.join(problems)}"
            )
        wrong = [f"{n!r} {labels[n].shape} != {s}" for n, s in expected.items() if labels[n].shape != s]
        if wrong:
            raise LabelBankError(f"label bank commit has shapes differing from round 0: {', '.join(wrong)}")

    def _write_round(
        self,
        manifest: dict[str, Any],
        round_index: int,
        names: list[str],
        labels: dict[str, np.ndarray],
        meta: dict | None,
    ) -> None:
        """Write one round file, then publish it (and any pruning) with one manifest replace."""
        meta = dict(meta or {})
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as exc:
            raise LabelBankError(f"label bank round metadata must be JSON-serialisable: {exc}") from exc
        file_name = round_file_name(round_index)
        path = self._root / file_name
        with atomic_write(path, "wb") as handle:
            np.savez_compressed(handle, **{_array_key(i): labels[n] for i, n in enumerate(names)})
        entry = {
            "file": file_name,
            "sha256": sha256_file(path),
            "names": list(names),
            "shapes": [list(labels[n].shape) for n in names],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "meta": meta,
        }
        rounds = dict(manifest["rounds"])
        rounds[str(round_index)] = entry
        doomed = self._rounds_to_prune(sorted(int(r) for r in rounds), round_index)
        for r in doomed:
            del rounds[str(r)]
        self._publish({"format": FORMAT_VERSION, "current": round_index, "rounds": rounds})
        for r in doomed:
            (self._root / manifest["rounds"][str(r)]["file"]).unlink(missing_ok=True)

    def _rounds_to_prune(self, recorded: list[int], current: int) -> list[int]:
        if self._keep is None:
            return []
        older = [r for r in recorded if r < current]
        protected = {0, current, *older[-1:]}
        candidates = [r for r in recorded if r not in protected]
        excess = len(recorded) - self._keep
        return candidates[: max(excess, 0)]

    def _publish(self, manifest: dict[str, Any]) -> None:
        write_text_atomic(self._manifest_path, json.dumps(manifest, indent=1, ensure_ascii=False))
        self._manifest_key = None  # our own cache must pick up what we just wrote

    def rollback(self, round: int) -> None:
        """Make the recorded `round` current again and delete all newer rounds.

        The next commit then writes round + 1.
        """
        with self._writer() as manifest:
            if manifest is None:
                raise LabelBankError(f"label bank {self._root} has no rounds to roll back to")
            recorded = self._recorded(manifest)
            if round not in recorded:
                raise LabelBankError(
                    f"cannot roll back label bank {self._root} to round {round}: it is not recorded "
                    f"(pruned or never written); available rounds: {recorded}"
                )
            doomed = [r for r in recorded if r > round]
            rounds = {str(r): manifest["rounds"][str(r)] for r in recorded if r <= round}
            self._publish({"format": FORMAT_VERSION, "current": round, "rounds": rounds})
            for r in doomed:
                (self._root / manifest["rounds"][str(r)]["file"]).unlink(missing_ok=True)
