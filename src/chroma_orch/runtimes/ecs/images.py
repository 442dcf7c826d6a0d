"""Where the Chroma image comes from (docs/ecs.md "Images").

Fargate caches no image layers and Docker Hub allows anonymous pulls per source IP
at a low rate (tasks behind one NAT share one IP), so the default, once the AWS
account is known, is an ECR pull-through cache of Docker Hub:
``ACCOUNT.dkr.ecr.REGION.amazonaws.com/PREFIX/REPOSITORY:TAG``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from chroma_orch.runtimes.ecs.settings import EcsSettings

_ACCOUNT_IN_ARN = re.compile(r"^arn:aws[\w-]*:iam::([0-9]{12}):")
_DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_PRIVATE_ECR = re.compile(r"^[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
"""A tag Docker accepts (the distribution spec's reference grammar)."""


class ImageSource(enum.StrEnum):
    EXPLICIT = "explicit"
    """IMAGE names the whole URI."""
    REGISTRY = "registry"
    """IMAGE_REGISTRY names the registry."""
    PULL_THROUGH = "pull_through"
    """The account's ECR pull-through cache of Docker Hub (the default)."""
    DOCKER_HUB = "docker_hub"
    """Docker Hub, anonymously: the account is not known."""


@dataclass(frozen=True)
class Image:
    uri: str
    source: ImageSource

    @property
    def private_ecr(self) -> bool:
        """Pulled from a private ECR registry (needs the execution role)."""
        return bool(_PRIVATE_ECR.match(self.uri))

    @property
    def docker_hub(self) -> bool:
        """Pulled from Docker Hub: no registry host before the first slash."""
        first = self.uri.split("/", 1)[0]
        if "/" not in self.uri or first in _DOCKER_HUB_HOSTS:
            return True
        return not ("." in first or ":" in first or first == "localhost")


def account_of(settings: EcsSettings) -> str | None:
    """ACCOUNT_ID, else the account of the execution (or task) role's ARN."""
    if settings.account_id:
        return settings.account_id
    for arn in (settings.execution_role_arn, settings.task_role_arn):
        found = _ACCOUNT_IN_ARN.match(arn or "")
        if found:
            return found.group(1)
    return None


def _split(uri: str) -> tuple[str, str | None]:
    """``uri`` without its tag, and the tag (None: none, or pinned by digest)."""
    if "@" in uri:
        return uri, None
    head, _, last = uri.rpartition("/")
    if ":" not in last:
        return uri, None
    name, _, tag = last.partition(":")
    return f"{head}/{name}" if head else name, tag


def default_tag(settings: EcsSettings) -> str:
    """The tag (Chroma version) of the default image: IMAGE's own tag when IMAGE is
    set and has one, else IMAGE_TAG."""
    if settings.image:
        tag = _split(settings.image)[1]
        if tag:
            return tag
    return settings.image_tag


def retaggable(settings: EcsSettings) -> bool:
    """Whether other tags of the image can be named: not when IMAGE pins a digest."""
    return not (settings.image and "@" in settings.image)


def server_image(settings: EcsSettings, tag: str | None = None) -> Image:
    """The image of the Chroma servers, by the settings; ``tag`` (a Chroma version)
    in place of the default one (not for an IMAGE pinned by digest)."""
    if tag is not None and tag != default_tag(settings):
        if not retaggable(settings):
            raise ValueError(f"IMAGE {settings.image} is pinned by digest: no tag {tag}")
    else:
        tag = None
    if settings.image:
        uri = settings.image if tag is None else f"{_split(settings.image)[0]}:{tag}"
        return Image(uri, ImageSource.EXPLICIT)
    name = f"{settings.image_repository}:{tag or settings.image_tag}"
    if settings.image_registry:
        return Image(f"{settings.image_registry.rstrip('/')}/{name}", ImageSource.REGISTRY)
    account = account_of(settings)
    if account:
        host = f"{account}.dkr.ecr.{settings.region}.amazonaws.com"
        prefix = settings.pull_through_prefix.strip("/")
        return Image(f"{host}/{prefix}/{name}", ImageSource.PULL_THROUGH)
    return Image(name, ImageSource.DOCKER_HUB)
