"""``python -m bench run`` (``make bench``) and ``python -m bench chaos`` (``make chaos``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="measure SPEC 11 and write bench/README.md")
    run.add_argument("--backfill-referrals", type=int, default=1000)
    run.add_argument("--latency-samples", type=int, default=40)
    run.add_argument("--fuzz-bodies", type=int, default=10_000)
    run.add_argument("--chaos-referrals", type=int, default=200)
    chaos = commands.add_parser("chaos", help="faults + host kills, then check convergence")
    chaos.add_argument("--referrals", type=int, default=1000)
    chaos.add_argument("--rounds", type=int, default=3)
    chaos.add_argument("--seed", type=int, default=2026)
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    # The product logs every retried fault and cancelled invocation: expected here.
    logging.getLogger().setLevel(logging.CRITICAL)
    if arguments.command == "chaos":
        from bench.chaos import run_chaos

        report = asyncio.run(
            run_chaos(arguments.referrals, rounds=arguments.rounds, seed=arguments.seed)
        )
        print("\n".join(report.lines()))
        print("PASS" if report.ok else "FAIL")
        return 0 if report.ok else 1
    from bench.run import run_all

    return asyncio.run(
        run_all(
            backfill_referrals=arguments.backfill_referrals,
            latency_samples=arguments.latency_samples,
            fuzz_bodies=arguments.fuzz_bodies,
            chaos_referrals=arguments.chaos_referrals,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
