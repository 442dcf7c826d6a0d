"""The chroma-orch command's help and settings listing."""

from __future__ import annotations

import pytest

from chroma_orch.cli import main, settings_help


def test_serve_help_lists_the_important_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for variable in (
        "CHROMA_ORCH_DATABASE_URL",
        "CHROMA_ORCH_DATA_DIR",
        "CHROMA_ORCH_PORT",
        "CHROMA_ORCH_ADMIN_TOKEN",
        "CHROMA_ORCH_LOCAL__PORT_RANGE",
    ):
        assert variable in out


def test_every_setting_is_listed_with_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    documented = dict(settings_help())
    assert "reconciler.restart_limit" in documented
    for name, doc in documented.items():
        variable, description = doc.split("\n", 1)
        assert variable in out
        assert description.strip(), f"{name} has no description"
