"""How results look: `--json` for scripts (plain JSON on stdout, nothing else), Rich tables for people."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Column, Table

from .client import MetricRow, SandboxRow
from .common import err, out

Json = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")]


def print_json(data: Any) -> None:
    """JSON on stdout, unstyled and unwrapped, so `jq` and `json.loads` read it whatever the terminal."""
    print(json.dumps(data, indent=2, ensure_ascii=False))


def when(at: datetime | str | None) -> str:
    if at is None:
        return "-"
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def size(n: float | None) -> str:
    """Bytes for people: 512 MiB, 1.5 GiB."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{value:.0f} {unit}" if value.is_integer() else f"{value:.1f} {unit}"


def pairs(mapping: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(mapping.items())) or "-"


def table(*columns: str | Column) -> Table:
    """A borderless table, as `docker ps` prints one: fits 80 columns, and ids copy out whole."""
    return Table(*columns, box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold")


def ago(at: datetime) -> str:
    """How long ago, to the minute once it is a minute ("12m ago")."""
    seconds = max(0, int((datetime.now(UTC) - at).total_seconds()))
    return f"{_span(seconds if seconds < 60 else seconds // 60 * 60).removesuffix(' 0s')} ago"


def remaining(end: datetime) -> str:
    """How long until `end`, as a person reads it ("4m 10s", "1h 2m")."""
    seconds = int((end - datetime.now(UTC)).total_seconds())
    return _span(seconds) if seconds > 0 else "now"


def _span(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s" if minutes else f"{secs}s"


def sandbox_table(rows: list[SandboxRow]) -> Table:
    """Sizes are left to `sandbox info`: with them the table would not fit 80 columns."""
    t = table(*(Column(name, no_wrap=True) for name in ("SANDBOX ID", "TEMPLATE", "STATE", "STARTED", "ENDS IN")),
              "METADATA")
    for r in rows:
        t.add_row(r.sandbox_id, r.alias or r.template_id, r.state, ago(r.started_at), remaining(r.end_at),
                  pairs(r.metadata))
    return t


def sandbox_details(r: SandboxRow) -> Table:
    """One sandbox, a field per line."""
    table = Table.grid(padding=(0, 2))
    fields = [("sandbox id", r.sandbox_id), ("template", r.template_id + (f" ({r.alias})" if r.alias else "")),
              ("state", r.state), ("started", when(r.started_at)),
              ("ends", f"{when(r.end_at)} (in {remaining(r.end_at)})"), ("cpus", str(r.cpu_count)),
              ("memory", size(r.memory_mb * 2**20)),
              ("disk", size(r.disk_size_mb * 2**20)),
              ("envd", r.envd_version), ("metadata", pairs(r.metadata))]
    fields += network_fields(r)
    for name, value in fields:
        table.add_row(f"[bold]{name}[/]", escape(value))
    return table


def network_fields(r: SandboxRow) -> list[tuple[str, str]]:
    """Its egress and port settings (issue 16), the ones it has."""
    network = r.network or {}
    fields = [("internet", "off" if r.allow_internet_access is False else "on")]
    fields += [(label, ", ".join(network[key])) for key, label in (("allow_out", "allow out"),
                                                                   ("deny_out", "deny out")) if network.get(key)]
    fields.append(("ports", "private (E2B-Traffic-Access-Token)" if network.get("allow_public_traffic") is False
                   else "public"))
    if network.get("mask_request_host"):
        fields.append(("host mask", network["mask_request_host"]))
    return fields


def metrics_table(rows: list[MetricRow]) -> Table:
    t = table(Column("TIME", no_wrap=True), "CPUS", "CPU USED", "MEMORY USED", "DISK USED")
    for m in rows:
        t.add_row(when(m.timestamp), str(m.cpu_count), f"{m.cpu_used_pct:.1f}%",
                  f"{size(m.mem_used)} / {size(m.mem_total)}", f"{size(m.disk_used)} / {size(m.disk_total)}")
    return t


def show(table: Table) -> None:
    out.print(table)


class StepSpinner:
    """Build log lines on stderr; on a terminal, under a spinner that shows the current step and the time (for
    `template build` and `template build-builtin`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.progress: Any = None
        self.task: Any = None
        if err.is_terminal:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                                     console=err, transient=True)
            self.task = self.progress.add_task(f"building {name}", total=None)

    def __enter__(self) -> StepSpinner:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def line(self, message: str, step: bool) -> None:
        """Print `message`; a `step` also becomes the spinner's description."""
        if self.progress is None:
            err.print(message, markup=False, highlight=False)
            return
        if step:
            self.progress.update(self.task, description=f"{self.name}: {message.strip()[:70]}")
        self.progress.console.print(message, markup=False, highlight=False)
