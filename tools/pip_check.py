"""`pip check` restricted to what set-up installed: hearth, torch and the packages of the lock.

The venv sees the system's site-packages (so that an existing CUDA torch stays usable), and unrelated system
packages may have broken requirements of their own; those are reported, not failed on.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(lock: str) -> int:
    ours = {"hearth", "torch"} | {normalize(m.group(1)) for m in re.finditer(r"^([A-Za-z0-9][\w.-]*)==",
                                                                             Path(lock).read_text(), re.M)}
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    problems = [line for line in result.stdout.splitlines() if line.strip() and "No broken" not in line]
    failing = [line for line in problems if normalize(line.split()[0]) in ours]
    for line in problems:
        print(("error: " if line in failing else "ignored (not installed by set-up): ") + line)
    if not failing:
        print("pip check: the lock, torch and hearth are consistent")
    return 1 if failing else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
