"""Start-up of the CLI: whole commands in fresh processes, side by side with `python -c pass` of the same Python.

    .venv/bin/python benchmarks/startup.py [--runs 21]

Targets (issue #10, medians): `svcctl --version` <= 0.10 s, `svcctl --help` and `svcctl validate examples/lab`
<= 0.25 s. A bare interpreter is the floor every command pays; the ratio says what svcctl adds to it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SVCCTL = str(Path(sys.executable).parent / "svcctl")

COMMANDS: list[tuple[str, list[str], float | None]] = [
    ("python -c pass", [sys.executable, "-c", "pass"], None),
    ("svcctl --version", [SVCCTL, "--version"], 0.10),
    ("svcctl --help", [SVCCTL, "--help"], 0.25),
    ("svcctl validate examples/lab", [SVCCTL, "validate", "examples/lab"], 0.25),
]


# Bytecode as an installed svcctl has it (pip compiles modules at install; a checkout writes them on first
# import). This machine's environment sets PYTHONDONTWRITEBYTECODE, under which every run would compile each
# module changed since its last .pyc anew, and time that.
ENVIRON = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"NO_COLOR": "1"}


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    res = subprocess.run(argv, cwd=REPO, capture_output=True, env=ENVIRON)
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    for _, argv, _ in COMMANDS:  # warm the file cache and .pyc files
        timed(argv)
    samples: dict[str, list[float]] = {name: [] for name, _, _ in COMMANDS}
    for _ in range(args.runs):  # interleaved, so a busy moment costs every command alike
        for name, argv, _ in COMMANDS:
            samples[name].append(timed(argv))
    floor = statistics.median(samples[COMMANDS[0][0]])
    print("| command | median | min | x python | target | met |\n| --- | ---: | ---: | ---: | ---: | --- |")
    for name, _, target in COMMANDS:
        median = statistics.median(samples[name])
        met = "" if target is None else ("yes" if median <= target else "NO")
        shown = "" if target is None else f"{target:.2f} s"
        print(f"| `{name}` | {median:.3f} s | {min(samples[name]):.3f} s | {median / floor:.2f}x | {shown} | {met} |")


if __name__ == "__main__":
    main()
