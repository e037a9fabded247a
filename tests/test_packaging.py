"""The configs ship inside the package: a wheel installed into a fresh environment trains from any directory, and
a user's own config directory adds a dataset and an experiment without touching the package."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from conftest import compose_config, tiny_train_overrides
from irstd.config import config_root

REPO = Path(__file__).resolve().parents[1]


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel of this checkout; its dependencies come from the test
    environment's site-packages through a .pth line (which does not run that folder's .pth files, so the
    checkout's editable install stays out of it)."""
    root = tmp_path_factory.mktemp("wheel")
    # built from a copy of what the wheel is made of: an in-tree build would reuse stale files from build/
    source = root / "source"
    for part in ("src", "conf"):
        shutil.copytree(REPO / part, source / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for part in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / part, source / part)
    run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
         "-w", str(root / "dist")], cwd=root)
    (wheel,) = (root / "dist").glob("irstd-*.whl")
    run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], cwd=root)
    python = root / "venv" / "bin" / "python"
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root)
    Path(site.stdout.strip(), "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)], cwd=root)
    return root


def test_the_wheel_carries_every_config(wheel_env):
    (wheel,) = (wheel_env / "dist").glob("irstd-*.whl")
    shipped = {name.removeprefix("irstd/conf/") for name in zipfile.ZipFile(wheel).namelist()
               if name.startswith("irstd/conf/") and name.endswith(".yaml")}
    in_checkout = {str(path.relative_to(config_root())) for path in config_root().rglob("*.yaml")}
    assert shipped == in_checkout


def test_a_wheel_install_trains_from_outside_the_checkout(wheel_env, tmp_path):
    bin_dir = wheel_env / "venv" / "bin"
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH",)}
    env["WANDB_MODE"] = "disabled"
    located = run([str(bin_dir / "python"), "-c", "import irstd, irstd.config as c; print(irstd.__file__); "
                   "print(c.config_root())"], cwd=tmp_path, env=env)
    module_file, conf = located.stdout.split()
    assert str(wheel_env) in module_file and str(wheel_env) in conf  # not the checkout's copy

    job = run([str(bin_dir / "irstd-train"), "--cfg", "job", "model=acm"], cwd=tmp_path, env=env)
    assert "name: acm" in job.stdout

    overrides = [o for o in tiny_train_overrides(tmp_path / "data") if not o.startswith("trainer.max_epochs")]
    run([str(bin_dir / "irstd-train"), *overrides, "trainer.max_epochs=1", "hydra.run.dir=run"], cwd=tmp_path,
        env=env)
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def documented_file(name: str) -> str:
    """The YAML block that docs/configuration.md shows under `my_conf/<name>`: the test runs the documented example."""
    text = (REPO / "docs" / "configuration.md").read_text()
    block = re.search(rf"`my_conf/{re.escape(name)}`:\n\n```yaml\n(.*?)```", text, re.DOTALL)
    assert block, f"docs/configuration.md no longer shows my_conf/{name}"
    return block.group(1)


def test_a_user_config_directory_adds_a_dataset_and_an_experiment(tmp_path, tiny_dataset):
    user = tmp_path / "my_conf"
    (user / "data").mkdir(parents=True)
    (user / "experiment").mkdir()
    (user / "data" / "mydata.yaml").write_text(documented_file("data/mydata.yaml"))
    (user / "experiment" / "mine.yaml").write_text(documented_file("experiment/mine.yaml"))
    cfg = compose_config("train", tmp_path / "run", [f"hydra.searchpath=[file://{user}]", "data=mydata",
                                                     "experiment=mine", f"data.root={tiny_dataset}",
                                                     "data.split=synthetic"])
    assert cfg.data.split == "synthetic" and cfg.data.patch_size == 256  # the shipped data defaults, extended
    assert (cfg.model.backbone.name, cfg.label.kind, cfg.trainer.accelerator) == ("dnanet", "coarse", "gpu")
    # every key the experiment sets lands where a component reads it
    assert cfg.label_update.f == 10 and cfg.trainer.max_epochs == 100
    GlobalHydra.instance().clear()
