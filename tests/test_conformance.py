"""Our evaluation of the two released LESPS checkpoints reproduces the official evaluation
(../shared/checkpoints/README.md): the second table with the default size-mismatch policy
(Misc_111's mask resized), the first with `crop` (what the official loader does)."""

from pathlib import Path

import pytest
import torch

from conftest import SIRST
from irstd.data.datamodule import EvaluationOptions, IRSTDDataModule, LoadingOptions, PolicyOptions
from irstd.inference.evaluation import evaluate_batches
from irstd.training.module import IRSTDModule

CHECKPOINTS = Path(__file__).resolve().parents[2] / "shared" / "checkpoints"
pytestmark = pytest.mark.skipif(not (SIRST.is_dir() and CHECKPOINTS.is_dir()),
                                reason=f"needs the SIRST dataset and released checkpoints under {CHECKPOINTS.parent}")

# (IoU x100, pixel accuracy x100, found of 263, Fa x1e6) from the official evaluation code
PUBLISHED = {
    ("acm", "crop"): (48.554, 66.557, 234, 43.081), ("alcnet", "crop"): (49.833, 77.508, 241, 39.788),
    ("acm", "resize"): (49.291, 67.585, 235, 40.680), ("alcnet", "resize"): (50.551, 78.708, 242, 36.770),
}
FILES = {"acm": "ACM_LESPS_centroid.pth.tar", "alcnet": "ALCNet_LESPS_centroid.pth.tar"}


def sirst_test_loader(policy: str):
    # the official protocol: SIRST3 statistics, a full extra 32-block of padding, one image per pass
    datamodule = IRSTDDataModule(root=str(SIRST), split="SIRST", mean=95.010, std=41.511,
                                 evaluation=EvaluationOptions(pad_always=True),
                                 policies=PolicyOptions(size_mismatch=policy),
                                 loading=LoadingOptions(eval_batch_size=1, num_workers=0), progress=False)
    datamodule.setup("test")
    return datamodule.test_dataloader()


@pytest.mark.parametrize("backbone", ["acm", "alcnet"])
def test_released_checkpoint_scores_as_published(backbone):
    torch.set_num_threads(2)
    model = IRSTDModule(backbone={"name": backbone}, weights=str(CHECKPOINTS / FILES[backbone])).eval()
    cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def predict(batch):
        name = batch["name"][0]
        if name not in cache:
            cache[name] = model.probabilities(batch["image"])
        return cache[name]

    for policy in ("resize", "crop"):
        metrics, _ = evaluate_batches(sirst_test_loader(policy), predict, device=torch.device("cpu"))
        iou, pixacc, found, fa = PUBLISHED[backbone, policy]
        assert metrics["targets"] == 263
        assert 100 * metrics["pixacc"] == pytest.approx(pixacc, abs=0.05), policy
        assert metrics["found"] == found, policy
        assert 100 * metrics["iou"] == pytest.approx(iou, abs=0.05), policy
        assert 1e6 * metrics["fa"] == pytest.approx(fa, abs=0.1), policy
