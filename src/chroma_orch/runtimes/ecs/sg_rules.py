"""What the tasks' security groups admit (pure; ``checks`` asks EC2 for the groups).

The layout docs/ecs.md "Network isolation" asks for: the tasks' group admits the
Chroma port only from the service's (or Nginx's) group, never from anywhere
(0.0.0.0/0, ::/0) and never from itself (tasks must not reach each other), and
lets the tasks out on 443 (image pulls, CloudWatch Logs) and 2049 with EFS.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

ANYWHERE = frozenset({"0.0.0.0/0", "::/0"})
_TCP = frozenset({"tcp", "6", "-1"})


def covers(rule: Mapping[str, Any], port: int) -> bool:
    """The rule lets TCP ``port`` through."""
    protocol = str(rule.get("IpProtocol"))
    if protocol not in _TCP:
        return False
    return protocol == "-1" or int(rule.get("FromPort", 0)) <= port <= int(rule.get("ToPort", 0))


def sources(rule: Mapping[str, Any]) -> list[str]:
    """The CIDRs, groups and prefix lists a rule admits."""
    found = [str(r["CidrIp"]) for r in rule.get("IpRanges") or []]
    found += [str(r["CidrIpv6"]) for r in rule.get("Ipv6Ranges") or []]
    found += [str(p["GroupId"]) for p in rule.get("UserIdGroupPairs") or [] if p.get("GroupId")]
    found += [str(p["PrefixListId"]) for p in rule.get("PrefixListIds") or []]
    return found


def describe(rule: Mapping[str, Any]) -> str:
    """The rule as one readable line, e.g. ``tcp 0-65535 from 0.0.0.0/0``."""
    protocol = str(rule.get("IpProtocol"))
    ports = "all" if protocol == "-1" else f"{rule.get('FromPort')}-{rule.get('ToPort')}"
    name = "all traffic" if protocol == "-1" else f"{protocol} {ports}"
    return f"{name} from {', '.join(sources(rule)) or 'nothing'}"


def ingress_problems(groups: Sequence[Mapping[str, Any]], port: int) -> list[str]:
    """Rules of the tasks' groups that open ``port`` to anywhere or to the tasks."""
    own = {str(g["GroupId"]) for g in groups}
    problems: list[str] = []
    for group in groups:
        for rule in group.get("IpPermissions") or []:
            if not covers(rule, port):
                continue
            admitted = set(sources(rule))
            if admitted & ANYWHERE:
                problems.append(
                    f"{group['GroupId']} admits anywhere on tcp {port} (rule: {describe(rule)})"
                )
            if admitted & own:
                problems.append(
                    f"{group['GroupId']} admits the tasks' own group on tcp {port}: tenants' "
                    f"servers can reach each other (rule: {describe(rule)})"
                )
    return problems


def admits(groups: Iterable[Mapping[str, Any]], port: int, key: str = "IpPermissions") -> bool:
    """Some rule (ingress, or egress with ``key="IpPermissionsEgress"``) covers ``port``."""
    return any(covers(rule, port) for group in groups for rule in group.get(key) or [])
