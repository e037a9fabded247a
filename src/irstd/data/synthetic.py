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

from irstd.ops.components import EIGHT_CONNECTED
from irstd.utils.files import fsync_dir

# Bump when the rendering changes, so that a dataset made by an older generator is not silently reused.
GENERATOR_VERSION = 2

# A target's mask is where its own added signal exceeds this fraction of its own peak.
MASK_FRACTION = 0.3
# Minimum gap in pixels between two targets' masks (>= 1 keeps them from being 8-connected).
MASK_GAP = 3
# Smallest added amplitude in gray levels: below this 8-bit rounding erases the target.
MIN_AMPLITUDE = 6.0
# Placement tries per target before giving up on it (large targets in small images may not fit).
MAX_PLACEMENT_TRIES = 100
TARGET_KINDS = ("gaussian", "ellipse", "irregular")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class SyntheticSpec:
    num_train: int = 96
    num_test: int = 32
    height: int = 256
    width: int = 256
    min_targets: int = 1
    max_targets: int = 5
    # Radii whose mask areas follow SIRST's (5/50/90th percentiles about 7/20/78 px against SIRST's 7/20/66);
    # version 1's 1-15 px made a third of the targets 4 px or less (SIRST: 2 %), which short runs never learn.
    min_radius: float = 2.2
    max_radius: float = 7.5
    seed: int = 0
    split_name: str = "synthetic"

    def __post_init__(self) -> None:
        # The checks run in this order, so a spec with several faults always reports the same one first.
        self._check_types()
        self._check_counts_and_size()
        self._check_targets()
        self._at_least("seed", 0)
        if not isinstance(self.split_name, str) or not _SPLIT_NAME.match(self.split_name):
            raise ValueError(
                "SyntheticSpec.split_name must be a non-empty name of [A-Za-z0-9_.-], "
                f"got {self.split_name!r}"
            )

    def _check_types(self) -> None:
        for name in ("num_train", "num_test", "height", "width", "min_targets", "max_targets", "seed"):
            value = getattr(self, name)
            # bool is an int subclass; True as a count is almost certainly a config mistake.
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ValueError(f"SyntheticSpec.{name} must be an integer, got {value!r}")
        for name in ("min_radius", "max_radius"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
                raise ValueError(f"SyntheticSpec.{name} must be a finite number, got {value!r}")

    def _at_least(self, name: str, minimum: float) -> None:
        value = getattr(self, name)
        if value < minimum:
            raise ValueError(f"SyntheticSpec.{name} must be >= {minimum}, got {value}")

    def _check_counts_and_size(self) -> None:
        self._at_least("num_train", 0)
        self._at_least("num_test", 0)
        if self.num_train + self.num_test == 0:
            raise ValueError("SyntheticSpec.num_train + num_test must be >= 1")
        self._at_least("height", 32)
        self._at_least("width", 32)

    def _check_targets(self) -> None:
        self._at_least("min_targets", 0)
        if self.max_targets < max(1, self.min_targets):
            raise ValueError(
                f"SyntheticSpec.max_targets must be >= max(1, min_targets={self.min_targets}), "
                f"got {self.max_targets}"
            )
        self._at_least("min_radius", 0.5)
        if self.max_radius < self.min_radius:
            raise ValueError(
                f"SyntheticSpec.max_radius must be >= min_radius={self.min_radius}, got {self.max_radius}"
            )
        if self.max_radius > min(self.height, self.width) / 4:
            raise ValueError(
                f"SyntheticSpec.max_radius must be <= min(height, width) / 4 = "
                f"{min(self.height, self.width) / 4}, got {self.max_radius}"
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
    # Log-uniform with a square on the uniform draw: small radii are the most common, as in SIRST.
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
            if ndimage.label(footprint, structure=EIGHT_CONNECTED)[1] != 1:
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
        blocked[r0:r1, c0:c1] |= ndimage.binary_dilation(footprint, EIGHT_CONNECTED, iterations=MASK_GAP)
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


# --------------------------------------------------------------------------------------------------
# Study targets (mapping-degeneration study)
# --------------------------------------------------------------------------------------------------
# The paper's Sec. 5.2.1 places Gaussian extended targets of a chosen peak and radius, or shapes taken from real
# masks, on backgrounds, and labels them with points at chosen offsets or in chosen numbers. Signals are added
# in float gray levels without clipping: the paper's peaks reach 500.

# Tails below this fraction of the peak are cut off, so a patch is finite.
_TAIL_FRACTION = 1e-3


def gaussian_target(radius: float, peak: float) -> tuple[np.ndarray, np.ndarray]:
    """(signal, mask) patches of odd side, centred on the patch's centre pixel.

    signal = peak * exp(ln(MASK_FRACTION) * (d / radius)^2), d = distance to the centre: a Gaussian that falls to
    MASK_FRACTION of its peak at `radius`, the same rule as the dataset's targets. mask = signal >= MASK_FRACTION *
    peak, the disk of `radius`. The patch reaches where the signal falls below 1e-3 of the peak.
    """
    if not radius > 0 or not peak > 0:
        raise ValueError(f"gaussian_target needs radius > 0 and peak > 0, got radius={radius}, peak={peak}")
    half = math.ceil(radius * math.sqrt(math.log(_TAIL_FRACTION) / math.log(MASK_FRACTION)))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    distance = np.hypot(yy, xx) / radius
    signal = peak * np.exp(math.log(MASK_FRACTION) * distance**2)
    return signal, distance <= 1.0


def shaped_target(shape: np.ndarray, peak: float) -> tuple[np.ndarray, np.ndarray]:
    """(signal, mask) of a target whose mask is exactly `shape` (2-D bool, one 8-connected component).

    With s the signed distance to the shape's border (0 on its border pixels, > 0 inside, <= -1 outside) and
    s_max its largest value, signal = peak * exp(ln(MASK_FRACTION) * u^2), u = (s_max - s) / (s_max + 1/2): `peak`
    at the innermost pixel, above MASK_FRACTION of it exactly on the shape (u < 1) and below it outside (u > 1),
    decaying on into a margin. The patches are the shape's bounding box plus that margin, with odd sides.
    """
    shape = np.asarray(shape, dtype=bool)
    if shape.ndim != 2:
        raise ValueError(f"shaped_target needs a 2-D mask, got shape {shape.shape}")
    if not peak > 0:
        raise ValueError(f"shaped_target needs peak > 0, got {peak}")
    components = ndimage.label(shape, structure=EIGHT_CONNECTED)[1]
    if components != 1:
        raise ValueError(f"shaped_target needs exactly one 8-connected component, got {components}")
    rows, cols = np.nonzero(shape)
    shape = shape[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    depth = float(ndimage.distance_transform_edt(np.pad(shape, 1)).max()) - 1.0
    scale = depth + 0.5
    # Outside, u passes the tail cut-off at s = depth - tail * scale.
    tail = math.sqrt(math.log(_TAIL_FRACTION) / math.log(MASK_FRACTION))
    margin = math.ceil(tail * scale - depth) + 1
    padded = np.pad(shape, ((margin, margin + 1 - shape.shape[0] % 2), (margin, margin + 1 - shape.shape[1] % 2)))
    signed = np.where(padded, ndimage.distance_transform_edt(padded) - 1.0, -ndimage.distance_transform_edt(~padded))
    signal = peak * np.exp(math.log(MASK_FRACTION) * ((depth - signed) / scale) ** 2)
    return signal, padded


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Tight bool crop of the largest 8-connected component of a mask (the source of real target shapes)."""
    labels, count = ndimage.label(np.asarray(mask) > 0, structure=EIGHT_CONNECTED)
    if count == 0:
        raise ValueError("the mask holds no target")
    sizes = np.bincount(labels.ravel())[1:]
    component = labels == int(np.argmax(sizes)) + 1
    rows, cols = np.nonzero(component)
    return component[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def real_target_shapes(root: str | Path, names: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
    """name -> the largest target of ROOT/masks/<name>.png (any image format PIL reads; nonzero = target)."""
    from irstd.data.sources import decode_image, find_file

    shapes = {}
    for name in names:
        path = find_file(Path(root) / "masks", name)
        if path is None:
            raise FileNotFoundError(f"no mask for target shape {name!r} in {Path(root) / 'masks'}")
        try:
            shapes[name] = largest_component(decode_image(path) > 0)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
    return shapes


def generated_backgrounds(count: int, size: int, seed: int) -> list[np.ndarray]:
    """`count` float32 size x size cluttered backgrounds, one PCG64 stream per (seed, index) like the dataset."""
    return [_render_background(np.random.default_rng([seed, index]), size, size).astype(np.float32)
            for index in range(count)]


# A real background crop keeps this many pixels between itself and any target of its image.
_BACKGROUND_MARGIN = 5
_BACKGROUND_TRIES = 50


def real_background_crops(root: str | Path, count: int, size: int, rng: np.random.Generator,
                          split: str | None = None) -> list[np.ndarray]:
    """`count` float32 size x size crops of ROOT/images (native gray levels) that hold no target.

    A crop is kept when no pixel of ROOT/masks/<name> lies in it or within 5 px of it. Images come from the list
    ROOT/img_idx/<split>.txt when `split` names one (e.g. "train_SIRST"), else from every image with a mask.
    """
    from irstd.data.sources import decode_image, find_file, read_split_file

    root = Path(root)
    if split:
        names = read_split_file(root / "img_idx" / f"{split}.txt")
    else:
        names = sorted(path.stem for path in (root / "masks").glob("*") if path.is_file())
    if not names:
        raise ValueError(f"no images to take backgrounds from in {root}")
    crops: list[np.ndarray] = []
    for _ in range(_BACKGROUND_TRIES * count):
        if len(crops) == count:
            return crops
        name = names[int(rng.integers(len(names)))]
        image_path, mask_path = find_file(root / "images", name), find_file(root / "masks", name)
        if image_path is None or mask_path is None:
            raise FileNotFoundError(f"{root}: image or mask of {name!r} is missing")
        image = decode_image(image_path)
        height, width = image.shape
        if height < size or width < size:
            continue
        mask = decode_image(mask_path) > 0
        if mask.shape != image.shape:
            continue  # a mismatched pair cannot say where its targets are
        # A square structuring element: the default cross would grow a diamond, letting targets come within
        # ~3.5 px of a crop's corners diagonally.
        blocked = (ndimage.binary_dilation(mask, EIGHT_CONNECTED, iterations=_BACKGROUND_MARGIN)
                   if mask.any() else mask)
        row, col = int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1))
        if not blocked[row:row + size, col:col + size].any():
            crops.append(image[row:row + size, col:col + size].astype(np.float32))
    raise ValueError(f"found only {len(crops)} of {count} target-free {size}x{size} crops in {root}; "
                     "use smaller frames or generated backgrounds")


def place_target(background: np.ndarray, signal: np.ndarray, mask: np.ndarray, row: int,
                 col: int) -> tuple[np.ndarray, np.ndarray]:
    """Add `signal` to a copy of `background` with the patches' centre pixel at (row, col).

    Returns (float32 image, full-size bool mask). The signal's tail may leave the frame and is cut there; the mask
    may not (a ValueError), since a cut target would not be the target the study asked for.
    """
    height, width = background.shape
    half_h, half_w = signal.shape[0] // 2, signal.shape[1] // 2
    mask_rows, mask_cols = np.nonzero(mask)
    top, left = row - half_h, col - half_w
    if (top + mask_rows.min() < 0 or left + mask_cols.min() < 0 or top + mask_rows.max() >= height
            or left + mask_cols.max() >= width):
        raise ValueError(f"a target of {mask.shape[0]}x{mask.shape[1]} px at ({row}, {col}) leaves the "
                         f"{height}x{width} frame")
    r0, c0 = max(0, top), max(0, left)
    r1, c1 = min(height, top + signal.shape[0]), min(width, left + signal.shape[1])
    image = background.astype(np.float32, copy=True)
    full_mask = np.zeros((height, width), dtype=bool)
    image[r0:r1, c0:c1] += signal[r0 - top:r1 - top, c0 - left:c1 - left].astype(np.float32)
    full_mask[r0:r1, c0:c1] = mask[r0 - top:r1 - top, c0 - left:c1 - left]
    return image, full_mask


def centroid_pixel(mask: np.ndarray) -> tuple[int, int]:
    """The field's centroid point label: the floor of the 0-based centroid of the mask's pixels, (row, col)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("centroid of an empty mask")
    return int(np.floor(rows.mean())), int(np.floor(cols.mean()))


def offset_point(mask: np.ndarray, distance: float, angle_deg: float = 0.0) -> tuple[int, int]:
    """A point label `distance` px from the centroid pixel towards `angle_deg` (0: right, 90: up), rounded.

    Like the field's centroid rule, the point may fall outside a non-convex target or beyond a small one's edge;
    only a point outside the frame is an error.
    """
    row, col = centroid_pixel(mask)
    angle = math.radians(angle_deg)
    point = (int(round(row - distance * math.sin(angle))), int(round(col + distance * math.cos(angle))))
    if not (0 <= point[0] < mask.shape[0] and 0 <= point[1] < mask.shape[1]):
        raise ValueError(f"a point {distance} px from the centroid at {angle_deg} degrees, {point}, "
                         f"is outside the {mask.shape[0]}x{mask.shape[1]} frame")
    return point


def spread_points(mask: np.ndarray, count: int, rng: np.random.Generator,
                  sigma: float | None = None) -> list[tuple[int, int]]:
    """`count` distinct target pixels: the centroid pixel, then draws from an isotropic Gaussian around the centroid.

    sigma defaults to half the equivalent radius sqrt(area / pi); draws outside the mask or repeated are redrawn.
    """
    area = int(np.count_nonzero(mask))
    if count < 1 or count > area:
        raise ValueError(f"spread_points needs 1 <= count <= {area} (the target's pixels), got {count}")
    first = centroid_pixel(mask)
    if not mask[first]:
        raise ValueError("the centroid pixel is outside the target (a non-convex shape)")
    rows, cols = np.nonzero(mask)
    centre = (rows.mean(), cols.mean())
    sigma = sigma if sigma is not None else math.sqrt(area / math.pi) / 2
    points = [first]
    while len(points) < count:
        row, col = (int(round(v)) for v in rng.normal(centre, max(sigma, 0.5)))
        if 0 <= row < mask.shape[0] and 0 <= col < mask.shape[1] and mask[row, col] and (row, col) not in points:
            points.append((row, col))
    return points


def points_label(points: list[tuple[int, int]], shape: tuple[int, int]) -> np.ndarray:
    """float32 label of `shape`: 1 at each point, 0 elsewhere."""
    label = np.zeros(shape, dtype=np.float32)
    for row, col in points:
        label[row, col] = 1.0
    return label
