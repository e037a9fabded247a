"""Package layout only (metadata is in pyproject.toml): conf/ stays at the top of the repository and ships inside
the wheel as the package `irstd.conf`, which Hydra composes from through `pkg://irstd.conf`."""

from setuptools import find_packages, setup

setup(packages=[*find_packages("src"), "irstd.conf"], package_dir={"": "src", "irstd.conf": "conf"})
