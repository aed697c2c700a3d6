"""`make bench`: every benchmark of platforge against its peers, in one run.

Runs each script under bench/ in turn, at full size by default (``--quick`` runs each
at a small size, for a smoke check), and prints their figures. Each script starts and
stops its own loopback servers and cleans up its temporary files.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

# script, full-size arguments, quick arguments
SCRIPTS = (
    ("gzip_layer.py", ["--size", "1G"], ["--size", "32M"]),
    ("push.py", ["--size-mib", "1024"], ["--size-mib", "32"]),
    ("build.py", [], ["--scale", "0.01"]),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    options = parser.parse_args()
    failed = []
    for script, full, quick in SCRIPTS:
        args = quick if options.quick else full
        print(f"\n=== bench/{script} {' '.join(args)}", flush=True)
        started = time.monotonic()
        done = subprocess.run([sys.executable, str(BENCH / script), *args], check=False)
        print(f"=== {script}: {time.monotonic() - started:.1f} s", flush=True)
        if done.returncode != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
