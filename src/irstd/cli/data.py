"""`irstd-data`: dataset tools (check a dataset, write point labels, import clicks from an annotation tool, split a
folder of frames, generate the synthetic set, merge datasets)."""

from __future__ import annotations

import argparse
import json
import sys

from irstd.data.annotations import ANNOTATION_FORMATS
from irstd.data.importing import POLICIES, UNANNOTATED_POLICIES, import_points
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


def import_clicks(args: argparse.Namespace) -> int:
    """Check an annotation tool's export against ROOT/images and write ROOT/clicks.json."""
    fmt, path = args.source
    if fmt not in ANNOTATION_FORMATS:
        raise ValueError(f"--from {fmt!r}: the format must be one of {', '.join(ANNOTATION_FORMATS)}")
    labels = None if args.labels is None else [name.strip() for name in args.labels.split(",") if name.strip()]
    report = import_points(args.root, fmt, path, policy=args.policy, unannotated=args.unannotated, labels=labels,
                           merge_radius=args.merge_radius)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif not args.quiet:
        print(report.to_text())
    return 0


def split(args: argparse.Namespace) -> int:
    from irstd.data.splitting import split_dataset

    train_file, test_file, counts = split_dataset(args.root, test=args.test, seed=args.seed, name=args.name,
                                                  force=args.force)
    print(f"wrote {train_file} ({counts['train']} frames) and {test_file} ({counts['test']} frames)")
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

    p = commands.add_parser("import", help="import point clicks from an annotation tool into ROOT/clicks.json")
    p.add_argument("root", help="dataset folder holding images/")
    p.add_argument("--from", dest="source", nargs=2, required=True, metavar=("FORMAT", "FILE"),
                   help=f"the tool's export: FORMAT one of {', '.join(ANNOTATION_FORMATS)}; FILE its file "
                        "(labelme: also a folder of .json files)")
    p.add_argument("--policy", default="error", choices=POLICIES,
                   help="error: any problem stops the import, nothing is written; skip: leave out what is at fault")
    p.add_argument("--unannotated", default="error", choices=UNANNOTATED_POLICIES,
                   help="an image no annotation names: a problem, left out, or a frame without target")
    p.add_argument("--labels", metavar="A,B", help="import only these label names; others are problems")
    p.add_argument("--merge-radius", type=float, default=0.0, metavar="PX",
                   help="merge a click within PX pixels of an earlier click of its image (default 0: a second "
                        "click on the same pixel is a problem)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=import_clicks)

    p = commands.add_parser("split", help="write img_idx/train_NAME.txt and test_NAME.txt from ROOT/images")
    p.add_argument("root", help="dataset folder holding images/")
    p.add_argument("--test", type=float, default=0.2, help="expected fraction of test frames (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="a frame's side depends only on the seed and its file name")
    p.add_argument("--name", help="split name: img_idx/train_NAME.txt, test_NAME.txt (default: ROOT's name)")
    p.add_argument("--force", action="store_true", help="replace existing split files with other frames")
    p.set_defaults(func=split)

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
