"""`sandhive node`: one host's sandboxes served to control planes (`sandhive serve --no-local-node --node-url`).

It owns what `sandhive serve` owns for its embedded node — the runtime, warm pools, admission, network slots and
the egress firewall — and serves the node API (`sandhive.cluster.node_api`) and the node-side proxy on one port,
behind the cluster token.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from .common import DEFAULT_DATA_DIR, DataDir, err, fail, prepare_data_dir
from .node_options import (
    CpuOvercommit,
    MaxSandboxes,
    MemoryBudget,
    MemoryOvercommit,
    MemoryReserve,
    MissShells,
    PoolSize,
    TemplatePoolSizes,
    configure_node,
)
from .registry_options import RegistryOption, TemplateCache, TemplateRegistryInsecure, registry_ref
from .serve import Backend, EgressAllow, EgressResolver

ClusterTokenFile = Annotated[Path, typer.Option(
    "--cluster-token-file", exists=True, dir_okay=False,
    help="File holding the cluster token (32+ characters) that nodes and control planes share.")]

def node(
    cluster_token_file: ClusterTokenFile,
    listen: Annotated[str, typer.Option(help="ADDR:PORT the node API and node-side proxy listen on.")]
    = "127.0.0.1:3100",
    advertise: Annotated[str | None, typer.Option(
        help="Address control planes reach this node at (default: the --listen address).")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    backend: Annotated[Backend, typer.Option(help="Sandbox backend (`auto`: the strongest that works here).")]
    = Backend.auto,
    host_ca: Annotated[bool, typer.Option(help="Give sandboxes the host's CA bundle.")] = True,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    pool_size: PoolSize = 2,
    template_pool_size: TemplatePoolSizes = None,
    miss_shells: MissShells = 0,
    memory_budget: MemoryBudget = None,
    cpu_overcommit: CpuOvercommit = 256.0,
    memory_overcommit: MemoryOvercommit = 8.0,
    max_sandboxes: MaxSandboxes = 200,
    memory_reserve: MemoryReserve = None,
    egress_allow: EgressAllow = None,
    egress_resolver: EgressResolver = None,
    template_registry: RegistryOption = None,
    template_registry_insecure: TemplateRegistryInsecure = False,
    template_cache: TemplateCache = None,
) -> None:
    """Run a node: this host's sandboxes, for control planes that hold the cluster token."""
    import uvicorn

    from ..cluster.models import read_token
    from ..cluster.node_api import NodeService, create_node_app, data_dir_node_id
    from ..cluster.node_builds import NodeBuilds
    from ..cluster.node_saved_api import SavedService, saved_router
    from ..cluster.node_volume_api import NodeVolumes, volume_node_router
    from . import serve as s

    if backend is Backend.none:
        fail("a node needs a sandbox backend")
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit():
        fail(f"--listen: expected ADDR:PORT, got {listen!r}")
    host = host.strip("[]")
    port = int(port_text)
    try:
        token = read_token(cluster_token_file)
    except (OSError, ValueError) as exc:
        fail(f"--cluster-token-file: {exc}")
    data_dir = prepare_data_dir(data_dir)
    s._raise_open_files()
    s._log_to_stderr(log_level)
    allow = s._egress_allow(egress_allow)
    local_templates = s._templates(data_dir)
    ref = registry_ref(template_registry, template_registry_insecure)
    pulling = None
    if ref is not None:
        from ..templates.pull import PullingTemplates

        pulling = PullingTemplates(local_templates, data_dir, ref, template_cache or data_dir / "template-cache")
    templates = pulling or local_templates
    node_id = data_dir_node_id(data_dir)
    if advertise is None and host in ("", "0.0.0.0", "::"):
        fail("--advertise ADDR is needed with --listen on every address: control planes must know where to reach "
             "this node")
    advertised = advertise or host
    proxy = f"[{advertised}]:{port}" if ":" in advertised else f"{advertised}:{port}"

    async def run() -> bool:
        runtime_node = await s._node(backend, data_dir)
        assert runtime_node is not None
        await s._apply_egress(allow)
        domain_filter = await s._start_egress_filter(runtime_node, allow, egress_resolver)
        configure_node(runtime_node, pool_size, template_pool_size, memory_budget, cpu_overcommit, miss_shells,
                       memory_overcommit=memory_overcommit, max_sandboxes=max_sandboxes,
                       memory_reserve=memory_reserve)
        service = NodeService(runtime_node, templates, token, node_id, proxy, trust_host_ca=host_ca)
        service.builds = NodeBuilds(data_dir, local_templates, pulling)
        service.volumes = NodeVolumes(data_dir)
        err.print(f"sandhive: node {node_id} serving on http://{listen} (backend {runtime_node.backend}, "
                  f"advertised as {proxy}, data dir {data_dir})")
        server = uvicorn.Server(uvicorn.Config(
            create_node_app(service, token, [saved_router(SavedService(service, data_dir)),
                                             volume_node_router(service.volumes)]),
            host=host, port=port, log_level=log_level, lifespan="on",
            server_header=False, date_header=False, timeout_keep_alive=75))
        try:
            await server.serve()
        finally:
            await domain_filter.close()
        return server.started

    if not asyncio.run(run()):
        raise SystemExit(3)
