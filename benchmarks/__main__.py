"""Run a named benchmark and write its JSON result and PNG plot."""

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def available() -> list[str]:
    return sorted(
        p.stem for p in HERE.glob("*.py") if p.stem not in ("__init__", "__main__", "common")
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("name", choices=available(), help="which benchmark to run")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument("--soak", action="store_true",
                        help="the long schedule of a benchmark that has one (faults_soak: 30 minutes)")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="folder for NAME.json and NAME.png"
    )
    args = parser.parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    module = importlib.import_module(f"benchmarks.{args.name}")
    started = time.time()
    if args.soak and not getattr(module, "SUPPORTS_SOAK", False):
        parser.error(f"{args.name} has no --soak schedule")
    result = module.run(quick=args.quick, soak=True) if args.soak else module.run(quick=args.quick)
    result["_meta"] = {
        "benchmark": args.name,
        "quick": args.quick,
        "soak": args.soak,
        "started": started,
        "seconds": round(time.time() - started, 1),
        "machine": platform.platform(),
        "python": platform.python_version(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{args.name}.json"
    json_path.write_text(json.dumps(result, indent=2, sort_keys=True))
    png_path = args.out / f"{args.name}.png"
    module.plot(result, png_path)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2, sort_keys=True))
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
