"""Command line: ``python -m images build NAME...`` prints one image tag per line on stdout.

Progress, and "cached" for every step that was skipped, go to stderr. If no Docker daemon
answers on /var/run/docker.sock, one is started for the build and stopped afterwards. Needs only
the suite's runtime dependencies (docker-py), not its test extra.
"""

import argparse
import sys
import time

from .build import IMAGES, build_image, log
from .engine import DockerEngine


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m images", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build images (or find them cached) and print their tags")
    build.add_argument("names", nargs="+", choices=[*IMAGES, "all"], metavar="NAME",
                       help=f"one or more of: {', '.join(IMAGES)}, all")
    args = parser.parse_args(argv)

    names = list(IMAGES) if "all" in args.names else list(dict.fromkeys(args.names))
    with DockerEngine() as engine:
        if engine.owned:
            log("no Docker daemon was running; started dockerd for this build")
        for name in names:
            started = time.monotonic()
            tag = build_image(name, engine.client)
            log(f"{name}: {tag} ready in {time.monotonic() - started:.1f}s")
            print(tag, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
