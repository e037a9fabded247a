"""`irstd-data`: dataset tools (check a dataset, write point labels, generate the synthetic set, merge datasets)."""

from __future__ import annotations

import argparse
import json
import sys

from irstd.data.point_files import POINT_PNG_KINDS, write_point_pngs
from irstd.data.report import dataset_report
from irstd.data.sources import MISMATCH_POLICIES, DatasetError


def check(args: argparse.Namespace) -> int:
    report = dataset_report(args.root, size_mismatch=args.size_mismatch, progress=not args.quiet)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 1 if args.strict and report.problems else 0


def write_points(args: argparse.Namespace) -> int:
    """Write `masks_centroid/` or `masks_coarse/` PNGs (0/255) as the official scripts do."""
    folder, count = write_point_pngs(args.root, args.type, seed=args.seed, size_mismatch=args.size_mismatch,
                                     progress=not args.quiet)
    print(f"wrote {count} point-label PNGs to {folder}")
    return 0


def synthetic(args: argparse.Namespace) -> int:
    from irstd.data.synthetic import SyntheticSpec, generate_synthetic

    spec = SyntheticSpec(num_train=args.num_train, num_test=args.num_test, height=args.size, width=args.size,
                         seed=args.seed)
    root = generate_synthetic(args.root, spec, progress=not args.quiet)
    print(f"synthetic dataset at {root} (split name '{spec.split_name}')")
    return 0


def build(args: argparse.Namespace) -> int:
    from irstd.data.build import build_dataset, parse_source

    sources = [parse_source(text) for text in args.source]
    manifest = build_dataset(args.out, sources, name=args.name, force=args.force, copy=args.copy,
                             size_mismatch=args.size_mismatch, progress=not args.quiet)
    name = manifest["name"]
    print(f"built {args.out}: " + ", ".join(f"{split} {info['images']}" for split, info in manifest["splits"].items()
                                           if split.endswith(f"_{name}")))
    for source in manifest["sources"]:
        print(f"  {source['name']}: {source['train_images']} train, {source['test_images']} test, "
              f"{len(source['renamed'])} renamed")
    print(f"files: {manifest['transfers']['linked']} hard-linked, {manifest['transfers']['copied']} copied")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="irstd-data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("check", help="report images, splits, sizes, modes, targets and problems")
    p.add_argument("root", help="dataset folder in the standard layout")
    p.add_argument("--size-mismatch", default="resize", choices=MISMATCH_POLICIES)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when any problem is found")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=check)

    p = commands.add_parser("points", help="write masks_centroid/ or masks_coarse/ point-label PNGs")
    p.add_argument("root")
    p.add_argument("--type", required=True, choices=POINT_PNG_KINDS)
    p.add_argument("--seed", type=int, default=0, help="seed of the coarse-point draw")
    p.add_argument("--size-mismatch", default="resize", choices=MISMATCH_POLICIES)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=write_points)

    p = commands.add_parser("synthetic", help="generate the built-in synthetic dataset")
    p.add_argument("root")
    p.add_argument("--num-train", type=int, default=96)
    p.add_argument("--num-test", type=int, default=32)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=synthetic)

    p = commands.add_parser("build", help="merge datasets into one (e.g. SIRST3), with a manifest.json")
    p.add_argument("out", help="the new dataset folder; its name is the merged split name unless --name")
    p.add_argument("--source", action="append", required=True, metavar="NAME=ROOT[:TRAIN_SPLIT:TEST_SPLIT]",
                   help="a dataset to merge (repeat); the splits default to NAME")
    p.add_argument("--name", help="merged split name: img_idx/train_NAME.txt, test_NAME.txt (default: OUT's name)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    p.add_argument("--copy", action="store_true", help="copy files even where hard links are possible")
    p.add_argument("--size-mismatch", default="resize", choices=MISMATCH_POLICIES)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=build)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, ValueError, FileNotFoundError) as err:
        print(f"irstd-data {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
