"""`sandhive serve`: the API, the edge proxy and a node in one process (SQLite unless told otherwise).

Backends, templates and the proxy are imported only here and only when asked for, so that the control
plane starts (and says clearly what is missing) on a host where a backend cannot run.

One event loop runs it all: the backend is selected and prepared on the loop that then serves (its clients,
subprocess watchers and tasks belong to that loop), just before uvicorn listens, so that a backend that
cannot run here is a message and exit status 1 at start rather than a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from .common import DEFAULT_DATA_DIR, DatabaseUrl, DataDir, err, fail, prepare_data_dir
from .metrics_listen import MetricsInterval, MetricsListen
from .node_options import (
    CpuOvercommit,
    MaxPerTeam,
    MaxSandboxes,
    MemoryBudget,
    MemoryOvercommit,
    MemoryReserve,
    MissShells,
    PoolSize,
    TemplatePoolSizes,
    configure_node,
)
from .registry_options import RegistryOption, TemplateRegistryInsecure, registry_ref
from .stores import open_store

if TYPE_CHECKING:
    from ..node.node import Node
    from ..templates.oci_registry import TemplateRegistryRef
    from ..templates.registry import TemplateRegistry


class Backend(StrEnum):
    auto = "auto"  # the strongest backend that works here (node/backends.py), logged and shown in /health
    microvm = "microvm"
    gvisor = "gvisor"
    container = "container"
    none = "none"  # control plane only: keys, lists and records, but no sandbox can be created


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for the API and the sandbox proxy.", min=1, max=65535)] = 3000,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    backend: Annotated[Backend, typer.Option(
        help="Sandbox backend: `auto` picks the strongest that works here (microvm, gvisor, container); "
             "`none` runs the control plane only.")] = Backend.auto,
    database_url: DatabaseUrl = None,
    max_lifetime: Annotated[int | None, typer.Option(
        "--max-lifetime", min=1, help="Longest a sandbox may live, in seconds (default: no limit).")] = None,
    host_ca: Annotated[bool, typer.Option(help="Give sandboxes the host's CA bundle.")] = True,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    pool_size: PoolSize = 2,
    template_pool_size: TemplatePoolSizes = None,
    miss_shells: MissShells = None,
    memory_budget: MemoryBudget = None,
    cpu_overcommit: CpuOvercommit = 256.0,
    memory_overcommit: MemoryOvercommit = 8.0,
    max_sandboxes: MaxSandboxes = 200,
    memory_reserve: MemoryReserve = None,
    # ---- what one client may cost the server (request_guard.py, slow_clients.py) ----
    max_sandboxes_per_team: MaxPerTeam = 20,
    max_paused_per_team: Annotated[int, typer.Option(
        min=0, help="Paused sandboxes a team may keep (0: no limit; 429 beyond).")] = 100,
    max_json_body: Annotated[int, typer.Option(
        "--max-json-body", min=1024, envvar="SANDHIVE_MAX_JSON_BODY",
        help="Largest JSON request body in bytes (413 beyond, refused before it is read).")] = 2**20,
    max_upload_body: Annotated[int, typer.Option(
        "--max-upload-body", min=1024, envvar="SANDHIVE_MAX_UPLOAD_BODY",
        help="Largest template-files upload in bytes (streamed to disk; 413 beyond).")] = 4 * 2**30,
    body_timeout: Annotated[float, typer.Option(
        "--body-timeout", min=0.1,
        help="Seconds a JSON body may take to arrive, or an upload may pause (408).")] = 30.0,
    header_timeout: Annotated[float, typer.Option(
        "--header-timeout", min=0.1, help="Seconds a client may take to send a request's headers.")] = 10.0,
    keep_alive_timeout: Annotated[int, typer.Option(
        "--keep-alive-timeout", min=1, help="Seconds an idle keep-alive connection stays open.")] = 75,
    # 75 s, as nginx: longer than the idle expiry of clients' connection pools (httpx and the e2b SDK keep
    # idle connections ~5 s), so a client never reuses one the server is closing at that moment (at 5 s the
    # e2b SDK's request after a 5 s pause got "connection reset"). Idle connections cost a socket, not a task.
    # ---- template quotas per team (part tplapi); 0 means no limit; over a limit the API answers 429 ----
    max_templates_per_team: Annotated[int, typer.Option(
        min=0, help="Templates a team may own (0: no limit).")] = 50,
    max_builds_per_team: Annotated[int, typer.Option(
        min=0, help="Template builds a team may run at once (0: no limit).")] = 2,
    build_minutes_per_day: Annotated[int, typer.Option(
        min=0, help="Build minutes a team may use in any 24 hours (0: no limit).")] = 120,
    max_upload_mb_per_team: Annotated[int, typer.Option(
        min=0, help="MiB of uploaded template files a team may store (0: no limit).")] = 10240,
    max_snapshot_mb_per_team: Annotated[int, typer.Option(
        min=0, envvar="SANDHIVE_MAX_SNAPSHOT_MB_PER_TEAM",
        help="MiB of sandbox snapshots a team may keep (429 + Retry-After beyond; 0: no limit).")] = 20480,
    build_memory_mb: Annotated[int, typer.Option(
        min=256, help="Memory one template build may use (buildah and its RUN steps), in MB.")] = 4096,
    build_cpus: Annotated[float, typer.Option(min=0.1, help="CPUs one template build may use.")] = 2.0,
    build_pids: Annotated[int, typer.Option(min=64, help="Processes one template build may have at once.")] = 4096,
    build_timeout: Annotated[int, typer.Option(
        min=10, help="Longest a template build may take, in seconds (default 30 minutes).")] = 1800,
    egress_allow: EgressAllow = None,
    egress_resolver: EgressResolver = None,
    volume_size_mb: Annotated[int, typer.Option(
        min=8, help="Size of each volume (an ext4 image on this node), in MB.")] = 1024,
    team_volume_mb: Annotated[int, typer.Option(
        min=8, help="MB a team's volumes may take together (429 beyond).")] = 10240,
    metrics_listen: MetricsListen = None,
    metrics_interval: MetricsInterval = 5.0,
    audit: Annotated[bool, typer.Option(
        help="Record the action audit log (API actions, and commands and file changes in sandboxes).")] = True,
    audit_retention_days: Annotated[int, typer.Option(
        min=1, help="Days audit events are kept (older ones are pruned hourly).")] = 7,
    # ---- many hosts (sandhive.cluster) ----
    local_node: Annotated[bool, typer.Option(
        "--local-node/--no-local-node",
        help="Run sandboxes in this process (default) or only on the --node-url nodes (a control plane).")] = True,
    node_url: Annotated[list[str] | None, typer.Option(
        "--node-url", metavar="URL",
        help="A `sandhive node` this control plane places sandboxes on (repeatable; with --no-local-node).")] = None,
    cluster_token_file: Annotated[Path | None, typer.Option(
        "--cluster-token-file", exists=True, dir_okay=False,
        help="File holding the cluster token shared with the nodes (with --no-local-node).")] = None,
    template_registry: RegistryOption = None,
    template_registry_insecure: TemplateRegistryInsecure = False,
) -> None:
    """Run the Sandhive server: E2B's REST API and sandbox traffic on one port."""
    import uvicorn  # the server's imports are paid only by `serve`, not by every `keys` call

    from ..api import Settings, create_app
    from ..api.slow_clients import guarded_protocol
    from ..api.tokens import load_secret
    from ..templates.quotas import TemplateQuotas

    cluster_token = _cluster_token(local_node, node_url, cluster_token_file)
    registry = registry_ref(template_registry, template_registry_insecure)
    data_dir = prepare_data_dir(data_dir)
    _raise_open_files()
    open_store(data_dir, database_url).close()  # migrate now, so a bad database is a message, not a traceback
    try:
        load_secret(data_dir)
    except (OSError, RuntimeError) as exc:
        fail(f"cannot read or create the secret in {data_dir}: {exc}")
    _log_to_stderr(log_level)
    settings = Settings(data_dir=data_dir, database_url=database_url, max_lifetime_seconds=max_lifetime,
                        trust_host_ca=host_ca, max_sandboxes_per_team=max_sandboxes_per_team or None,
                        max_paused_per_team=max_paused_per_team or None,
                        max_json_body_bytes=max_json_body, max_upload_body_bytes=max_upload_body,
                        max_snapshot_bytes_per_team=max_snapshot_mb_per_team * 2**20 or None,
                        body_timeout_seconds=body_timeout,
                        template_quotas=TemplateQuotas(
                            max_templates=max_templates_per_team or None,
                            max_concurrent_builds=max_builds_per_team or None,
                            build_minutes_per_day=build_minutes_per_day or None,
                            max_upload_bytes=max_upload_mb_per_team * 2**20 or None),
                        build_memory_mb=build_memory_mb, build_cpus=build_cpus, build_pids=build_pids,
                        build_timeout_seconds=build_timeout, egress_allow=_egress_allow(egress_allow),
                        volume_size_mb=volume_size_mb, team_volume_mb=team_volume_mb,
                        metrics_interval_seconds=metrics_interval, audit=audit,
                        audit_retention_days=audit_retention_days, cluster_token=cluster_token)
    metrics_socket = _metrics_socket(metrics_listen)
    templates = _templates(data_dir) if backend is not Backend.none and local_node else None

    async def run() -> bool:
        if not local_node:
            remote, remote_templates = await _remote_nodes(node_url or [], cluster_token or "", registry)
            api = create_app(settings, remote, remote_templates)
            if registry is not None:
                from ..cluster.remote_builds import RemoteBuilder

                api.state.builds.remote = RemoteBuilder(cast("Any", remote), remote_templates)
                api.state.builds.share_through(registry)  # every build step through any replica
                remote_templates.names = api.state.builds.store  # aliases and tags changed after a build
            _readopt_from(remote, api.state.service)
            err.print(f"sandhive: control plane serving on http://{host}:{port} (nodes {', '.join(node_url or [])})")
            server = uvicorn.Server(uvicorn.Config(
                _with_proxy(api), host=host, port=port, log_level=log_level, lifespan="on", server_header=False,
                date_header=False, http=guarded_protocol(header_timeout), timeout_keep_alive=keep_alive_timeout,
                h11_max_incomplete_event_size=64 * 1024))
            await server.serve()
            return server.started
        node = await _node(backend, data_dir)
        domain_filter = None
        if node is not None:
            await _apply_egress(settings.egress_allow)
            domain_filter = await _start_egress_filter(node, settings.egress_allow, egress_resolver)
        configure_node(node, pool_size, template_pool_size, memory_budget, cpu_overcommit, miss_shells,
                       memory_overcommit=memory_overcommit, max_sandboxes=max_sandboxes, memory_reserve=memory_reserve)
        api = create_app(settings, node, templates)  # from here on the app owns the node (its lifespan closes it)
        api.state.builds.push_to = registry  # builds here are pushed to the template registry too
        if domain_filter is not None:
            api.state.closers.append(domain_filter.close)
        chosen = node.backend if node is not None else Backend.none.value
        err.print(f"sandhive: serving on http://{host}:{port} (backend {chosen}, data dir {data_dir})")
        # The proxy forwards sandboxes' own Server and Date headers, so uvicorn must not add its own.
        # Slow clients: idle keep-alive connections close after `keep_alive_timeout`, headers must arrive within
        # `header_timeout` (uvicorn has no such timeout: slow_clients.py adds it), headers are at most 64 KiB.
        server = uvicorn.Server(uvicorn.Config(
            _with_proxy(api), host=host, port=port, log_level=log_level, lifespan="on", server_header=False,
            date_header=False, http=guarded_protocol(header_timeout), timeout_keep_alive=keep_alive_timeout,
            h11_max_incomplete_event_size=64 * 1024))
        scraper = None
        if metrics_socket is not None:
            from ..api.metrics_routes import metrics_app
            from .metrics_listen import metrics_server

            scraper = metrics_server(metrics_app(api.state.prometheus), log_level)
            scraping = asyncio.create_task(scraper.serve([metrics_socket]))
            err.print(f"sandhive: Prometheus metrics without a key on http://{metrics_listen}/metrics")
        try:
            await server.serve()
        finally:
            if scraper is not None:
                scraper.should_exit = True
                await scraping
            if domain_filter is not None:
                await domain_filter.close()
        return server.started

    if not asyncio.run(run()):
        raise SystemExit(3)  # what uvicorn.run answers when the application did not start


def _cluster_token(local_node: bool, node_urls: list[str] | None, token_file: Path | None) -> str | None:
    """The cluster token of a control plane without a local node (`--no-local-node` needs nodes and the token)."""
    if local_node:
        if node_urls or token_file:
            fail("--node-url and --cluster-token-file are for a control plane: add --no-local-node")
        return None
    if not node_urls or token_file is None:
        fail("--no-local-node needs at least one --node-url and --cluster-token-file")
    from ..cluster.models import read_token

    try:
        return read_token(token_file)
    except (OSError, ValueError) as exc:
        fail(f"--cluster-token-file: {exc}")


async def _remote_nodes(urls: list[str], token: str, registry: TemplateRegistryRef | None) -> tuple[Node, Any]:
    """The nodes as the API's node (`cluster.remote_node`), once each has answered, and the templates they resolve
    (built ones read from the template registry, when there is one)."""
    from ..cluster.remote_builds import RegistryTemplates
    from ..cluster.remote_node import RemoteNodes, RemoteTemplates
    from ..errors import NodeError

    nodes = RemoteNodes(urls, token)
    try:
        await nodes.connect()
    except NodeError as exc:
        fail(f"--node-url: {exc.message}")
    # RemoteNodes offers what the API calls on a Node (cluster/remote_node.py; tests/unit/test_cluster.py checks it).
    return cast("Node", nodes), RemoteTemplates(nodes, registry=RegistryTemplates(registry) if registry else None)


def _readopt_from(nodes: Any, service: Any) -> None:
    """Let the remote nodes ask the store what runs on a node (`RemoteNodes.known`: to re-adopt after a node
    restarted, and to notice deaths of sandboxes another replica created) and end such sandboxes."""
    from ..api.views import handle_of
    from ..cluster.models import NODE_ID_KEY
    from ..node.admission import Resources

    async def known(node_id: str) -> list:
        live = await asyncio.to_thread(service.store.live_sandboxes)
        return [(handle_of(r), Resources(r.memory_mb, r.cpu_count)) for r in live
                if r.state == "running" and (r.runtime_state or {}).get(NODE_ID_KEY) == node_id]

    async def paused_on(node_id: str) -> list[str]:
        live = await asyncio.to_thread(service.store.live_sandboxes)
        return [r.sandbox_id for r in live
                if r.state == "paused" and ((r.saved or {}).get("state") or {}).get(NODE_ID_KEY) == node_id]

    nodes.known = known
    nodes.paused_on = paused_on
    nodes.on_exit = service._ended  # a sandbox that died unwatched here ends as a watched one does


def _raise_open_files() -> None:
    """Raise the soft limit of open files to the hard one. A node holds ~3 descriptors per sandbox (its pidfd, its
    user namespace for idmapped mounts, envd's keep-alive connection): ~650 at the default 200 sandboxes, close
    to the 1024 soft limit many hosts start services with (systemd's default)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            err.print(f"sandhive: cannot raise the open files limit from {soft}: many sandboxes may exhaust it")


def _metrics_socket(address: str | None) -> Any:
    """`--metrics-listen`'s socket, bound now (a bad or taken address is a message and exit status 1)."""
    if address is None:
        return None
    from .metrics_listen import bind

    try:
        return bind(address)
    except (ValueError, OSError) as exc:
        fail(f"--metrics-listen: cannot listen on {address}: {exc}")


# ---- sandbox egress --------------------------------------------------------------------------------
EgressAllow = Annotated[list[str] | None, typer.Option(
    "--egress-allow", metavar="CIDR",
    help="A range sandboxes and template builds may reach although it is private, link-local or the host's LAN "
         "(repeatable), e.g. a registry or package mirror on 10.1.2.0/24. Host-wide: the last server started "
         "sets it.")]


EgressResolver = Annotated[list[str] | None, typer.Option(
    "--egress-resolver", metavar="IP",
    help="A nameserver the egress filter asks for the addresses of names that sandboxes' domain rules allow "
         "(repeatable; default: the host's, from /etc/resolv.conf, which sandboxes use too).")]


async def _start_egress_filter(node: Node, allow: tuple[str, ...], resolvers: list[str] | None) -> Any:
    """The transparent filter for domain rules (node/egress_filter.py), on this loop, for as long as we serve."""
    import ipaddress

    from ..node.egress_filter import EgressFilter
    from ..node.network import parse_egress_allow

    for value in resolvers or []:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            fail(f"--egress-resolver: not an IPv4 address: {value!r}")
    domain_filter = EgressFilter(nameservers=resolvers, operator_allow=parse_egress_allow(allow),
                                 record=node.record_egress)
    await domain_filter.start()
    return domain_filter


def _egress_allow(values: list[str] | None) -> tuple[str, ...]:
    from ..node.network import parse_egress_allow

    try:
        return tuple(str(n) for n in parse_egress_allow(values or []))
    except ValueError as exc:
        fail(f"--egress-allow: {exc}")


async def _apply_egress(allow: tuple[str, ...]) -> None:
    """The node loaded the default egress policy while it prepared; now the operator's allowed ranges replace
    whatever an earlier server left (an empty list takes earlier allowances away)."""
    from ..node import network

    await network.prepare_host(egress_allow=list(allow))
    if allow:
        err.print(f"sandhive: sandboxes may also reach {', '.join(allow)} (--egress-allow)")


def _log_to_stderr(level: str) -> None:
    """Sandhive's own log lines (template builds, reconcile, expiry failures) next to uvicorn's."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    logger = logging.getLogger("sandhive")
    logger.addHandler(handler)
    logger.setLevel(level.upper() if level.upper() in logging.getLevelNamesMapping() else logging.INFO)


async def _node(backend: Backend, data_dir: Path) -> Node | None:
    """The node with the backend asked for (or the one `auto` picks), prepared now, on the loop that will
    serve it, so that a backend that cannot run here is a message at start, not a failure at the first create."""
    if backend is Backend.none:
        return None
    from ..node.backends import select
    from ..node.errors import BackendUnavailable
    from ..node.node import Node

    try:
        selection = await select(backend.value, data_dir)
    except BackendUnavailable as exc:
        fail(f"{exc}. Run `sandhive serve --backend none` for the control plane alone.")
    for reason in selection.reasons:
        err.print(f"sandhive: backend {reason}")
    return Node(selection.runtime)


def _templates(data_dir: Path) -> TemplateRegistry:
    try:
        from ..templates.registry import TemplateRegistry
    except ImportError as exc:
        fail(f"the template registry is not available in this installation ({exc}).")
    try:
        return TemplateRegistry(data_dir)
    except Exception as exc:
        fail(f"cannot open the template registry in {data_dir}: {exc}")


def _with_proxy(api: Any) -> Any:
    """The API behind the edge proxy, which routes sandbox traffic (E2b-Sandbox-Id or <port>-<id> hosts)."""
    try:
        from ..proxy.asgi import EdgeProxy
    except ImportError as exc:
        err.print(f"[yellow]warning:[/] the edge proxy is not available ({exc}); serving the API only, "
                  "so SDKs cannot reach sandboxes through this port.")
        return api
    return EdgeProxy(api, resolve=api.state.resolve_sandbox, audit=api.state.envd_audit)
