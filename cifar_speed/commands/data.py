"""`cifar-speed data verify|download`: where the data set is and whether it is intact."""
from __future__ import annotations

from ..console import make_console, step

from .. import data


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="verify or download CIFAR-10")
    p.add_argument("action", choices=["verify", "download", "where"])
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py (default: $CIFAR_SPEED_DATA, then ~/.cache/cifar-speed)")
    p.set_defaults(func=run)


def run(args) -> int:
    console = make_console()
    if args.action == "download":
        folder = data.download(args.data_dir)
        console.print(f"CIFAR-10 downloaded and verified in {folder}")
    elif args.action == "where":
        console.print(str(data.resolve_data_dir(args.data_dir)))
    else:
        with step("verifying the sha256 of the 60,000 images"):
            sums = data.verify(args.data_dir)
        folder = data.resolve_data_dir(args.data_dir)
        console.print(f"CIFAR-10 in {folder}: train 50,000 and test 10,000 images match their sha256 "
                      f"({sums['train']['data_sha256'][:12]}…, {sums['test']['data_sha256'][:12]}…)")
    return 0
