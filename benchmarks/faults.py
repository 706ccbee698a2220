"""Issue 11's fault suite in full: every case of tests/faults, the default ones and those marked
faults_slow (SIGINT, SIGTERM, SIGKILL and a dropped ssh link at each deploy stage and for each
transport, faults during bench --device, two deploys into one --out, two benches on one device),
and writes benchmarks/results/faults.json: cases tried, survived, the counts per fault, what each
failed case left behind, the machine and the date.

    python benchmarks/faults.py                 # everything (about an hour on 2 busy cores)
    python benchmarks/faults.py -k adb          # extra arguments go to pytest

Exits with pytest's code: 0 only when every case survived."""
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "faults.json"


def main(extra) -> int:
    env = dict(os.environ, EC_FAULTS_RESULTS=str(RESULTS))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "faults_slow or not slow",
               "-rf", str(HERE.parent / "tests" / "faults"), *extra]
    code = subprocess.call(command, cwd=HERE.parent, env=env)
    if RESULTS.is_file():
        print(f"wrote {RESULTS.relative_to(HERE.parent)}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
