"""moto's server for the ECS fault tests (the fixtures of tests/ecs, shared here)."""

from tests.ecs.conftest import _aws_credentials, _aws_proxy, aws, ecs_settings, moto_url

__all__ = ["_aws_credentials", "_aws_proxy", "aws", "ecs_settings", "moto_url"]
