"""Every test has exactly one tier (unit, db, e2e or chaos), derived in tests/conftest.py,
so `make test-fast` (unit and db) cannot silently leave out a test nobody tiered."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import tests.dataplane.test_control_plane_restarts as control_plane_restarts
import tests.db.test_pg_upgrade as pg_upgrade
import tests.domain.test_states as states
import tests.events.test_event_replicas as event_replicas
import tests.security.test_refused_tokens as refused_tokens
from tests.conftest import (
    COLLECTED_TIERS,
    STARTS_SERVICES,
    TESTS_DIR,
    TIER_BY_DIRECTORY,
    USES_POSTGRES,
    names_used,
    pytest_ignore_collect,
)


def test_every_collected_test_has_exactly_one_tier(request: pytest.FixtureRequest) -> None:
    collected = request.config.stash[COLLECTED_TIERS]  # deselected tests included
    assert request.node.nodeid in collected
    assert {nodeid: tiers for nodeid, tiers in collected.items() if len(tiers) != 1} == {}


def test_a_test_starting_services_in_its_own_body_is_seen() -> None:
    """No fixture says so: the test calls running_service and running_nginx itself."""
    behind_nginx = refused_tokens.test_behind_nginx_one_guesser_does_not_lock_out_its_neighbours
    assert {"running_service", "running_nginx"} <= names_used([behind_nginx]) & STARTS_SERVICES
    pure = states.test_every_phase_has_a_row_and_deleted_is_left_only_by_an_undelete
    assert not names_used([pure]) & (STARTS_SERVICES | USES_POSTGRES)


def test_a_helper_under_asynccontextmanager_is_followed() -> None:
    """The test starts Nginx and two replicas through an @asynccontextmanager helper of
    its module: followed only once unwrapped (it was left in the db tier, ~2 min a run)."""
    killed = control_plane_restarts.test_no_failed_request_while_replicas_are_killed_and_restarted
    assert "running_nginx" in names_used([killed]) & STARTS_SERVICES


def test_a_helper_name_is_looked_up_in_its_own_module_only() -> None:
    """The test's own helper ``service`` runs the app in-process on an embedded cluster;
    make_settings, which it calls, lives beside conftest's ``service`` fixture (a real
    service): that one is not what the test uses."""
    upgraded = pg_upgrade.test_pgserver_16_cluster_is_upgraded_and_keeps_tenants_and_instances
    assert not names_used([upgraded]) & STARTS_SERVICES


def test_a_fixture_running_the_service_as_child_processes_is_seen() -> None:
    """The replicas fixture starts two services (tests.e2e.service.Service) itself,
    and one of them real Chroma servers: e2e, as running_service would be."""
    assert "Service" in names_used([event_replicas.replicas]) & STARTS_SERVICES


def test_a_directory_of_one_tier_holds_no_test_of_another(request: pytest.FixtureRequest) -> None:
    """`-m` skips collecting such a directory when it leaves its tier out, so a marker
    written there must not say otherwise (checked where the directory was collected)."""
    collected = request.config.stash[COLLECTED_TIERS]
    misplaced = {
        nodeid: tiers
        for nodeid, tiers in collected.items()
        if (tier := TIER_BY_DIRECTORY.get(nodeid.split("/")[1])) and tiers != [tier]
    }
    assert misplaced == {}


@pytest.mark.parametrize(
    ("markexpr", "directory", "ignored"),
    [
        ("unit or db", "e2e", True),
        ("unit or db", "chaos", True),
        ("unit or db", "fuzz", True),
        ("e2e", "fuzz", None),
        ("not chaos", "e2e", None),
        ("not chaos", "chaos", True),
        ("", "chaos", None),
        ("unit or db", "db", None),
    ],
)
def test_m_leaves_uncollected_only_the_directories_of_tiers_it_excludes(
    markexpr: str, directory: str, ignored: bool | None
) -> None:
    config = SimpleNamespace(option=SimpleNamespace(markexpr=markexpr))
    path = TESTS_DIR / directory
    assert pytest_ignore_collect(path, config) is ignored  # type: ignore[arg-type]
    assert pytest_ignore_collect(path / "sub" / directory, config) is None  # type: ignore[arg-type]
