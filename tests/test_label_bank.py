"""Tests for the on-disk LESPS label bank (irstd.data.label_bank)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from irstd.data.label_bank import LabelBank, LabelBankError

ODD_NAMES = ["img-001.png", "with space.bmp", "dots.in.name.png", "sub/dir/ünïcode name", "a0"]


def _labels(names: list[str], value: float, shape: tuple[int, int] = (8, 12)) -> dict[str, np.ndarray]:
    return {name: np.full(shape, value, dtype=np.float32) for name in names}


def _bits(array: np.ndarray) -> np.ndarray:
    # Bitwise view: distinguishes -0.0 from 0.0 and catches any rounding of denormals.
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


def _tmp_files(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def bank(tmp_path: Path) -> LabelBank:
    bank = LabelBank(tmp_path / "bank")
    bank.initialize(_labels(["a", "b", "c"], 0.0), meta={"epoch": 0})
    return bank


def test_initialize_round_trip_is_bit_exact_with_odd_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    labels = {}
    for i, name in enumerate(ODD_NAMES):
        values = rng.random((16 + i, 20), dtype=np.float32)
        values[0, :6] = [0.123456789, 1.0, 1e-45, np.finfo(np.float32).tiny / 3, -0.0, 0.0]
        labels[name] = values
    labels["from float64"] = rng.random((5, 7))  # float64 input is stored as float32

    bank = LabelBank(tmp_path / "bank")
    assert not bank.exists() and bank.rounds() == []
    assert bank.initialize(labels, meta={"source": "points"}) == 0
    assert bank.exists() and bank.current_round() == 0 and bank.rounds() == [0]
    assert bank.names() == list(labels)

    fresh = LabelBank(tmp_path / "bank")
    for name, expected in labels.items():
        got = fresh.read(name)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_array_equal(_bits(got), _bits(expected))
    snapshot = fresh.read_round()
    assert list(snapshot) == list(labels)
    odd = "sub/dir/ünïcode name"
    np.testing.assert_array_equal(_bits(snapshot[odd]), _bits(labels[odd]))


def test_read_returns_an_independent_copy(bank: LabelBank) -> None:
    first = bank.read("a")
    first[:] = 7.0
    assert (bank.read("a") == 0.0).all()


def test_rejects_bad_arrays_naming_the_image(tmp_path: Path) -> None:
    bank = LabelBank(tmp_path / "bank")
    with pytest.raises(LabelBankError, match="'cube'.*2-D"):
        bank.initialize({"ok": np.zeros((2, 2)), "cube": np.zeros((2, 2, 2))})
    with pytest.raises(LabelBankError, match="'nan image'.*non-finite"):
        bank.initialize({"nan image": np.array([[0.0, np.nan]])})
    with pytest.raises(LabelBankError, match="'huge'.*non-finite"):
        bank.initialize({"huge": np.array([[1e300]])})  # overflows float32
    assert not bank.exists()


def test_initialize_twice_is_an_error(bank: LabelBank) -> None:
    with pytest.raises(LabelBankError, match="already initialized"):
        bank.initialize(_labels(["a", "b", "c"], 1.0))


def test_commit_increments_and_keeps_old_rounds_readable(bank: LabelBank) -> None:
    for epoch in (1, 2, 3):
        assert bank.commit(_labels(["c", "a", "b"], float(epoch)), meta={"epoch": epoch * 10}) == epoch
        assert bank.current_round() == epoch
        assert (bank.read("b") == epoch).all()
    assert bank.rounds() == [0, 1, 2, 3]
    assert bank.names() == ["a", "b", "c"]  # round-0 order, not the commit's order
    for r in (0, 1, 2):
        assert (bank.read("a", round=r) == r).all()
        assert all((a == r).all() for a in bank.read_round(r).values())
    assert bank.round_meta() == {"epoch": 30}
    assert bank.round_meta(1) == {"epoch": 10}
    assert bank.round_meta(0) == {"epoch": 0}
    manifest = json.loads((bank.root / "manifest.json").read_text())
    assert manifest["format"] == 1 and manifest["current"] == 3
    assert manifest["rounds"]["2"]["file"] == "round_0002.npz"
    assert manifest["rounds"]["2"]["shapes"] == [[8, 12]] * 3


def test_a_nonfinite_round_is_refused_naming_the_round_and_the_image(bank: LabelBank) -> None:
    bank.commit(_labels(["a", "b", "c"], 0.5))
    before = bank.root.joinpath("manifest.json").read_bytes()
    poisoned = _labels(["a", "b", "c"], 0.25)
    poisoned["b"][3, 4] = np.nan
    poisoned["c"][0, 0] = np.inf
    with pytest.raises(LabelBankError, match=r"round 2 refused.*2 image\(s\) \('b', 'c'\).*1 of 96 pixels of 'b'.*"
                                             r"round 1 stays current"):
        bank.commit(poisoned)
    assert bank.current_round() == 1 and bank.rounds() == [0, 1]
    assert bank.root.joinpath("manifest.json").read_bytes() == before
    assert "round_0002.npz" not in os.listdir(bank.root) and not _tmp_files(bank.root)
    assert (bank.read("b") == 0.5).all()


def test_missing_name_errors_naming_name_and_round(bank: LabelBank) -> None:
    with pytest.raises(LabelBankError, match=r"round 0 has no image 'zzz'"):
        bank.read("zzz")


def test_commit_with_wrong_names_or_shapes_names_them(bank: LabelBank) -> None:
    with pytest.raises(LabelBankError, match="missing 1 image.*'c'"):
        bank.commit(_labels(["a", "b"], 1.0))
    with pytest.raises(LabelBankError, match="not in round 0.*'intruder'"):
        bank.commit(_labels(["a", "b", "c", "intruder"], 1.0))
    wrong_shape = _labels(["a", "b", "c"], 1.0)
    wrong_shape["b"] = np.ones((8, 13), dtype=np.float32)
    with pytest.raises(LabelBankError, match=r"'b' \(8, 13\) != \(8, 12\)"):
        bank.commit(wrong_shape)
    assert bank.rounds() == [0]
    assert sorted(os.listdir(bank.root)) == ["manifest.json", "round_0000.npz", "writer.lock"]


@pytest.mark.parametrize("keep", [2, 3])
def test_pruning_keeps_round0_current_and_previous(tmp_path: Path, keep: int) -> None:
    bank = LabelBank(tmp_path / "bank", keep=keep)
    bank.initialize(_labels(["a"], 0.0))
    for r in range(1, 7):
        bank.commit(_labels(["a"], float(r)))
        recorded = bank.rounds()
        assert {0, r, r - 1} <= set(recorded)
        assert len(recorded) <= max(keep, 3)  # round 0 + previous + current always survive
        on_disk = sorted(p.name for p in bank.root.glob("round_*.npz"))
        assert on_disk == [f"round_{x:04d}.npz" for x in recorded]
    assert bank.rounds() == [0, 5, 6]
    assert (bank.read("a", round=0) == 0).all() and (bank.read("a", round=5) == 5).all()
    with pytest.raises(LabelBankError, match=r"no round 2.*\[0, 5, 6\]"):
        bank.read("a", round=2)


@pytest.mark.parametrize("keep", [1, 0, -3])
def test_keep_below_two_is_rejected(tmp_path: Path, keep: int) -> None:
    with pytest.raises(ValueError, match=r"data\.bank_keep must be null"):
        LabelBank(tmp_path / "bank", keep=keep)


def test_rollback_removes_newer_rounds_and_next_commit_follows(bank: LabelBank) -> None:
    for r in range(1, 5):
        bank.commit(_labels(["a", "b", "c"], float(r)))
    reader = LabelBank(bank.root)
    assert (reader.read("a", round=3) == 3).all()  # reader caches the old round 3

    bank.rollback(2)
    assert bank.current_round() == 2 and bank.rounds() == [0, 1, 2]
    assert not (bank.root / "round_0003.npz").exists() and not (bank.root / "round_0004.npz").exists()
    assert (reader.read("a") == 2).all()

    assert bank.commit(_labels(["a", "b", "c"], 33.0)) == 3
    # Same round number, new contents: the reader must not serve its cached old round 3.
    assert (reader.read("a") == 33).all() and (reader.read("a", round=3) == 33).all()

    with pytest.raises(LabelBankError, match=r"round 7.*available rounds: \[0, 1, 2, 3\]"):
        bank.rollback(7)
    assert bank.current_round() == 3


def test_rollback_to_pruned_round_lists_available(tmp_path: Path) -> None:
    bank = LabelBank(tmp_path / "bank", keep=3)
    bank.initialize(_labels(["a"], 0.0))
    for r in range(1, 5):
        bank.commit(_labels(["a"], float(r)))
    with pytest.raises(LabelBankError, match=r"round 1.*available rounds: \[0, 3, 4\]"):
        bank.rollback(1)
    bank.rollback(0)
    assert bank.rounds() == [0] and bank.commit(_labels(["a"], 9.0)) == 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_round_file_is_reported_with_its_path(bank: LabelBank, damage: str) -> None:
    bank.commit(_labels(["a", "b", "c"], 1.0))
    bank.commit(_labels(["a", "b", "c"], 2.0))
    path = bank.root / "round_0002.npz"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    else:
        path.unlink()

    fresh = LabelBank(bank.root)  # no cache: must really open the file
    expected = "missing" if damage == "delete" else "sha256"
    with pytest.raises(LabelBankError, match=expected) as excinfo:
        fresh.read("a")
    assert str(path) in str(excinfo.value) and "rollback" in str(excinfo.value)
    with pytest.raises(LabelBankError, match=expected):
        LabelBank(bank.root).read_round()

    # The advice in the message works: roll back and carry on.
    fresh.rollback(1)
    assert (fresh.read("a") == 1).all()
    assert fresh.commit(_labels(["a", "b", "c"], 5.0)) == 2
    assert (LabelBank(bank.root).read("c") == 5).all()


def test_stray_round_file_not_in_manifest_is_ignored_and_overwritten(bank: LabelBank) -> None:
    bank.commit(_labels(["a", "b", "c"], 1.0))
    # A writer killed after renaming its npz but before replacing the manifest leaves this behind.
    np.savez_compressed(bank.root / "round_0002.npz", a0=np.full((8, 12), 99.0, dtype=np.float32))
    (bank.root / ".round_0002.npz.abc.tmp").write_bytes(b"partial")

    fresh = LabelBank(bank.root)
    assert fresh.current_round() == 1 and fresh.rounds() == [0, 1]
    assert (fresh.read("a") == 1).all()
    with pytest.raises(LabelBankError, match="no round 2"):
        fresh.read("a", round=2)

    assert fresh.commit(_labels(["a", "b", "c"], 2.0)) == 2
    assert _tmp_files(bank.root) == []
    assert all((a == 2).all() for a in LabelBank(bank.root).read_round(2).values())


def test_pickled_bank_reads_current_round(bank: LabelBank) -> None:
    bank.read("a")
    bank.read_round()
    clone = pickle.loads(pickle.dumps(bank))
    assert clone.root == bank.root
    bank.commit(_labels(["a", "b", "c"], 4.0))
    assert (clone.read("b") == 4).all()
    assert clone.current_round() == 1


KILLED_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from irstd.data.label_bank import LabelBank

    bank = LabelBank(sys.argv[1])
    rng = np.random.default_rng(0)
    # Random noise barely compresses, so writing the round takes long enough to be killed mid-way.
    bank.commit({name: rng.random((512, 512), dtype=np.float32) for name in bank.names()})
    """
)


def test_writer_killed_mid_round_leaves_previous_round_current(tmp_path: Path) -> None:
    names = [f"img_{i:02d}" for i in range(48)]
    bank = LabelBank(tmp_path / "bank")
    bank.initialize(_labels(names, 0.0, shape=(512, 512)))
    rng = np.random.default_rng(3)
    round1 = {name: rng.random((512, 512), dtype=np.float32) * 0.5 for name in names[:1]}
    round1.update({name: np.full((512, 512), 0.25, dtype=np.float32) for name in names[1:]})
    bank.commit(round1)

    script = tmp_path / "killed_writer.py"
    script.write_text(KILLED_WRITER)
    writer = subprocess.Popen([sys.executable, str(script), str(bank.root)])
    try:
        deadline = time.monotonic() + 30
        while not _tmp_files(bank.root):
            assert writer.poll() is None, "writer finished before it could be killed"
            assert time.monotonic() < deadline, "writer never started writing its round"
            time.sleep(0.002)
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert _tmp_files(bank.root), "the killed writer should have left its temp file behind"

    fresh = LabelBank(bank.root)
    assert fresh.current_round() == 1 and fresh.rounds() == [0, 1]
    snapshot = fresh.read_round()
    for name in names:
        np.testing.assert_array_equal(_bits(snapshot[name]), _bits(round1[name]))

    assert fresh.commit(_labels(names, 0.75, shape=(512, 512))) == 2
    assert _tmp_files(bank.root) == []
    assert (LabelBank(bank.root).read(names[-1]) == 0.75).all()


READER = textwrap.dedent(
    """
    import json, pickle, sys, time
    import numpy as np

    bank = pickle.loads(open(sys.argv[1], "rb").read())  # as a DataLoader worker receives it
    final = float(sys.argv[2])
    names = bank.names()
    mixed, torn, regressions = [], 0, 0
    snapshot_values, last_read = [], -1.0
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        snapshot = bank.read_round()
        values = sorted({float(v) for array in snapshot.values() for v in np.unique(array)})
        if len(values) != 1:
            mixed.append(values)
        if not snapshot_values or snapshot_values[-1] != values[-1]:
            snapshot_values.append(values[-1])
        for name in names:
            unique = np.unique(bank.read(name))
            torn += len(unique) != 1
            regressions += float(unique[0]) < last_read  # a worker must never go back in time
            last_read = max(last_read, float(unique[0]))
        if last_read == final and snapshot_values[-1] == final:
            break
    print(json.dumps({"mixed": mixed, "torn": torn, "regressions": regressions,
                      "snapshot_values": snapshot_values, "last_read": last_read}))
    """
)


def test_concurrent_readers_never_see_a_mixed_round(tmp_path: Path) -> None:
    names = [f"frame {i}.png" for i in range(6)]
    bank = LabelBank(tmp_path / "bank", keep=3)  # pruning runs while readers read
    bank.initialize(_labels(names, 0.0, shape=(32, 32)))
    bank.read_round()  # the pickled copy must not carry this process's cache
    pickled = tmp_path / "bank.pkl"
    pickled.write_bytes(pickle.dumps(bank))
    script = tmp_path / "reader.py"
    script.write_text(READER)

    final_round = 30
    readers = [
        subprocess.Popen(
            [sys.executable, str(script), str(pickled), str(final_round)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        for reader in readers:
            assert reader.stdout.readline().strip() == "ready"
        for r in range(1, final_round + 1):
            bank.commit(_labels(names, float(r), shape=(32, 32)))
            time.sleep(0.01)
        results = [json.loads(reader.communicate(timeout=60)[0]) for reader in readers]
    finally:
        for reader in readers:
            reader.kill()
            reader.wait()

    for result in results:
        assert result["mixed"] == []
        assert result["torn"] == 0 and result["regressions"] == 0
        # Readers started at round 0 and, without being restarted, saw the round committed last.
        assert result["last_read"] == final_round
        assert result["snapshot_values"][-1] == final_round
        assert len(result["snapshot_values"]) >= 3
        assert result["snapshot_values"] == sorted(result["snapshot_values"])
