"""The seed API's model: one user is one tenant with one instance named "default"."""

from __future__ import annotations

from chroma_orch.db.models import Instance, Intent, Tenant
from chroma_orch.domain.instances import InstanceService
from chroma_orch.domain.schemas import InstanceCreate
from chroma_orch.domain.states import Action, DesiredState
from chroma_orch.domain.tenants import TenantService
from chroma_orch.errors import NotFoundError

SEED_INSTANCE_NAME = "default"


class SeedService:
    def __init__(self, tenants: TenantService, instances: InstanceService):
        self.tenants = tenants
        self.instances = instances

    async def launch(self, user_id: str) -> tuple[Instance, Intent | None]:
        """Start the user's instance, creating the user and the instance when needed."""
        tenant = await self._tenant(user_id, create=True)
        instance = await self.instances.find_live(tenant.id, SEED_INSTANCE_NAME)
        if instance is None:
            return await self.instances.create(
                InstanceCreate(name=SEED_INSTANCE_NAME, tenant_id=tenant.id)
            )
        if instance.desired_state == DesiredState.STOPPED or instance.phase == "failed":
            return await self.instances.act(instance.id, Action.START)
        return instance, None

    async def act(self, user_id: str, action: Action) -> Instance:
        instance = await self.instance(user_id)
        updated, _ = await self.instances.act(instance.id, action)
        return updated

    async def instance(self, user_id: str) -> Instance:
        tenant = await self._tenant(user_id, create=False)
        instance = await self.instances.find_live(tenant.id, SEED_INSTANCE_NAME)
        if instance is None:
            raise NotFoundError(f"user {user_id!r} has no instance")
        return instance

    async def _tenant(self, user_id: str, *, create: bool) -> Tenant:
        principal = self.tenants.principal
        tenant = await self.tenants.by_name(user_id)
        if tenant is not None and principal.can_see(tenant.id):
            return tenant
        if tenant is None and create and principal.is_admin:
            return await self.tenants.get_or_create(user_id)
        raise NotFoundError(f"user {user_id!r} not found")
