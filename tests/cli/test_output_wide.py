"""Tables never cut text silently: a cut cell says so once, and ``--wide`` prints it whole."""

from __future__ import annotations

import pytest

from shared.cli._output import MAX_CELL, Output

LONG = "Dataverse 500 on GET opportunities(…) " + "x" * (MAX_CELL + 20)


def test_a_cut_cell_is_marked_and_the_user_told_once(capsys: pytest.CaptureFixture[str]) -> None:
    out = Output()
    out.table([("a", LONG), ("b", LONG)], ("id", "error"))
    out.table([("c", LONG)], ("id", "error"))

    captured = capsys.readouterr()
    assert LONG not in captured.out and "…" in captured.out
    assert captured.err.count("--wide shows them in full") == 1


def test_wide_prints_every_cell_in_full(capsys: pytest.CaptureFixture[str]) -> None:
    Output(wide=True).table([("a", LONG)], ("id", "error"))

    captured = capsys.readouterr()
    assert LONG in captured.out
    assert captured.err == ""


def test_short_cells_need_no_note(capsys: pytest.CaptureFixture[str]) -> None:
    Output().table([("a", "short")], ("id", "error"))

    assert capsys.readouterr().err == ""
