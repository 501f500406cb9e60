"""``python -m bench.backfill_child OUT.json ARGS…``: ``cosell backfill`` in its own process,
then its peak RSS and CPU time written to OUT.json (the emulators run in the parent)."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from shared.cli import main


def run(argv: list[str]) -> int:
    out, arguments = Path(argv[0]), argv[1:]
    started = time.perf_counter()
    code = main(arguments)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.write_text(
        json.dumps(
            {
                "exit_code": code,
                "wall_s": time.perf_counter() - started,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
            }
        ),
        encoding="utf-8",
    )
    return code


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
