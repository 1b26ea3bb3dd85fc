"""`sandhive serve`'s options for warm pools and admission control, and how they configure the node."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from .common import fail

if TYPE_CHECKING:
    from ..node.node import Node

PoolSize = Annotated[int, typer.Option(
    "--pool-size", min=0, envvar="SANDHIVE_POOL_SIZE",
    help="Warm sandboxes kept per template (grows with demand); 0 disables warm pools.")]
TemplatePoolSizes = Annotated[list[str] | None, typer.Option(
    "--template-pool-size", metavar="TEMPLATE=N",
    help="Pool size of one template (repeatable); such templates are also warmed at start.")]
MissShells = Annotated[int | None, typer.Option(
    "--miss-shells", min=0, envvar="SANDHIVE_MISS_SHELLS",
    help="Warm shells (container backend): sandboxes of no template that serve pool misses without envd's start "
         "(docs/persistence.md); default 1 on the container backend; 0 turns them off.")]
MemoryBudget = Annotated[int | None, typer.Option(
    "--memory-budget", min=1, envvar="SANDHIVE_MEMORY_BUDGET_MB",
    help="MB of memory sandboxes (pooled ones included) may reserve; default: host RAM minus max(1 GiB, 10%).")]
CpuOvercommit = Annotated[float, typer.Option(
    "--cpu-overcommit", min=0.01, envvar="SANDHIVE_CPU_OVERCOMMIT",
    help="vCPUs sandboxes may reserve per host core (a guard: a vCPU is a quota, not a reservation).")]
MemoryOvercommit = Annotated[float, typer.Option(
    "--memory-overcommit", min=1.0, envvar="SANDHIVE_MEMORY_OVERCOMMIT",
    help="Sandboxes' memory limits may add up to the memory budget times this, while what they really use (their "
         "cgroups' working sets) must fit the budget itself; 1: limits must fit the budget (no overcommit).")]
MaxSandboxes = Annotated[int, typer.Option(
    "--max-sandboxes", min=1, envvar="SANDHIVE_MAX_SANDBOXES",
    help="Sandboxes this node runs at once, warm-pool ones included (503 + Retry-After beyond).")]
MemoryReserve = Annotated[int | None, typer.Option(
    "--memory-reserve", min=1, envvar="SANDHIVE_MEMORY_RESERVE_MB",
    help="MB of memory kept for the host: while less is available (MemAvailable), or PSI shows memory thrashing, "
         "the node admits nothing (503 memory_pressure); default: max(1 GiB, 10% of RAM).")]
MaxPerTeam = Annotated[int, typer.Option(
    "--max-sandboxes-per-team", min=0, envvar="SANDHIVE_MAX_SANDBOXES_PER_TEAM",
    help="Running sandboxes one team may have (429 + Retry-After beyond; 0: no limit).")]


def parse_template_sizes(values: list[str] | None) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for value in values or []:
        name, sep, size = value.partition("=")
        if not sep or not name or not size.isdigit():
            fail(f"--template-pool-size wants TEMPLATE=N (N ≥ 0), got {value!r}")
        sizes[name] = int(size)
    return sizes


def configure_node(node: Node | None, pool_size: int, template_sizes: list[str] | None, memory_budget: int | None,
                   cpu_overcommit: float, miss_shells: int | None = None, *, memory_overcommit: float | None = None,
                   max_sandboxes: int | None = None, memory_reserve: int | None = None) -> None:
    """Apply the pool and admission options; `memory_overcommit`/`max_sandboxes` None: admission.py's defaults."""
    if node is None:
        return
    from ..node.admission import DEFAULT_MAX_SANDBOXES, DEFAULT_MEMORY_OVERCOMMIT, Budget
    from ..node.errors import BackendUnavailable
    from ..node.pool import PoolSettings

    try:
        budget = Budget.of_host(memory_budget, cpu_overcommit,
                                memory_overcommit=memory_overcommit or DEFAULT_MEMORY_OVERCOMMIT,
                                max_sandboxes=max_sandboxes or DEFAULT_MAX_SANDBOXES, reserve_mb=memory_reserve)
    except (OSError, ValueError, BackendUnavailable) as exc:
        fail(f"cannot size the host budget: {exc}")
    node.configure(pools=PoolSettings(size=pool_size, sizes=parse_template_sizes(template_sizes)), budget=budget,
                   shells=node.default_shells() if miss_shells is None else miss_shells)
