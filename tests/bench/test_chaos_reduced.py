"""The chaos run of SPEC 11, reduced to fit ``make test``: the whole sandbox under 10 % faults,
dropped webhooks and host kills must converge with no lost edit and no duplicate record.

``make chaos`` runs the same with 1,000 referrals; see ``bench/chaos.py`` for the model.
"""

from __future__ import annotations

from bench.chaos import run_chaos

REFERRALS = 100  # the size the reduced run is meant to have: about 2 minutes on 2 cores


async def test_chaos_converges_with_no_lost_edit_and_no_duplicate() -> None:
    report = await run_chaos(REFERRALS, rounds=3, seed=7)
    summary = "\n".join(report.lines())
    assert report.kills > 0 and report.kills_mid_sync > 0, summary
    assert sum(report.faults.values()) > 0 and report.webhooks_dropped > 0, summary
    assert report.converged, summary
    assert not report.missing, summary
    assert not report.duplicates, summary
    assert not report.lost, summary
    assert not report.unequal, summary
