"""Reference adapter for MSHNet (Lliu666/MSHNet, `model/MSHNet.py`; its loss in `model/loss.py`).

The release's `forward(x, warm_flag)` returns `(side_heads, output)`: with warm_flag=True (after its warm-up
epochs, and always at test) the four side heads at 1, 1/2, 1/4, 1/8 resolution and the fused map. The wrapper
below calls it with warm_flag=True and, in training mode, brings the side heads to full size with the release's
own upsamplers (those feeding its fusion conv), which is what irstd's MSHNet returns.

Run directly, it also checks irstd's SLS loss against the release's `SLSIoULoss` and its per-batch training
objective (main.py: the fused map and the four side heads, each against the label max-pooled to its size,
averaged over the five heads):

    .venv/bin/python scripts/reference/mshnet.py /work/.mirror/Lliu666+MSHNet/repo
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch
from torch import nn

REPO = "Lliu666/MSHNet"
INPUT = (2, 1, 64, 64)


def _load(root: Path, relative: str, name: str) -> types.ModuleType:
    # model/loss.py imports scikit-image for nothing the loss uses
    sys.modules.setdefault("skimage", types.ModuleType("skimage"))
    sys.modules["skimage"].measure = None
    spec = importlib.util.spec_from_file_location(name, root / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_reference(root: Path) -> nn.Module:
    released = _load(Path(root), "model/MSHNet.py", "reference_mshnet_model")

    class Reference(released.MSHNet):
        def forward(self, x):
            heads, output = super().forward(x, True)
            if not self.training:
                return output
            mask0, mask1, mask2, mask3 = heads
            return [mask0, self.up(mask1), self.up_4(mask2), self.up_8(mask3), output]

    return Reference(1)


def build_ours() -> nn.Module:
    from irstd.models import build_backbone

    return build_backbone("mshnet")


def check_loss(root: Path) -> float:
    """Largest |difference| between irstd's SLSLoss and the release's loss over a few random cases."""
    from irstd.losses import SLSLoss

    released = _load(Path(root), "model/loss.py", "reference_mshnet_loss")
    reference = released.SLSIoULoss()
    generator = torch.Generator().manual_seed(0)
    worst = 0.0

    def report(label: str, ours: torch.Tensor, theirs: torch.Tensor) -> None:
        nonlocal worst
        diff = (ours - theirs).abs().item()
        worst = max(worst, diff)
        print(f"  {label:48s} ours {ours.item():.6f} reference {theirs.item():.6f} |diff| {diff:.2e}")

    for shape in [(4, 1, 32, 32), (2, 1, 48, 64), (1, 1, 16, 16)]:
        logits = 3 * torch.randn(shape, generator=generator) - 2
        hard = (torch.rand(shape, generator=generator) > 0.9).float()
        soft = torch.rand(shape, generator=generator) * hard
        for name, target in (("hard", hard), ("soft", soft)):
            # epoch > warm_epoch: the full SLS loss; with_shape=False drops the location term;
            # during warm-up the plain per-image soft IoU
            report(f"{shape} {name} label, after warm-up", SLSLoss()(logits, target),
                   reference(logits, target, 5, 6))
            report(f"{shape} {name} label, with_shape=False", SLSLoss(location=False)(logits, target),
                   reference(logits, target, 5, 6, with_shape=False))
            report(f"{shape} {name} label, warm-up", SLSLoss(scale=False, location=False)(logits, target),
                   reference(logits, target, 5, 5))

    # main.py's objective for one batch: the fused map at full size and heads at 1, 1/2, 1/4, 1/8 size, each
    # against the label max-pooled 2x2 once per halving, summed and divided by the five heads
    label = (torch.rand(2, 1, 64, 64, generator=generator) > 0.95).float()
    fused = torch.randn(2, 1, 64, 64, generator=generator)
    heads = [torch.randn(2, 1, 64 // 2**k, 64 // 2**k, generator=generator) for k in range(4)]
    for tensor in [fused, *heads]:
        tensor.requires_grad_(True)
    down, labels, theirs = nn.MaxPool2d(2, 2), label, reference(fused, label, 5, 6)
    for j, head in enumerate(heads):
        if j > 0:
            labels = down(labels)
        theirs = theirs + reference(head, labels, 5, 6)
    ours = SLSLoss()([*heads, fused], label)
    report("training objective, 5 heads (ours / 5)", ours.detach() / 5, theirs.detach() / 5)
    their_grads = torch.autograd.grad(theirs, [fused, *heads])
    our_grads = torch.autograd.grad(ours, [fused, *heads])
    diff = max((a - b).abs().max().item() for a, b in zip(our_grads, their_grads, strict=True))
    scale = max(g.abs().max().item() for g in their_grads)
    print(f"  {'its gradients (largest ' + f'{scale:.2e})':48s} max |diff| {diff:.2e}")
    return max(worst, diff)


if __name__ == "__main__":
    import subprocess
    import tempfile

    repo = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        root = repo
        if (repo / "HEAD").is_file() and not (repo / ".git").exists():
            archive = subprocess.run(["git", "--git-dir", str(repo), "archive", "HEAD"], check=True,
                                     capture_output=True)
            subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
            root = Path(tmp)
        worst = check_loss(root)
    print(f"SLS loss: {'EQUAL' if worst <= 1e-5 else 'DIFFERENT'} (max |diff| {worst:.2e})")
    sys.exit(0 if worst <= 1e-5 else 1)
