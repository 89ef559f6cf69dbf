"""The record/replay progress line: rich on a terminal, plain throttled lines elsewhere."""

from __future__ import annotations

import io

from edge_runtime.replay._progress import ProgressLine, human_bytes
from tests.support import PseudoTerminal


def test_plain_lines_without_escape_codes_when_not_a_terminal() -> None:
    out = io.StringIO()
    line = ProgressLine(out, every_s=3600.0)
    assert not line.tty
    for i in range(100):
        line.show(f"pass 1/1: {i} messages [x]", fraction=i / 100)
    line.done("replayed 100 messages [max_messages]")
    assert out.getvalue() == "  0% pass 1/1: 0 messages [x]\nreplayed 100 messages [max_messages]\n"
    assert "\x1b" not in out.getvalue()


def test_redrawn_in_place_on_a_terminal() -> None:
    terminal = PseudoTerminal()
    with open(terminal.slave, "w", encoding="utf-8") as stream:
        line = ProgressLine(stream)
        assert line.tty
        line.show("pass 1/1: 50 messages [x]", fraction=0.5)
        line.done("replayed 100 messages [max_messages]")
    shown = terminal.output()
    assert "\x1b[" in shown  # drawn by rich, in place
    assert "50%" in shown
    assert "replayed 100 messages [max_messages]" in shown  # no markup eaten


def test_human_bytes() -> None:
    assert human_bytes(999) == "999 B"
    assert human_bytes(1500) == "1.5 KB"
    assert human_bytes(2.5e9) == "2.5 GB"
