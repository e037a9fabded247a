"""Export a backbone as a self-contained ONNX or TorchScript file that maps normalised images to probabilities.

The exported graph takes `image`, a float32 B x 1 x H x W batch normalised as in training, with H and W
multiples of 32, and returns `probability`, B x 1 x H x W (eval mode, sigmoid applied, DNA-Net's fused head).
Batch, height and width are dynamic. The normalisation and this input rule travel in the file's metadata
(`read_metadata`): ONNX `metadata_props`, or `irstd.json` among a TorchScript archive's extra files, so the file
runs without irstd.

ONNX goes through torch's `torch.export`-based exporter (the default since torch 2.9; it needs `onnxscript`,
declared with `onnx` and `onnxruntime` in the `export` extra). The TorchScript-based ONNX exporter is deprecated.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from irstd.models import final_output, input_side_multiple
from irstd.utils.files import atomic_write

# format -> file suffix
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
# input sides must be multiples of this (the deepest backbone downsamples 16x; the framework pads to 32 everywhere)
SIDE_MULTIPLE = 32
TORCHSCRIPT_METADATA = "irstd.json"
INPUT_RULE = ("float32 B x 1 x H x W: (pixel - mean) / std with pixels in the image's native units (0-255 for "
              "8-bit, 0-65535 for 16-bit; RGB converted to grayscale by PIL's luma rule); H and W multiples of "
              f"{SIDE_MULTIPLE}: pad at the bottom and right with 0 after normalising, crop the output back")
OUTPUT_RULE = "float32 B x 1 x H x W: target probability per pixel (sigmoid applied); a target pixel is > threshold"
# traced and exported at this batch; a second shape checks that the result does not depend on it
EXAMPLE_SHAPE = (2, 1, 64, 64)
CHECK_SHAPE = (1, 1, 96, 128)


class ProbabilityModel(nn.Module):
    """The exported graph: a backbone's final map through the sigmoid, as `IRSTDModule.probabilities`."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.net(image)
        return torch.sigmoid(final_output(logits))


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} is not an export format; choose one of {sorted(FORMATS)}")


def export_metadata(backbone: Mapping, mean: float, std: float, threshold: float, source: str) -> dict[str, str]:
    """What a user needs to run the file: the normalisation, the input and output rules, and where it came from."""
    if not std > 0:
        raise ValueError(f"the normalisation std must be positive, got {std}")
    return {"mean": repr(float(mean)), "std": repr(float(std)), "side_multiple": str(SIDE_MULTIPLE),
            "input": INPUT_RULE, "output": OUTPUT_RULE, "threshold": repr(float(threshold)),
            "backbone": json.dumps(dict(backbone), sort_keys=True), "source": source,
            "producer": f"irstd-export (torch {torch.__version__})"}


def export_model(net: nn.Module, output: str | Path, fmt: str, metadata: Mapping[str, str], opset: int = 18) -> Path:
    """Write `net` (a backbone returning logits) to `output` in format `fmt`, atomically; returns the path."""
    check_format(fmt)
    if SIDE_MULTIPLE % input_side_multiple(net):
        raise ValueError(f"{type(net).__name__} needs input sides that are multiples of {input_side_multiple(net)}, "
                         f"which the exported contract (multiples of {SIDE_MULTIPLE}) does not guarantee")
    model = ProbabilityModel(net).cpu().eval()
    output = Path(output)
    if fmt == "onnx":
        data = _onnx_bytes(model, metadata, opset)
    else:
        data = _torchscript_bytes(model, metadata)
    with atomic_write(output) as handle:
        handle.write(data)
    return output


def _onnx_bytes(model: ProbabilityModel, metadata: Mapping[str, str], opset: int) -> bytes:
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter imports it itself; here for a clear message)
    except ImportError as err:
        raise ImportError(f"format=onnx needs {err.name}, part of the export extra: pip install -e '.[export]' "
                          "(make install includes it)") from err
    from torch.export import Dim

    # sides as 32 x a free integer: the graph records the rule, and shape checks inside the backbones
    # (ALCNet's resizes) resolve for every allowed size instead of specialising to the example's
    sides = {0: Dim("batch", min=1), 2: SIDE_MULTIPLE * Dim("height_blocks", min=1),
             3: SIDE_MULTIPLE * Dim("width_blocks", min=1)}
    program = torch.onnx.export(model, (torch.zeros(EXAMPLE_SHAPE),), dynamo=True, dynamic_shapes={"image": sides},
                                input_names=["image"], output_names=["probability"], opset_version=opset,
                                verbose=False)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, dict(metadata))
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _torchscript_bytes(model: ProbabilityModel, metadata: Mapping[str, str]) -> bytes:
    generator = torch.Generator().manual_seed(0)
    example, check = torch.randn(EXAMPLE_SHAPE, generator=generator), torch.randn(CHECK_SHAPE, generator=generator)
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing turns shape comparisons (ALCNet's resizes) into constants and warns; the comparison below at
        # another batch and size shows whether the traced graph still holds.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, example)
        difference = (traced(check) - model(check)).abs().max().item()
    if difference > 1e-4:
        raise RuntimeError(f"the traced model differs from the eager one by {difference:.3g} at input "
                           f"{list(CHECK_SHAPE)}: its forward depends on the input size in a way tracing cannot "
                           "record; export format=onnx instead")
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_METADATA: json.dumps(dict(metadata), indent=2)})
    return buffer.getvalue()


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata `export_model` stored in an `.onnx` or TorchScript file (all values strings)."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        # a TorchScript archive: <name>/extra/irstd.json, readable without loading the model
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if name.endswith(f"/extra/{TORCHSCRIPT_METADATA}")]
            if not names:
                raise ValueError(f"{path} holds no {TORCHSCRIPT_METADATA}: not written by irstd-export")
            return json.loads(archive.read(names[0]))
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in proto.metadata_props}
