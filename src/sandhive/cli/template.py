"""`sandhive template build|list|info|delete|alias|publish|unpublish`: templates from Dockerfiles, and the templates
your team has (its own, private unless published, and the server's built-ins). `build-builtin` (on the server's
host) is in `builtin_cmd`."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Column

from . import builtin_cmd, client
from .common import EXIT_FAILED, EXIT_USAGE, err, fail, out, parse_pairs
from .config import ApiKey, ApiUrl, resolve
from .failures import reporting
from .output import Json, StepSpinner, print_json, show, size, table, when

app = typer.Typer(help="Build templates from Dockerfiles; list, inspect, alias and delete them.",
                  no_args_is_help=True)

DOCKERFILES = ("e2b.Dockerfile", "Dockerfile")  # looked for in the context directory, in this order
CONFIG_FILES = ("e2b.toml", "sandhive.toml")  # read in this order: sandhive.toml's values win
CONFIG_KEYS = {"template_id": str, "template_name": str, "dockerfile": str, "start_cmd": str, "ready_cmd": str,
               "cpu_count": int, "memory_mb": int}
LOG_TAIL = 15  # build log lines shown again when a build fails

TemplateName = Annotated[str, typer.Argument(metavar="TEMPLATE", help="Template id or alias.")]


# ---- build ----------------------------------------------------------------------------------------------------

def read_config(context: Path) -> dict[str, Any]:
    """Defaults from `e2b.toml` (E2B's CLI writes it) and `sandhive.toml` in the context directory; a value of the
    wrong type, or a file that is not TOML, is a usage error naming the file."""
    values: dict[str, Any] = {}
    for name in CONFIG_FILES:
        path = context / name
        if not path.is_file():
            continue
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            fail(f"cannot read {path}: {exc}", EXIT_USAGE)
        for key, kind in CONFIG_KEYS.items():
            if key in data:
                if not isinstance(data[key], kind) or isinstance(data[key], bool):
                    fail(f"{path}: {key} must be a {kind.__name__}, not {data[key]!r}", EXIT_USAGE)
                values[key] = data[key]
    return values


def find_dockerfile(context: Path, given: str | None) -> Path:
    """The Dockerfile to build: the one given (relative to the context, else to the current directory), or
    `e2b.Dockerfile`, then `Dockerfile`, in the context."""
    if given:
        for candidate in (Path(given),) if Path(given).is_absolute() else (context / given, Path(given)):
            if candidate.is_file():
                return candidate
        fail(f"Dockerfile {given!r} not found (looked in {context} and the current directory)", EXIT_USAGE)
    for name in DOCKERFILES:
        if (context / name).is_file():
            return context / name
    fail(f"no e2b.Dockerfile or Dockerfile in {context}: write one, or name it with --dockerfile", EXIT_USAGE)


class BuildDisplay(StepSpinner):
    """A build's log entries (`on_build_logs`) under the step spinner; the lines are kept for the failure report."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.lines: list[str] = []
        self.started = time.monotonic()

    def entry(self, entry: Any) -> None:
        """`on_build_logs`: one log entry."""
        if entry.level == "debug":
            return
        self.lines.append(entry.message)
        self.line(entry.message, step=entry.message.startswith("STEP "))


@app.command()
def build(
    name: Annotated[str | None, typer.Option("--name", "-n", help="Template name (default: template_name in "
                                             "e2b.toml/sandhive.toml; else the server makes an id).")] = None,
    dockerfile: Annotated[str | None, typer.Option("--dockerfile", "-d", help="Dockerfile (default: e2b.Dockerfile, "
                                                   "then Dockerfile, in the context).")] = None,
    path: Annotated[Path, typer.Option("--path", "-p", help="Build context directory.")] = Path("."),
    cpu: Annotated[int | None, typer.Option("--cpu", "--cpu-count", min=1, help="CPUs of its sandboxes.")] = None,
    memory_mb: Annotated[int | None, typer.Option("--memory-mb", min=128, help="Memory of its sandboxes.")] = None,
    start_cmd: Annotated[str | None, typer.Option("--start-cmd", "--cmd", "-c", help="Started in every sandbox "
                                                  "(default: the Dockerfile's CMD/ENTRYPOINT).")] = None,
    ready_cmd: Annotated[str | None, typer.Option("--ready-cmd",
                                                  help="The sandbox is ready once this exits 0.")] = None,
    build_arg: Annotated[list[str] | None, typer.Option("--build-arg", metavar="KEY=VALUE",
                                                        help="ARG value (repeatable).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Rebuild every layer.")] = False,
    as_json: Json = False,
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Build a template from a Dockerfile and its directory; print its id when it is ready."""
    args = parse_pairs(build_arg, "--build-arg")
    context = path.expanduser()
    if not context.is_dir():
        fail(f"--path {path}: not a directory", EXIT_USAGE)
    config = read_config(context)
    docker_path = find_dockerfile(context, dockerfile or config.get("dockerfile"))
    chosen = name or config.get("template_name") or config.get("template_id")
    start = start_cmd or config.get("start_cmd")
    ready = ready_cmd or config.get("ready_cmd")
    target = resolve(url, api_key)
    from ..sdk import BuildException, Template, TemplateException

    try:
        template = Template(file_context_path=context).from_dockerfile(docker_path.absolute())
    except TemplateException as exc:
        fail(str(exc), EXIT_USAGE)
    if start:
        template.set_start_cmd(start, ready or "")
    elif ready:
        template.set_ready_cmd(ready)
    label = chosen or "a new template"
    err.print(f"Building {label} from {docker_path} (context {context.absolute()})")
    display = BuildDisplay(chosen or "template")
    with reporting(target.url, f"cannot build {label}"):
        try:
            with display:
                info = client.build_template(target, template, chosen or _generated(), cpu_count=cpu or
                                             config.get("cpu_count"), memory_mb=memory_mb or config.get("memory_mb"),
                                             skip_cache=no_cache, build_args=args, on_build_logs=display.entry)
        except BuildException as exc:
            _build_failed(label, exc, display)
        except TemplateException as exc:
            fail(f"cannot build {label}: {exc}", EXIT_USAGE)
    seconds = time.monotonic() - display.started
    err.print(f"[green]Template {info.template_id} is ready[/] ({seconds:.1f}s). Start a sandbox from it: "
              f"Sandbox.create({info.name!r}) or `sandhive sandbox create -t {info.name}`")
    if as_json:
        print_json({"template_id": info.template_id, "build_id": info.build_id, "name": info.name,
                    "tags": info.tags, "seconds": round(seconds, 1)})
    else:
        print(info.template_id)


def _generated() -> str:
    """A name for a template built without one: the server's ids are 20 letters and digits, and so is this."""
    import secrets
    import string

    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(20))


def _build_failed(label: str, exc: Any, display: BuildDisplay) -> None:
    """The failing step and the build log's last lines, then exit 1."""
    message = str(exc)
    head, _, rest = message.partition("\nlast lines of the build log:\n")
    if not rest and getattr(exc, "log_entries", None):
        rest = "\n".join(f"  {entry.message}" for entry in exc.log_entries[-LOG_TAIL:])
    step = f" (step {exc.step})" if getattr(exc, "step", None) and not head.startswith(("step ", exc.step)) else ""
    err.print(f"[bold red]error:[/] building {label} failed{step}: {head}", markup=True, highlight=False)
    if rest.strip():
        err.print("last lines of the build log:", highlight=False)
        err.print(rest.rstrip("\n"), markup=False, highlight=False)
    raise typer.Exit(EXIT_FAILED)


# ---- list, info, delete, alias --------------------------------------------------------------------------------

@app.command("list")
def list_templates(as_json: Json = False, url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """List the templates your team can use: its own built templates and the server's built-ins."""
    target = resolve(url, api_key)
    with reporting(target.url, "cannot list templates"):
        rows = client.templates(target)
    if as_json:
        print_json([t.to_json() for t in rows])
        return
    if not rows:
        out.print("No templates built yet. `base` is built on first use (`sandhive sandbox create`), or ahead "
                  "of time by `make up` (as root); build your own with `sandhive template build`.")
        return
    listing = table(Column("TEMPLATE ID", no_wrap=True), "ALIASES", "PUBLIC", "CPU", "MEMORY", "DISK", "CREATED")
    for t in rows:
        listing.add_row(t.template_id, ", ".join(t.aliases) or "-", "yes" if t.public else "no", str(t.cpu_count),
                        size(t.memory_mb * 2**20), size(t.disk_size_mb * 2**20), when(t.created_at))
    show(listing)


def _detail_json(data: dict[str, Any]) -> dict[str, Any]:
    """The API's template, in the CLI's snake_case."""
    return {"template_id": data["templateID"], "aliases": data.get("aliases", []), "tags": data.get("tags", []),
            "cpu_count": data["cpuCount"], "memory_mb": data["memoryMB"], "disk_size_mb": data["diskSizeMB"],
            "default_user": data.get("defaultUser"), "default_workdir": data.get("defaultWorkdir"),
            "start_cmd": data.get("startCmd"), "ready_cmd": data.get("readyCmd"), "owned": data.get("owned", False),
            "build_status": data["buildStatus"], "created_at": data["createdAt"], "updated_at": data["updatedAt"],
            "builds": [{"build_id": b["buildID"], "status": b["status"], "created_at": b["createdAt"],
                        "finished_at": b.get("finishedAt"), "tags": b.get("tags", [])} for b in data["builds"]]}


@app.command()
def info(name: TemplateName, as_json: Json = False, url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """Show a template: aliases, size, user and workdir, start and ready commands, builds."""
    target = resolve(url, api_key)
    with reporting(target.url, f"cannot describe template {name}"):
        data = _detail_json(client.template_detail(target, name))
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    for label, value in [("template id", data["template_id"]), ("aliases", ", ".join(data["aliases"]) or "-"),
                         ("tags", ", ".join(data["tags"]) or "-"), ("status", data["build_status"]),
                         ("cpus", str(data["cpu_count"])), ("memory", size(data["memory_mb"] * 2**20)),
                         ("disk", size(data["disk_size_mb"] * 2**20)), ("user", data["default_user"] or "-"),
                         ("workdir", data["default_workdir"] or "-"), ("start command", data["start_cmd"] or "-"),
                         ("ready command", data["ready_cmd"] or "-"), ("created", when(data["created_at"])),
                         ("built", when(data["updated_at"])),
                         ("managed by", "your team" if data["owned"] else "the server, or another team")]:
        grid.add_row(f"[bold]{label}[/]", value)
    show(grid)
    if data["builds"]:
        builds = table(Column("BUILD ID", no_wrap=True), "STATUS", Column("FINISHED", no_wrap=True), "TAGS")
        for b in data["builds"][:10]:
            builds.add_row(b["build_id"], b["status"], when(b["finished_at"]), ", ".join(b["tags"]) or "-")
        out.print()
        show(builds)


@app.command()
def delete(
    names: Annotated[list[str], typer.Argument(metavar="TEMPLATE...", help="Templates to delete (id or alias).")],
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Delete your team's templates. Refused while sandboxes of one run (kill them first)."""
    target = resolve(url, api_key)
    for name in names:
        with reporting(target.url, f"cannot delete template {name}"):
            client.delete_template(target, name)
        out.print(f"Deleted template {name}")


def _set_public(name: str, public: bool, as_json: bool, url: str | None, api_key: str | None) -> None:
    target = resolve(url, api_key)
    with reporting(target.url, f"cannot {'publish' if public else 'unpublish'} template {name}"):
        result = client.set_template_public(target, name, public)
    if as_json:
        print_json(result)
    elif public:
        out.print(f"Template {name} is public: every team on this server can start it as "
                  f"{' or '.join(result.get('names') or [])} (or by id {result['templateID']})")
    else:
        out.print(f"Template {name} is private again: only your team can see and start it")


@app.command()
def publish(name: TemplateName, as_json: Json = False, url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """Make one of your templates public: other teams may start it by `your-team-slug/name` (not change it)."""
    _set_public(name, True, as_json, url, api_key)


@app.command()
def unpublish(name: TemplateName, as_json: Json = False, url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """Make one of your templates private again: only your team can see and start it."""
    _set_public(name, False, as_json, url, api_key)


@app.command()
def alias(
    name: TemplateName,
    aliases: Annotated[list[str], typer.Argument(metavar="ALIAS...", help="Names to add (or remove).")],
    remove: Annotated[bool, typer.Option("--remove", "-r", help="Remove these aliases instead.")] = False,
    as_json: Json = False,
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Give one of your templates more names (or, with --remove, take names away)."""
    target = resolve(url, api_key)
    with reporting(target.url, f"cannot change the aliases of template {name}"):
        current = list(client.template_detail(target, name).get("aliases") or [])
        if remove:
            missing = [a for a in aliases if a not in current]
            if missing:
                fail(f"template {name} has no alias {missing[0]!r} (its aliases: {', '.join(current) or '-'})")
            wanted = [a for a in current if a not in aliases]
        else:
            wanted = list(dict.fromkeys([*current, *aliases]))
        result = client.set_template_aliases(target, name, wanted)
    if as_json:
        print_json(result)
    else:
        out.print(f"Template {name}: aliases {', '.join(result) or '-'}")


app.command("build-builtin")(builtin_cmd.build_builtin)
