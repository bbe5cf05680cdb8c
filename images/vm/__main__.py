"""Command line: ``python -m images.vm build [--publish DIR]`` prints the image directory.

The directory holds ``disk.qcow2``, ``vmlinuz``, ``initrd.img`` and ``image.json``; a libvirt
deployment names it as its ``image``. The build lives in ``~/.cache``; ``--publish DIR`` also
places it in ``DIR/<hash>/`` (hard links), where the user libvirt runs QEMU as can read it, and
prints that path instead. Progress goes to stderr. Needs root.
"""

import argparse
import sys
import time
from pathlib import Path

from ..build import log
from .build import build_vm_image, publish_vm_image


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m images.vm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the VM image (or find it cached), print its directory")
    build.add_argument("--publish", metavar="DIR", type=Path,
                       help="also place the image in DIR/<hash>/ and print that directory")
    args = parser.parse_args(argv)
    started = time.monotonic()
    path = build_vm_image()
    if args.publish:
        path = publish_vm_image(path, args.publish)
    log(f"vm image ready in {time.monotonic() - started:.1f}s: {path}")
    print(path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
