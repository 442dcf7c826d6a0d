"""``domain/specs.py`` and ``domain/plans.py`` without a database: merging a request onto
a spec, what a plan allows, and a runtime with one spec."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.domain.plans import AllowedRanges, PlanDefinition, default_plan
from chroma_orch.domain.specs import merge_spec, resolve_launch, resolve_spec
from chroma_orch.errors import InvalidSpecError
from chroma_orch.runtimes.base import Architecture, ServerSpec
from chroma_orch.settings import SpecsSettings


def test_a_request_merges_onto_the_current_spec() -> None:
    current = {"cpu": 1024, "memory_mib": 512, "settings": {"allow_reset": True, "x": 1}}
    merged = merge_spec(current, {"memory_mib": 2048, "cpu": None, "settings": {"x": None}})
    assert merged == {"cpu": 1024, "memory_mib": 2048, "settings": {"allow_reset": True}}
    assert merge_spec(current, None) == current


def test_the_plan_names_every_field_it_does_not_allow() -> None:
    allowed = AllowedRanges(
        cpu=(512, 1024),
        memory_mib=(256, 1024),
        chroma_versions=["1.5.9"],
        architectures=[Architecture.ARM64],
        settings=["allow_reset"],
    )
    spec = ServerSpec(256, 2048, Architecture.X86_64, "1.5.8", {"cors_allow_origins": ["*"]})
    problems = allowed.problems(spec)
    assert len(problems) == 5, problems
    assert allowed.problems(ServerSpec(512, 512, Architecture.ARM64, "1.5.9")) == []


def test_a_range_upside_down_is_refused() -> None:
    with pytest.raises(ValidationError, match="minimum is above the maximum"):
        PlanDefinition.model_validate({"allowed": {"cpu": [2, 1]}})


def test_the_default_plan_is_the_specs_settings() -> None:
    plan = default_plan(
        SpecsSettings(memory_mib=512, allowed_memory_mib=(256, 1024), quota_cpu=4096)
    )
    assert plan.defaults.as_request() == {"memory_mib": 512}
    assert plan.allowed.memory_mib == (256, 1024)
    assert plan.quota.cpu == 4096
    assert default_plan(SpecsSettings()) == PlanDefinition()


class _OneSpec:
    """A runtime without SpecSupport."""

    name = "plain"


@pytest.mark.parametrize("requested", [None, {}, {"settings": {}}, {"cpu": None}])
async def test_a_runtime_with_one_spec_takes_an_empty_request(requested: Any) -> None:
    no_db = cast(AsyncSession, None)  # nothing to look up: the runtime decides alone
    spec, _ = await resolve_launch(no_db, _OneSpec(), uuid.uuid4(), requested)
    assert spec == ServerSpec()
    current = ServerSpec(chroma_version="1.0.0")
    changed = await resolve_spec(no_db, _OneSpec(), uuid.uuid4(), requested, current, uuid.uuid4())
    assert changed is current


@pytest.mark.parametrize("requested", [{"memory_mib": 512}, {"settings": {"allow_reset": True}}])
async def test_a_runtime_with_one_spec_refuses_any_request(requested: dict[str, Any]) -> None:
    with pytest.raises(InvalidSpecError, match="plain runtime runs every instance on one spec"):
        await resolve_launch(cast(AsyncSession, None), _OneSpec(), uuid.uuid4(), requested)
