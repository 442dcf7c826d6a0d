"""The client's pure parts: exit codes by status, tables, ages, log-tail alignment."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chroma_orch.cli import main
from chroma_orch.cli_client import exits
from chroma_orch.cli_client.follow import new_lines
from chroma_orch.cli_client.render import age, print_table, table


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, 2), (401, 3), (403, 3), (404, 4), (409, 5), (422, 2), (429, 7), (500, 8), (503, 6)],
)
def test_every_error_status_has_its_exit_code(status: int, code: int) -> None:
    assert exits.exit_code_for_status(status) == code


def test_ages_read_like_kubectl() -> None:
    now = datetime(2025, 1, 2, 12, 0, 0, tzinfo=UTC)
    assert age("2025-01-02T11:59:15Z", now) == "45s"
    assert age("2025-01-02T11:48:00+00:00", now) == "12m"
    assert age("2025-01-02T09:00:00+00:00", now) == "3h"
    assert age("2024-12-31T12:00:00+00:00", now) == "2d"
    assert age(None, now) == "-"


def test_tables_align_their_columns() -> None:
    assert table(["A", "BB"], [["xyz", "1"], ["q", "22"]]).splitlines() == [
        "A    BB",
        "xyz  1",
        "q    22",
    ]


@pytest.mark.parametrize(
    ("previous", "current", "new"),
    [
        ([], ["a", "b"], ["a", "b"]),
        (["a", "b"], ["a", "b"], []),
        (["a", "b"], ["a", "b", "c"], ["c"]),
        (["a", "b", "c"], ["b", "c", "d", "e"], ["d", "e"]),  # the window slid
        (["x"], ["a", "b"], ["a", "b"]),  # rotated: everything is new
        (["a", "b"], ["x", "a", "b", "c"], ["c"]),  # a longer window than before
    ],
)
def test_a_polled_log_tail_prints_each_line_once(
    previous: list[str], current: list[str], new: list[str]
) -> None:
    assert new_lines(previous, current) == new


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["instances", "launch"])
    assert exited.value.code == exits.USAGE
    assert "NAME" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["instances", "ls", "--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out
    assert "4  not found" in out


def test_a_table_not_on_a_terminal_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [["acme", "0d1e", "3h"], ["a-much-longer-name", "1", "45s"]]
    print_table(["NAME", "ID", "AGE"], rows)
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert out == table(["NAME", "ID", "AGE"], rows) + "\n"
    assert out.splitlines()[2] == "a-much-longer-name  1     45s"


def test_help_not_on_a_terminal_has_no_escape_sequences(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    for command in ("serve", "instances", "tenants", "tokens", "--token-file", "--json"):
        assert command in out
