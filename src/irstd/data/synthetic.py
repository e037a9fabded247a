"""Synthetic SIRST-like dataset: cluttered infrared-looking scenes with small targets and exact masks.

It is the built-in default dataset so that training runs with no download. Layout (the field's usual one)::

    ROOT/images/synth_0000.png          8-bit grayscale
    ROOT/masks/synth_0000.png           0/255
    ROOT/img_idx/train_<split>.txt      one name per line
    ROOT/img_idx/test_<split>.txt
    ROOT/synthetic.json                 generator version + spec; a matching file marks ROOT as complete
    ROOT/targets.json                   name -> [{row, col, radius, kind, scr}], the ground truth

Every image draws from its own PCG64 stream seeded by (seed, index), so an image does not depend on how
many images are generated or in which order.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from irstd.fsutil import fsync_dir

# Bump when the rendering changes, so that a dataset made by an older generator is not silently reused.
GENERATOR_VERSION = 1

# A target's mask is where its own added signal exceeds this fraction of its own peak.
MASK_FRACTION = 0.3
# Minimum gap in pixels between two targets' masks (>= 1 keeps them from being 8-connected).
MASK_GAP = 3
# Smallest added amplitude in gray levels: below this 8-bit rounding erases the target.
MIN_AMPLITUDE = 6.0
# Placement tries per target before giving up on it (large targets in small images may not fit).
MAX_PLACEMENT_TRIES = 100
TARGET_KINDS = ("gaussian", "ellipse", "irregular")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class SyntheticSpec:
    num_train: int = 96
    num_test: int = 32
    height: int = 256
    width: int = 256
    min_targets: int = 1
    max_targets: int = 5
    min_radius: float = 1.0
    max_radius: float = 15.0
    seed: int = 0
    split_name: str = "synthetic"

    def __post_init__(self) -> None:
        for name in ("num_train", "num_test", "height", "width", "min_targets", "max_targets", "seed"):
            value = getattr(self, name)
            # bool is an int subclass; True as a count is almost certainly a config mistake.
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ValueError(f"SyntheticSpec.{name} must be an integer, got {value!r}")
        for name in ("min_radius", "max_radius"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
                raise ValueError(f"SyntheticSpec.{name} must be a finite number, got {value!r}")
        if self.num_train < 0:
            raise ValueError(f"SyntheticSpec.num_train must be >= 0, got {self.num_train}")
        if self.num_test < 0:
            raise ValueError(f"SyntheticSpec.num_test must be >= 0, got {self.num_test}")
        if self.num_train + self.num_test == 0:
            raise ValueError("SyntheticSpec.num_train + num_test must be >= 1")
        if self.height < 32:
            raise ValueError(f"SyntheticSpec.height must be >= 32, got {self.height}")
        if self.width < 32:
            raise ValueError(f"SyntheticSpec.width must be >= 32, got {self.width}")
        if self.min_targets < 0:
            raise ValueError(f"SyntheticSpec.min_targets must be >= 0, got {self.min_targets}")
        if self.max_targets < max(1, self.min_targets):
            raise ValueError(
                f"SyntheticSpec.max_targets must be >= max(1, min_targets={self.min_targets}), "
                f"got {self.max_targets}"
            )
        if self.min_radius < 0.5:
            raise ValueError(f"SyntheticSpec.min_radius must be >= 0.5, got {self.min_radius}")
        if self.max_radius < self.min_radius:
            raise ValueError(
                f"SyntheticSpec.max_radius must be >= min_radius={self.min_radius}, got {self.max_radius}"
            )
        if self.max_radius > min(self.height, self.width) / 4:
            raise ValueError(
                f"SyntheticSpec.max_radius must be <= min(height, width) / 4 = "
                f"{min(self.height, self.width) / 4}, got {self.max_radius}"
            )
        if self.seed < 0:
            raise ValueError(f"SyntheticSpec.seed must be >= 0, got {self.seed}")
        if not isinstance(self.split_name, str) or not _SPLIT_NAME.match(self.split_name):
            raise ValueError(
                "SyntheticSpec.split_name must be a non-empty name of [A-Za-z0-9_.-], "
                f"got {self.split_name!r}"
            )

    @property
    def names(self) -> list[str]:
        return [f"synth_{i:04d}" for i in range(self.num_train + self.num_test)]


# --------------------------------------------------------------------------------------------------
# Background
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _frequency_radius(ph: int, pw: int) -> np.ndarray:
    """|f| on the rfft2 grid, with the DC term set to 1 (it is zeroed later); cached: it is per image size."""
    freq = np.hypot(np.fft.fftfreq(ph)[:, None], np.fft.rfftfreq(pw)[None, :])
    freq[0, 0] = 1.0
    freq.flags.writeable = False
    return freq


def _fractal_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Zero-mean, unit-std noise with power spectrum ~ 1/f^beta (larger beta: smoother)."""
    h, w = shape
    # Synthesise on a larger canvas and crop, so the FFT's periodic wrap-around does not show.
    ph, pw = h + h // 4, w + w // 4
    amplitude = _frequency_radius(ph, pw) ** (-beta / 2)
    amplitude[0, 0] = 0.0
    # Complex white noise drawn as (re, im) pairs and viewed as complex128 without a copy.
    spectrum = rng.standard_normal((*amplitude.shape, 2)).view(np.complex128)[..., 0]
    spectrum *= amplitude
    field = np.fft.irfft2(spectrum, s=(ph, pw))[:h, :w]
    return (field - field.mean()) / field.std()


def _fractal_line(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """1-D version of `_fractal_noise`, for wiggly horizons."""
    freq = np.fft.rfftfreq(2 * n)
    freq[0] = 1.0
    amplitude = freq ** (-beta / 2)
    amplitude[0] = 0.0
    spectrum = rng.standard_normal(freq.shape) + 1j * rng.standard_normal(freq.shape)
    line = np.fft.irfft(spectrum * amplitude, n=2 * n)[:n]
    return (line - line.mean()) / line.std()


def _soft_limit(x: np.ndarray, low: float, high: float, knee: float) -> np.ndarray:
    """Compress values beyond [low + knee, high - knee] smoothly into [low, high], like sensor saturation."""
    top, bottom = high - knee, low + knee
    x = np.where(x > top, top + knee * np.tanh((x - top) / knee), x)
    return np.where(x < bottom, bottom - knee * np.tanh((bottom - x) / knee), x)


def _render_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A cluttered infrared-looking background in gray levels (float), including sensor noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = rng.uniform(50, 130)

    # Sky: smooth large-scale clutter plus a little fine grain, strength varied per image.
    sky = base + rng.uniform(3, 14) * _fractal_noise(rng, (h, w), rng.uniform(1.8, 3.2))
    sky += rng.uniform(0.3, 2.5) * _fractal_noise(rng, (h, w), rng.uniform(0.6, 1.4))

    if rng.random() < 0.6:
        # Clouds: soft-thresholded smooth noise gives flat bright interiors with sharp-ish rims.
        noise = _fractal_noise(rng, (h, w), rng.uniform(2.8, 3.6))
        cover = 1.0 - np.exp(-np.maximum(noise - rng.uniform(-0.2, 1.2), 0.0) / rng.uniform(0.3, 1.0))
        texture = _fractal_noise(rng, (h, w), rng.uniform(2.0, 2.6))
        sky += rng.uniform(20, 80) * cover * (1.0 + rng.uniform(0.05, 0.2) * texture)

    # Gradient in a random direction (atmospheric path length, vignetting).
    theta = rng.uniform(-np.pi, np.pi)
    sky += rng.uniform(0, 40) * ((yy / h - 0.5) * np.cos(theta) + (xx / w - 0.5) * np.sin(theta))

    scene = sky
    layout = rng.random()
    if layout < 0.45:
        # Ground below a sloped, wiggly horizon; optionally buildings with straight edges on it.
        horizon = (
            h * rng.uniform(0.5, 0.85)
            + rng.uniform(-0.15, 0.15) * (xx[0] - w / 2)
            + rng.uniform(0.5, 6.0) * _fractal_line(rng, w, rng.uniform(1.5, 2.5))
        )
        ground_base = base + rng.uniform(-30, 50)
        ground = (
            ground_base
            + rng.uniform(6, 18) * _fractal_noise(rng, (h, w), rng.uniform(2.0, 3.0))
            + rng.uniform(1, 5) * _fractal_noise(rng, (h, w), rng.uniform(1.0, 1.6))
        )
        weight = np.clip((yy - horizon[None, :]) / rng.uniform(0.7, 2.5) + 0.5, 0.0, 1.0)
        scene = sky * (1.0 - weight) + ground * weight
        if rng.random() < 0.5:
            for _ in range(rng.integers(1, 6)):
                x0 = rng.uniform(0, w)
                x1 = x0 + rng.uniform(4, w / 5)
                top = h * rng.uniform(0.3, 0.85) - rng.uniform(4, h / 4)
                block = (xx >= x0) & (xx < x1) & (yy >= top) & (yy < horizon[None, :] + 2)
                level = ground_base + rng.uniform(-20, 50) + rng.uniform(0, 0.3) * (yy - top)
                scene = np.where(block, level, scene)
    elif layout < 0.7:
        # Coast / sea-land split: a straight edge across the image between two textured regions.
        angle = rng.uniform(-np.pi, np.pi)
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
        side = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
        weight = np.clip(side / rng.uniform(0.7, 3.0) + 0.5, 0.0, 1.0)
        other = (
            base
            + rng.uniform(-40, 40)
            + rng.uniform(3, 15) * _fractal_noise(rng, (h, w), rng.uniform(1.3, 2.6))
        )
        scene = sky * (1.0 - weight) + other * weight

    scene = _soft_limit(scene, 10.0, 225.0, 30.0)

    # Sensor noise: temporal Gaussian plus fixed-pattern column/row stripes.
    scene += rng.normal(0.0, rng.uniform(0.8, 3.5), (h, w))
    scene += rng.normal(0.0, rng.uniform(0.0, 1.5), (1, w))
    scene += rng.normal(0.0, rng.uniform(0.0, 0.8), (h, 1))
    return scene


# --------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------


def _draw_radius(rng: np.random.Generator, spec: SyntheticSpec) -> float:
    # Log-uniform with a square on the uniform draw: with the defaults ~3/4 of radii are < 5 px, like SIRST.
    ratio = spec.max_radius / spec.min_radius
    return float(spec.min_radius * ratio ** (rng.random() ** 2))


def _target_profile(
    rng: np.random.Generator, kind: str, radius: float, dy: np.ndarray, dx: np.ndarray
) -> np.ndarray:
    """Unnormalised target signal on the grid offsets (dy, dx); it falls to MASK_FRACTION near `radius`."""
    log_frac = math.log(MASK_FRACTION)
    if kind == "gaussian":
        # Generalised Gaussian: exponent > 2 gives flatter tops and crisper rims.
        dist = np.hypot(dy, dx) / radius
        return np.exp(log_frac * dist ** rng.uniform(2.0, 3.0))
    if kind == "ellipse":
        angle = rng.uniform(0, np.pi)
        minor = max(0.6, radius * rng.uniform(0.35, 0.9))
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        dist = np.hypot(u / radius, v / minor)
        return np.exp(log_frac * dist ** rng.uniform(2.0, 3.0))
    # Irregular: a few overlapping Gaussians at small offsets.
    count = int(rng.integers(2, 5))
    offset = radius * rng.uniform(0, 0.55, count)
    direction = rng.uniform(-np.pi, np.pi, count)
    sub_radius = np.maximum(0.7, radius * rng.uniform(0.45, 0.75, count))
    weight = rng.uniform(0.5, 1.0, count)
    signal = np.zeros_like(dy)
    for k in range(count):
        dist = np.hypot(dy - offset[k] * np.sin(direction[k]), dx - offset[k] * np.cos(direction[k]))
        signal += weight[k] * np.exp(log_frac * (dist / sub_radius[k]) ** 2)
    return signal


def render_scene(rng: np.random.Generator, spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Render one image: (uint8 HxW image, bool HxW mask, targets as dicts {row, col, radius, kind, scr}).

    Target masks are exactly where a target's own signal exceeds MASK_FRACTION of its peak, and are kept
    MASK_GAP pixels apart, so the mask's 8-connected components correspond one-to-one to `targets`.
    """
    h, w = spec.height, spec.width
    background = _render_background(rng, h, w)
    signal = np.zeros((h, w))
    mask = np.zeros((h, w), dtype=bool)
    blocked = np.zeros((h, w), dtype=bool)
    targets: list[dict] = []

    count = int(rng.integers(spec.min_targets, spec.max_targets + 1))
    for _ in range(count):
        for _try in range(MAX_PLACEMENT_TRIES):
            radius = _draw_radius(rng, spec)
            kind = TARGET_KINDS[int(rng.integers(len(TARGET_KINDS)))]
            margin = math.ceil(radius) + 1
            row = rng.uniform(margin, h - 1 - margin)
            col = rng.uniform(margin, w - 1 - margin)
            # The patch doubles as the local clutter window and is wide enough for the signal's tails.
            half = max(10, math.ceil(3.5 * radius) + MASK_GAP + 2)
            r0, r1 = max(0, int(row) - half), min(h, int(row) + half + 1)
            c0, c1 = max(0, int(col) - half), min(w, int(col) + half + 1)
            yy, xx = np.mgrid[r0:r1, c0:c1]
            shape = _target_profile(rng, kind, radius, yy - row, xx - col)
            # Normalising by the sampled maximum guarantees at least one mask pixel, however small.
            shape /= shape.max()
            footprint = shape > MASK_FRACTION
            if blocked[r0:r1, c0:c1][footprint].any():
                continue
            # Guard for the one-component-per-target promise; irregular sub-blobs overlap enough that
            # it does not trigger with the current shape parameters.
            if ndimage.label(footprint, structure=_EIGHT_CONNECTED)[1] != 1:
                continue
            break
        else:
            if len(targets) >= spec.min_targets:
                break
            raise RuntimeError(
                f"could not place {spec.min_targets} non-touching targets in a {h}x{w} image; "
                "lower min_targets or max_radius"
            )

        clutter = background[r0:r1, c0:c1][~footprint]
        clutter_std = max(float(clutter.std()), 0.5)
        scr = rng.uniform(2.0, 10.0)
        # Cap so the brightest pixel stays below saturation (the background is soft-limited to <= 225).
        headroom = 252.0 - float(background[r0:r1, c0:c1][footprint].max())
        amplitude = float(np.clip(scr * clutter_std, MIN_AMPLITUDE, max(headroom, MIN_AMPLITUDE)))

        signal[r0:r1, c0:c1] += amplitude * shape
        mask[r0:r1, c0:c1] |= footprint
        blocked[r0:r1, c0:c1] |= ndimage.binary_dilation(footprint, _EIGHT_CONNECTED, iterations=MASK_GAP)
        targets.append(
            {
                "row": round(float(row), 3),
                "col": round(float(col), 3),
                "radius": round(radius, 3),
                "kind": kind,
                "scr": round(amplitude / clutter_std, 3),
            }
        )

    image = np.clip(np.rint(background + signal), 0, 255).astype(np.uint8)
    return image, mask, targets


# --------------------------------------------------------------------------------------------------
# Dataset on disk
# --------------------------------------------------------------------------------------------------


def _params(spec: SyntheticSpec) -> dict:
    return {
        "generator": "irstd.data.synthetic",
        "version": GENERATOR_VERSION,
        # Plain Python types, so that numpy scalars in the spec serialise and compare equal to the json.
        "spec": {
            "num_train": int(spec.num_train),
            "num_test": int(spec.num_test),
            "height": int(spec.height),
            "width": int(spec.width),
            "min_targets": int(spec.min_targets),
            "max_targets": int(spec.max_targets),
            "min_radius": float(spec.min_radius),
            "max_radius": float(spec.max_radius),
            "seed": int(spec.seed),
            "split_name": spec.split_name,
        },
    }


def _dump_json(obj: object) -> str:
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        # Flushed before the directory rename publishes them, so a crash cannot leave empty files.
        os.fsync(handle.fileno())


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # Level 1: twice as fast as the default for ~15% larger files (noisy images barely compress anyway).
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _existing_is_complete(root: Path, params: dict) -> bool:
    """True if `root` holds this exact dataset, False if it is absent or an empty directory; else raise."""
    if not root.exists():
        return False
    if root.is_dir() and not any(root.iterdir()):
        return False
    hint = f"delete {root} or choose another root"
    try:
        existing = json.loads((root / "synthetic.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{root} exists but is not a complete synthetic dataset ({err}); {hint}") from err
    if existing != params:
        raise ValueError(
            f"{root} holds a synthetic dataset made with different parameters "
            f"(found {existing}, wanted {params}); {hint}"
        )
    return True


def generate_synthetic(
    root: str | os.PathLike, spec: SyntheticSpec = SyntheticSpec(), progress: bool = False
) -> Path:
    """Generate the dataset described by `spec` at `root` (a no-op if it is already there); return `root`.

    Written into a temporary sibling directory that is renamed to `root` at the end, so `root` is either
    absent or complete, also when several processes race to create it.
    """
    root = Path(root)
    params = _params(spec)
    if _existing_is_complete(root, params):
        return root

    root.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its 0700 mode would stick to ROOT after the rename; mkdir honours the umask.
    tmp = root.parent / f".{root.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        _write_dataset(tmp, spec, params, progress)
        try:
            # POSIX rename replaces an empty directory but fails on a non-empty one (a finished rival).
            os.rename(tmp, root)
        except OSError:
            if _existing_is_complete(root, params):
                return root
            raise
        fsync_dir(root.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _write_dataset(out: Path, spec: SyntheticSpec, params: dict, progress: bool) -> None:
    for sub in ("images", "masks", "img_idx"):
        (out / sub).mkdir()
    names = spec.names
    targets = {}
    for index, name in enumerate(tqdm(names, desc="synthetic images", disable=not progress)):
        rng = np.random.Generator(np.random.PCG64([spec.seed, index]))
        image, mask, targets[name] = render_scene(rng, spec)
        _write_bytes(out / "images" / f"{name}.png", _png_bytes(image))
        _write_bytes(out / "masks" / f"{name}.png", _png_bytes(mask.astype(np.uint8) * 255))

    train, test = names[: spec.num_train], names[spec.num_train :]
    for stage, subset in (("train", train), ("test", test)):
        _write_bytes(
            out / "img_idx" / f"{stage}_{spec.split_name}.txt", "".join(f"{n}\n" for n in subset).encode()
        )
    _write_bytes(out / "targets.json", _dump_json(targets).encode())
    # Written last: its presence (and match) is what marks a directory as a complete dataset.
    _write_bytes(out / "synthetic.json", _dump_json(params).encode())
    for sub in ("images", "masks", "img_idx"):
        fsync_dir(out / sub)
    fsync_dir(out)
