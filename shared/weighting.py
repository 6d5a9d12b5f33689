"""Pure dispatch planning: effective priorities and downward weights per node."""

from __future__ import annotations

from dataclasses import dataclass

from shared.models.workflows import WorkflowSpec


@dataclass(frozen=True)
class NodePlan:
    """What instance creation needs per node, computed once per workflow version."""

    name: str
    type: str
    priority: int
    weight: int
    ancestors: int
    resource_group: str
    upstream: tuple[str, ...]
    retries: int
    retry_delay_s: float
    timeout_s: float | None


def ancestors_of(upstream: dict[str, list[str]]) -> dict[str, set[str]]:
    """Transitive upstream sets; the graph is known to be acyclic."""
    memo: dict[str, set[str]] = {}

    def visit(start: str) -> set[str]:
        # Iterative post-order so a 400-node chain does not hit the recursion limit.
        stack = [(start, False)]
        while stack:
            node, expanded = stack.pop()
            if node in memo:
                continue
            if expanded:
                acc: set[str] = set()
                for up in upstream[node]:
                    acc.add(up)
                    acc |= memo[up]
                memo[node] = acc
            else:
                stack.append((node, True))
                stack.extend((up, False) for up in upstream[node] if up not in memo)
        return memo[start]

    for name in upstream:
        visit(name)
    return memo


def plan(spec: WorkflowSpec) -> list[NodePlan]:
    """Effective priority (node, else policy) and weight under the version's weighting rule.

    downward: weight(n) = 1 + sum of effective priorities of all transitive ancestors of n;
    none: weight 1 for every node.
    """
    policy = spec.policy
    prio = {n.name: n.priority if n.priority is not None else policy.priority for n in spec.nodes}
    anc = ancestors_of({n.name: list(n.upstream) for n in spec.nodes})
    out: list[NodePlan] = []
    for node in spec.nodes:
        weight = 1 + sum(prio[a] for a in anc[node.name]) if policy.weighting == "downward" else 1
        out.append(
            NodePlan(
                name=node.name,
                type=node.type,
                priority=prio[node.name],
                weight=weight,
                ancestors=len(anc[node.name]),
                resource_group=node.resource_group or policy.resource_group,
                upstream=tuple(node.upstream),
                retries=node.retries if node.retries is not None else policy.retries,
                retry_delay_s=(
                    node.retry_delay_s if node.retry_delay_s is not None else policy.retry_delay_s
                ),
                timeout_s=node.timeout_s if node.timeout_s is not None else policy.timeout_s,
            )
        )
    return out


def with_runtime_priority(nodes: list[NodePlan], priority: int, weighting: str) -> list[NodePlan]:
    """Apply a run request's priority override: it replaces every node's effective priority."""
    out = []
    for n in nodes:
        weight = 1 + priority * n.ancestors if weighting == "downward" else 1
        out.append(
            NodePlan(
                n.name,
                n.type,
                priority,
                weight,
                n.ancestors,
                n.resource_group,
                n.upstream,
                n.retries,
                n.retry_delay_s,
                n.timeout_s,
            )
        )
    return out
