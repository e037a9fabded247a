"""Check a backbone against its authors' code: the same weights and input give the same outputs.

The reference code is never part of irstd. Bring it with the tool library's `fetch` (a bare git directory) or
`git clone`, then point `--repo` at it; a bare git directory is checked out into a temporary folder first.
One adapter per backbone, `scripts/reference/<name>.py`, says how to build both sides:

    REPO = "owner/name"                              # where the reference code lives on GitHub
    def build_reference(root: Path) -> nn.Module     # the authors' module, from the checkout at `root`
    def build_ours() -> nn.Module                    # the irstd backbone in the same configuration
    def to_reference(state: dict) -> dict            # optional: our state_dict keys -> theirs (identity if absent)
    def reference_logits(output) -> Tensor | list    # optional: their output as logits (e.g. undo a sigmoid)
    INPUT = (2, 1, 256, 256)                         # optional: the input shape

The check copies our randomised weights (batch-norm statistics measured on a random batch, so that a wrong
normalisation cannot hide behind the identity statistics of a fresh network) into the reference strictly,
compares parameter counts, then runs both in train mode (every deep-supervision head) and eval mode on the same
input and prints the largest absolute difference of each output.

    .venv/bin/python scripts/check_reference.py uiunet --repo /work/.mirror/<owner>+<name>/<...>.git
    .venv/bin/python scripts/check_reference.py --list
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

ADAPTERS = Path(__file__).resolve().parent / "reference"
# float32 round-off through a few dozen layers; anything structural differs by orders of magnitude more
TOLERANCE = 1e-4


def load_adapter(name: str):
    path = ADAPTERS / f"{name}.py"
    if not path.is_file():
        raise SystemExit(f"no reference adapter for {name!r}: expected {path}")
    spec = importlib.util.spec_from_file_location(f"reference_adapter_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_first_layout(root: Path, layouts, module_name: str) -> nn.Module:
    """For adapters whose network lives in one of several files across releases: the class of the first
    (file, class) of `layouts` present under `root`, built with no arguments, a final sigmoid replaced by the
    identity (the copies that end in one), so that it returns logits."""
    for relative, name in layouts:
        if (root / relative).is_file():
            spec = importlib.util.spec_from_file_location(module_name, root / relative)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            net = getattr(module, name)()
            if isinstance(net.layer[-1], nn.Sigmoid):
                net.layer[-1] = nn.Identity()
            return net
    raise SystemExit(f"{root}: none of {', '.join(path for path, _ in layouts)}")


def checkout(repo: Path, into: Path) -> Path:
    """A work tree for `repo`: itself when it has one, else the Python files of its HEAD, extracted from the bare
    git directory (a fetched mirror may lack large binaries, which would make a whole-tree archive fail)."""
    if not (repo / "HEAD").is_file() or (repo / ".git").exists():
        return repo
    git = ["git", "--git-dir", str(repo)]
    names = subprocess.run([*git, "ls-tree", "-r", "--name-only", "HEAD"], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    sources = [name for name in names if name.endswith(".py")]
    archive = subprocess.run([*git, "archive", "HEAD", "--", *sources], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def as_list(output: Tensor | list[Tensor] | tuple[Tensor, ...]) -> list[Tensor]:
    return list(output) if isinstance(output, (list, tuple)) else [output]


def randomise(net: nn.Module, shape: tuple[int, ...]) -> None:
    """Random affine batch-norm parameters and running statistics measured on one random batch."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None
                if module.affine:
                    module.weight.uniform_(0.5, 1.5, generator=generator)
                    module.bias.normal_(0, 0.2, generator=generator)
        net.train()(torch.randn(shape, generator=generator))


def compare(ours: list[Tensor], theirs: list[Tensor], mode: str) -> float:
    if len(ours) != len(theirs):
        raise SystemExit(f"{mode}: {len(ours)} outputs here, {len(theirs)} in the reference")
    worst = 0.0
    for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if a.shape != b.shape:
            raise SystemExit(f"{mode} output {index}: shape {tuple(a.shape)} here, {tuple(b.shape)} in the reference")
        diff = (a - b).abs().max().item()
        worst = max(worst, diff)
        print(f"  {mode:5s} output {index}: shape {tuple(a.shape)}, max |diff| {diff:.3e}, "
              f"output std {a.std().item():.3e}")
    return worst


def check(name: str, repo: Path) -> bool:
    adapter = load_adapter(name)
    shape = tuple(getattr(adapter, "INPUT", (2, 1, 256, 256)))
    with tempfile.TemporaryDirectory() as tmp:
        root = checkout(repo, Path(tmp))
        sys.path.insert(0, str(root))
        torch.manual_seed(0)
        ours = adapter.build_ours()
        theirs = adapter.build_reference(root)
    params_ours = sum(p.numel() for p in ours.parameters())
    params_theirs = sum(p.numel() for p in theirs.parameters())
    print(f"{name}: parameters {params_ours:,} here, {params_theirs:,} in {adapter.REPO}")
    randomise(ours, shape)
    state = ours.state_dict()
    theirs.load_state_dict(getattr(adapter, "to_reference", lambda s: s)(state), strict=True)
    to_logits = getattr(adapter, "reference_logits", lambda output: output)
    image = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    worst = 0.0
    with torch.no_grad():
        for mode in ("train", "eval"):
            # train-mode batch norm uses the batch's statistics and updates the running ones: start both equal
            theirs.load_state_dict(getattr(adapter, "to_reference", lambda s: s)(ours.state_dict()), strict=True)
            ours.train(mode == "train")
            theirs.train(mode == "train")
            torch.manual_seed(2)  # the same dropout masks on both sides, where a network has dropout
            mine = as_list(ours(image))
            torch.manual_seed(2)
            worst = max(worst, compare(mine, as_list(to_logits(theirs(image))), mode))
    ok = params_ours == params_theirs and worst <= TOLERANCE
    print(f"{name}: {'EQUAL' if ok else 'DIFFERENT'} (max |diff| {worst:.3e}, tolerance {TOLERANCE:g})")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="the backbone (an adapter in scripts/reference/)")
    parser.add_argument("--repo", type=Path, help="the reference code: a checkout or a bare git directory")
    parser.add_argument("--list", action="store_true", help="list the adapters and their repositories")
    args = parser.parse_args()
    if args.list:
        for path in sorted(ADAPTERS.glob("*.py")):
            print(f"{path.stem}: {load_adapter(path.stem).REPO}")
        return
    if not args.name or not args.repo:
        parser.error("give a backbone name and --repo (or --list)")
    sys.exit(0 if check(args.name, args.repo) else 1)


if __name__ == "__main__":
    main()
