"""`cifar-speed data verify|download|where|jpeg`: where the data set is, whether it is intact, and the
JPEG-compressed copy of the test set that `eval` and `bench` score beside the clean one."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="verify or download CIFAR-10; build its JPEG test set")
    p.add_argument("action", choices=["verify", "download", "where", "jpeg"])
    p.add_argument("--jpeg-quality", type=_quality, default=75, metavar="Q",
                   help="jpeg: the JPEG quality of the compressed test set, 1-100 (default 75)")
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py (default: $CIFAR_SPEED_DATA, then ~/.cache/cifar-speed)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import data
    from ..console import make_console, step

    console = make_console()
    if args.action == "download":
        folder = data.download(args.data_dir)
        console.print(f"CIFAR-10 downloaded and verified in {folder}")
    elif args.action == "jpeg":
        clean = data.load_split("test", args.data_dir)
        jpeg = data.jpeg_version(clean, args.jpeg_quality)
        error = (jpeg.images.float() - clean.images.float()).abs().mean().item()
        console.print(f"JPEG test set, quality {args.jpeg_quality}, 4:2:0 (Pillow): 10,000 images in "
                      f"{data.jpeg_cache_dir()}, sha256 {data.content_sha256(jpeg)}, "
                      f"mean absolute pixel error {error:.2f} of 255")
        if args.jpeg_quality == 75:
            same = data.content_sha256(jpeg) == data.JPEG75_TEST_SHA256
            console.print("matches the reference encoding" if same else
                          "differs from the reference encoding (another libjpeg build): top1_jpeg75 figures "
                          "from this machine are not comparable with the committed ones")
    elif args.action == "where":
        console.print(str(data.resolve_data_dir(args.data_dir)))
    else:
        with step("verifying the sha256 of the 60,000 images"):
            sums = data.verify(args.data_dir)
        folder = data.resolve_data_dir(args.data_dir)
        console.print(f"CIFAR-10 in {folder}: train 50,000 and test 10,000 images match their sha256 "
                      f"({sums['train']['data_sha256'][:12]}…, {sums['test']['data_sha256'][:12]}…)")
    return 0


def _quality(text: str) -> int:
    import argparse

    try:
        q = int(text)
    except ValueError:
        q = 0
    if not 1 <= q <= 100 or str(q) != text.strip():
        raise argparse.ArgumentTypeError(f"JPEG quality must be an integer in 1..100, got {text!r}")
    return q
