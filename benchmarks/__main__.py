"""Run a named benchmark and write its JSON result and PNG plot."""

import argparse
import importlib
import inspect
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


#: modules of this package that are not benchmarks
HELPERS = ("__init__", "__main__", "common", "hub_probe", "hub_sampler")


def available() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem not in HELPERS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("name", choices=available(), help="which benchmark to run")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument("--soak", action="store_true",
                        help="the long schedule of a benchmark that has one (faults_soak: 30 minutes)")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="folder for NAME.json and NAME.png"
    )
    parser.add_argument("--students", type=int, metavar="N",
                        help="class size, for the benchmarks that simulate one (course_rush)")
    parser.add_argument("--hub-sqlite", choices=("wal", "default"),
                        help="the hubs' SQLite database (course_rush, fleet): 'wal' (write-ahead log, "
                             "multiplespawner.hub_database, course_rush's default) or SQLite's defaults "
                             "(fleet's default)")
    parser.add_argument("--spawn-pacing", type=int, metavar="RATE",
                        help="course_rush: spawn requests nginx lets through per second, as "
                             "examples/header-nginx/hub-spawn-pacing.conf does (default 5); 0: not paced")
    parser.add_argument("--profile-hub", action="store_const", const=True,
                        help="fleet: sample the hub's event-loop thread during the bulk stop and report "
                             "where its time went (benchmarks/hub_sampler.py)")
    args = parser.parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    module = importlib.import_module(f"benchmarks.{args.name}")
    options = {}
    # option -> (its flag, what is wrong with a value or ""), for the benchmarks whose run() takes it
    checks = {
        "students": ("--students", lambda v: "" if v >= 2 else
                     "--students must be at least 2 (half local processes, half containers)"),
        "hub_sqlite": ("--hub-sqlite", lambda v: ""),
        "profile_hub": ("--profile-hub", lambda v: ""),
        "spawn_pacing": ("--spawn-pacing", lambda v: "" if v >= 0 else
                         "--spawn-pacing must be 0 (off) or a rate per second"),
    }
    accepted = inspect.signature(module.run).parameters
    for name, (flag, problem) in checks.items():
        value = getattr(args, name)
        if value is None:
            continue
        if name not in accepted:
            parser.error(f"{args.name} takes no {flag}")
        if problem(value):
            parser.error(problem(value))
        options[name] = value
    started = time.time()
    if args.soak:
        if not getattr(module, "SUPPORTS_SOAK", False):
            parser.error(f"{args.name} has no --soak schedule")
        options["soak"] = True
    result = module.run(quick=args.quick, **options)
    result["_meta"] = {
        "benchmark": args.name,
        "quick": args.quick,
        "soak": args.soak,
        "options": options,
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
