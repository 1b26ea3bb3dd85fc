"""Issue 17: the deployment files of `deploy/` are checked offline, in the unit tier (no cluster, no server).

There is no Kubernetes to apply them to here, so every manifest is validated against the schemas of a named
Kubernetes version with `kubernetes-validate --strict` (unknown fields are errors: a misspelt `mountPropagation`
would otherwise be dropped silently by the API server), and what the docs promise is checked against the files:
the node DaemonSet mounts every host path docs/deploy.md lists and no other, images are pinned, the control
plane is two unprivileged replicas, every Secret the manifests use is one the docs say how to create, and the
systemd units parse (`systemd-analyze verify`) and keep the hardening the docs describe.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

try:
    import kubernetes_validate
    from kubernetes_validate import utils as kv_utils
except ImportError:  # pragma: no cover - the `test` extras install it
    kubernetes_validate = None

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy/kubernetes"
SYSTEMD = ROOT / "deploy/systemd"
DOCS = ROOT / "docs/deploy.md"
K8S_VERSION = "1.34"  # the schemas the manifests are validated against (kubernetes-validate ships 1.25–1.37)
# Options of the cluster roles the issue specifies (issue 17). Until the CLI has them they are taken as given;
# once it has, the CLI's own options are what the files are checked against.
ISSUE_17_SERVE_OPTIONS = {"--cluster-token-file", "--no-local-node"}
ISSUE_17_NODE_OPTIONS = {"--data-dir", "--listen", "--advertise", "--cluster-token-file", "--backend"}
# systemd options that put a service into a mount namespace of its own or under a seccomp filter: a node
# (or a single host) must have none of them (docs/deploy.md, "Several hosts with systemd").
NODE_FORBIDDEN_HARDENING = {
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateNetwork", "PrivateMounts",
    "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths",
    "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups", "ProtectClock", "ProtectProc",
    "SystemCallFilter", "RestrictNamespaces", "NoNewPrivileges", "CapabilityBoundingSet", "DynamicUser",
    "LockPersonality", "MemoryDenyWriteExecute", "RestrictAddressFamilies", "SystemCallArchitectures",
    "RestrictRealtime", "RestrictSUIDSGID", "OOMScoreAdjust",  # seccomp filters and OOM scores children inherit
}


def need_validator() -> Any:
    if kubernetes_validate is None:
        pytest.skip("kubernetes-validate is not installed (it is in the `test` extras)")
    return kubernetes_validate


# ---- loading ----------------------------------------------------------------------------------------------

def manifest_files() -> list[Path]:
    return sorted(p for p in KUBE.rglob("*.yaml") if p.name != "kustomization.yaml")


def kustomizations() -> list[Path]:
    return sorted(KUBE.rglob("kustomization.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def all_objects() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in manifest_files():
        for doc in documents(path):
            yield path, doc


def one(kind: str, name: str, path: Path) -> dict[str, Any]:
    found = [doc for doc in documents(path) if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{path.relative_to(ROOT)}: expected one {kind} {name}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def docs_section(heading: str) -> str:
    text = DOCS.read_text()
    start = text.index(heading)
    rest = text[start + len(heading):]
    end = re.search(r"^#{2,3} ", rest, re.M)
    return rest if end is None else rest[:end.start()]


def first_column(table: str) -> list[str]:
    """Backticked values of a markdown table's first column (header and rule rows are skipped)."""
    values = []
    for line in table.splitlines():
        cell = re.match(r"^\| `([^`]+)`", line)
        if cell:
            values.append(cell.group(1))
    return values


def control_plane() -> dict[str, Any]:
    return one("Deployment", "sandhive-control-plane", KUBE / "control-plane.yaml")


def node_daemonset() -> dict[str, Any]:
    return one("DaemonSet", "sandhive-node", KUBE / "node-daemonset.yaml")


def overlay_patches() -> list[Path]:
    return sorted((KUBE / "overlays").glob("*/node-*.yaml"))


# ---- schema validation --------------------------------------------------------------------------------------

def test_kubernetes_validate_ships_the_named_version() -> None:
    need_validator()
    versions = {kv_utils.major_minor(v) for v in kv_utils.all_versions()}
    assert K8S_VERSION in versions, f"kubernetes-validate has no {K8S_VERSION} schemas: {sorted(versions)}"


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(KUBE)))
def test_every_manifest_is_valid_for_the_named_kubernetes_version(path: Path) -> None:
    kv = need_validator()
    docs = documents(path)
    assert docs, f"{path} holds no object"
    problems = []
    for doc in docs:
        try:
            kv.validate(doc, K8S_VERSION, strict=True)
        except kv.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            problems.append(f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')} at {where}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            problems.append(f"{doc.get('kind')}: {exc} (a CRD cannot be validated offline: keep it out of deploy/)")
    assert not problems, "\n".join(problems)


def test_a_schema_error_is_caught() -> None:
    """The check is not vacuous: a misspelt field fails strict validation."""
    kv = need_validator()
    broken = node_daemonset()
    broken["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPropogation"] = "Bidirectional"
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", kustomizations(), ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_each_kustomization_lists_exactly_its_files(path: Path) -> None:
    kustomization = yaml.safe_load(path.read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = [*kustomization.get("resources", []), *(p["path"] for p in kustomization.get("patches", []))]
    files = set()
    for entry in listed:
        target = (path.parent / entry).resolve()
        assert target.exists(), f"{path.relative_to(ROOT)} lists {entry}, which does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").is_file(), f"{entry} is not a kustomization"
        else:
            files.add(target.name)
    present = {p.name for p in path.parent.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert files == present, f"{path.relative_to(ROOT)}: lists {sorted(files)}, directory has {sorted(present)}"


def test_references_inside_each_pod_resolve() -> None:
    """What the schemas cannot see: a mount names a volume of its pod (an overlay's, of the pod it patches), a
    probe or Service names a port its pod has, and a ConfigMap a pod reads is one of deploy/kubernetes."""
    configmaps = {doc["metadata"]["name"] for _, doc in all_objects() if doc["kind"] == "ConfigMap"}
    base_volumes = {v["name"] for v in pod_spec(node_daemonset())["volumes"]}
    problems = []
    pods: dict[str, set[str]] = {}
    for path, doc in all_objects():
        if "template" not in doc.get("spec", {}):
            continue
        spec = pod_spec(doc)
        volumes = {v["name"] for v in spec.get("volumes", [])}
        volumes |= {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        if path in overlay_patches():
            volumes |= base_volumes
        ports = set()
        for container in containers(spec):
            ports |= {p["name"] for p in container.get("ports", []) if "name" in p}
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    problems.append(f"{path.name}: {container['name']} mounts unknown volume {mount['name']}")
            for source in container.get("envFrom", []):
                if "configMapRef" in source and source["configMapRef"]["name"] not in configmaps:
                    problems.append(f"{path.name}: no ConfigMap {source['configMapRef']['name']}")
        for container in containers(spec):
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                action = container.get(probe, {})
                port = (action.get("httpGet") or action.get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    problems.append(f"{path.name}: {container['name']} {probe} names unknown port {port}")
        labels = doc["spec"]["template"].get("metadata", {}).get("labels", {})
        if labels:
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector.items() <= labels.items(), f"{path.name}: the selector does not match the pod"
            pods[path.name + "/" + doc["metadata"]["name"]] = ports
            for _, service in all_objects():
                if service["kind"] == "Service" and service["spec"]["selector"].items() <= labels.items():
                    for port in service["spec"]["ports"]:
                        if isinstance(port["targetPort"], str) and port["targetPort"] not in ports:
                            problems.append(f"Service {service['metadata']['name']}: no port {port['targetPort']}")
    assert len(pods) == 4, sorted(pods)  # control plane, node, registry, PostgreSQL
    assert not problems, "\n".join(problems)


# ---- what the docs promise ------------------------------------------------------------------------------------

def test_images_are_pinned_by_tag() -> None:
    unpinned = []
    for path, doc in all_objects():
        if "template" not in doc.get("spec", {}):
            continue
        for container in containers(pod_spec(doc)):
            if path in overlay_patches() and "image" not in container:
                continue  # a patch keeps the base's image
            image = container.get("image", "")
            _, _, tag = image.rpartition("/")[2].partition(":")
            if "@sha256:" in image:
                continue
            if not tag or tag == "latest":
                unpinned.append(f"{path.relative_to(ROOT)}: {container['name']} {image!r}")
    for path in kustomizations():
        for image in yaml.safe_load(path.read_text()).get("images", []):
            if image.get("newTag", "latest") == "latest" and "digest" not in image:
                unpinned.append(f"{path.relative_to(ROOT)}: images {image}")
    assert not unpinned, "images must be pinned by tag (or digest), never latest:\n" + "\n".join(unpinned)


def test_the_control_plane_is_two_unprivileged_replicas_probed_on_health() -> None:
    deployment = control_plane()
    assert deployment["spec"]["replicas"] == 2
    spec = pod_spec(deployment)
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["automountServiceAccountToken"] is False
    assert not [v for v in spec["volumes"] if "hostPath" in v], "the control plane needs nothing of the host"
    for container in containers(spec):
        security = container.get("securityContext", {})
        assert security.get("privileged", False) is False, container["name"]
        assert security.get("allowPrivilegeEscalation") is False, container["name"]
        assert security.get("capabilities", {}).get("drop") == ["ALL"], container["name"]
        assert security.get("runAsUser", 1) != 0, container["name"]
    server = spec["containers"][0]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert server[probe]["httpGet"]["path"] == "/health", probe
    assert server["resources"]["requests"] and server["resources"]["limits"]["memory"]
    args = server["args"]
    assert args[0] == "serve" and "--no-local-node" in args
    token = option_value(args, "--cluster-token-file")
    assert any(token.startswith(m["mountPath"] + "/") for m in server["volumeMounts"] if m.get("readOnly"))
    env = {e["name"]: e for e in server["env"]}
    assert env["SANDHIVE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "sandhive-database"


def test_the_node_daemonset_mounts_every_host_path_the_docs_name_and_no_other() -> None:
    documented = set(first_column(docs_section("### Host paths of the node")))
    assert "/run/netns" in documented and "/dev/kvm" in documented
    mounted = set()
    for spec in [pod_spec(node_daemonset()), *(pod_spec(yaml.safe_load(p.read_text())) for p in overlay_patches())]:
        volumes = {v["name"]: v["hostPath"]["path"] for v in spec.get("volumes", []) if "hostPath" in v}
        mounted |= set(volumes.values())
        node = next(c for c in spec["containers"] if c["name"] == "node")
        mounts = {m["name"]: m for m in node.get("volumeMounts", [])}
        for name, host_path in volumes.items():
            assert name in mounts, f"hostPath {host_path} is not mounted into the node"
            assert mounts[name]["mountPath"] == host_path, f"{host_path} is mounted elsewhere in the pod"
    assert mounted == documented, f"DaemonSet mounts {sorted(mounted)}, docs list {sorted(documented)}"


def test_the_node_daemonset_is_privileged_on_the_hosts_network_and_pids() -> None:
    spec = pod_spec(node_daemonset())
    assert spec["hostNetwork"] is True and spec["hostPID"] is True
    # Sandboxes get the node's nameservers: the host's, never the cluster DNS (it would tell them the cluster's names).
    assert spec["dnsPolicy"] == "Default"
    node = next(c for c in spec["containers"] if c["name"] == "node")
    assert node["securityContext"]["privileged"] is True
    propagation = {m["mountPath"]: m.get("mountPropagation") for m in node["volumeMounts"]}
    assert propagation["/run/netns"] == "Bidirectional"
    assert propagation["/var/lib/sandhive"] == "Bidirectional"
    assert propagation["/lib/modules"] is None
    assert next(m for m in node["volumeMounts"] if m["mountPath"] == "/lib/modules")["readOnly"] is True
    args = node["args"]
    assert args[0] == "node"
    assert option_value(args, "--data-dir") == "/var/lib/sandhive"
    assert option_value(args, "--advertise") == "$(HOST_IP)"
    env = {e["name"]: e for e in node["env"]}
    assert env["HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    kvm = yaml.safe_load((KUBE / "overlays/kvm/node-kvm.yaml").read_text())
    kvm_volume = next(v for v in pod_spec(kvm)["volumes"] if v["hostPath"]["path"] == "/dev/kvm")
    assert kvm_volume["hostPath"]["type"] == "CharDevice"


def test_overlays_change_only_the_backend_and_their_labels_are_documented() -> None:
    base_args = next(c for c in pod_spec(node_daemonset())["containers"] if c["name"] == "node")["args"]
    documented = set(first_column(docs_section("### Node labels")))
    assert "sandhive.dev/node=true" in documented
    for path in overlay_patches():
        spec = pod_spec(yaml.safe_load(path.read_text()))
        args = next(c for c in spec["containers"] if c["name"] == "node")["args"]
        backend = {"kvm": "microvm"}.get(path.parent.name, path.parent.name)
        expected = [f"--backend={backend}" if a.startswith("--backend=") else a for a in base_args]
        assert args == expected, f"{path.relative_to(ROOT)} must keep the base's arguments"
        for key, value in spec["nodeSelector"].items():
            assert f"{key}={value}" in documented, f"label {key}={value} is not in docs/deploy.md's Node labels"
    for key, value in pod_spec(node_daemonset())["nodeSelector"].items():
        if key.startswith("sandhive.dev/"):
            assert f"{key}={value}" in documented


def referenced_secrets() -> set[str]:
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "secretName" and isinstance(item, str):
                    names.add(item)
                elif key == "secretKeyRef":
                    names.add(item["name"])
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for _, doc in all_objects():
        walk(doc)
    return names


def test_no_secret_is_in_git_and_the_docs_say_how_to_make_each() -> None:
    assert not [path for path, doc in all_objects() if doc["kind"] == "Secret"], "Secrets are made, not committed"
    table = docs_section("### Before `kubectl apply -k deploy/kubernetes`")
    documented = set(first_column(table))
    used = referenced_secrets()
    assert used == documented, f"manifests use {sorted(used)}, docs/deploy.md explains {sorted(documented)}"
    for name in used:
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}`"))
        assert "create secret" in row and name in row.split("create secret", 1)[1], f"no command makes {name}"


# ---- command lines ----------------------------------------------------------------------------------------

def option_value(args: list[str], option: str) -> str:
    for i, arg in enumerate(args):
        if arg == option:
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{option} is not among {args}")


def options(args: list[str]) -> set[str]:
    return {arg.split("=", 1)[0] for arg in args if arg.startswith("--")}


def cli_options(command: str) -> set[str] | None:
    """The options `sandhive <command>` has, or None when this CLI has no such command (yet)."""
    import typer.main

    from sandhive.cli.main import app

    group = typer.main.get_command(app)
    found = getattr(group, "commands", {}).get(command)
    if found is None:
        return None
    return {opt for param in found.params for opt in param.opts}


def test_the_command_lines_use_options_the_cli_has() -> None:
    serve = cli_options("serve")
    assert serve is not None
    node = cli_options("node") or ISSUE_17_NODE_OPTIONS
    serve_known = serve | ISSUE_17_SERVE_OPTIONS
    lines: list[tuple[str, list[str]]] = []
    lines.append(("control-plane.yaml", pod_spec(control_plane())["containers"][0]["args"]))
    lines.append(("node-daemonset.yaml", next(c for c in pod_spec(node_daemonset())["containers"])["args"]))
    for path in overlay_patches():
        lines.append((path.name, pod_spec(yaml.safe_load(path.read_text()))["containers"][0]["args"]))
    for unit in SYSTEMD.glob("*.service"):
        exec_start = unit_settings(unit)["Service"]["ExecStart"][-1]
        lines.append((unit.name, exec_start.split()[1:]))
    for example in SYSTEMD.glob("*.env.example"):
        for key, value in env_file(example).items():
            if key.endswith("_ARGS"):
                lines.append((example.name, ["node" if "NODE" in key else "serve", *value.split()]))
    problems = []
    for where, args in lines:
        known = node if args[0] == "node" else serve_known
        unknown = options(args) - known
        if unknown:
            problems.append(f"{where}: sandhive {args[0]} has no {sorted(unknown)}")
        if "--backend" in options(args):
            from sandhive.cli.serve import Backend

            assert option_value(args, "--backend") in {b.value for b in Backend}, where
    assert not problems, "\n".join(problems)


# ---- systemd ----------------------------------------------------------------------------------------------

UNITS = sorted(SYSTEMD.glob("*.service"))


def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections and settings; a key may repeat (ExecStartPre=, LoadCredential=)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            current = sections.setdefault(header.group(1), {})
            continue
        assert current is not None, f"{path.name}: a setting before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_the_systemd_units_parse() -> None:
    """`systemd-analyze verify` on copies whose /opt/sandhive paths point at this venv (it checks that the
    programs exist); any warning it prints (an unknown key, a bad value) fails the test."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package)")
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "sandhive").exists(), f"no sandhive script beside {sys.executable}"
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sandhive-units-") as tmp:
        copies = []
        for unit in UNITS:
            copy = Path(tmp) / unit.name
            copy.write_text(unit.read_text().replace("/opt/sandhive/.venv/bin/", f"{venv_bin}/"))
            copies.append(str(copy))
        result = subprocess.run([analyze, "verify", *copies], capture_output=True, text=True, timeout=60)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, output


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_each_unit_restarts_has_its_limits_and_its_environment_file(unit: Path) -> None:
    settings = unit_settings(unit)
    service = settings["Service"]
    assert service["Restart"][0] in {"always", "on-failure"}
    assert int(service["LimitNOFILE"][0]) >= 65536
    assert settings["Install"]["WantedBy"] == ["multi-user.target"]
    example = SYSTEMD / f"{unit.stem}.env.example"
    assert example.is_file(), f"{unit.name} needs {example.name}"
    defined = set(env_file(example))
    provided = {"CREDENTIALS_DIRECTORY", "STATE_DIRECTORY"}
    used = set(re.findall(r"\$\{?(\w+)\}?", " ".join(service["ExecStart"] + service.get("ExecStartPre", []))))
    used -= provided
    assert used <= defined | {k.split("=", 1)[0] for k in service.get("Environment", [])}, \
        f"{unit.name} uses {sorted(used - defined)}, which {example.name} does not set"
    assert "--database-url" not in service["ExecStart"][0], "a password on the command line shows in ps"


@pytest.mark.parametrize("name", ["sandhive.service", "sandhive-node.service"])
def test_sandbox_hosts_keep_their_mounts_and_sandboxes_outlive_a_restart(name: str) -> None:
    service = unit_settings(SYSTEMD / name)["Service"]
    assert service["User"] == ["root"]
    assert service["KillMode"] == ["process"]
    assert not NODE_FORBIDDEN_HARDENING & set(service), sorted(NODE_FORBIDDEN_HARDENING & set(service))


def test_the_control_plane_unit_runs_unprivileged_and_hardened() -> None:
    service = unit_settings(SYSTEMD / "sandhive-control-plane.service")["Service"]
    assert service["DynamicUser"] == ["yes"] and "User" not in service
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["CapabilityBoundingSet"] == [""]
    assert service["ProtectSystem"] == ["strict"]
    assert service["PrivateTmp"] == ["yes"] and service["PrivateDevices"] == ["yes"]
    args = service["ExecStart"][0].split()
    assert "--no-local-node" in args and option_value(args, "--cluster-token-file") == "%d/cluster-token"
