"""The dashboard's static files: a fixed list of names, each mapped to one file, so no request path reaches
the file system. Third-party files come from `assets/node_modules` (npm, pinned by assets/package-lock.json,
installed by `make dashboard-assets`); ours from `static/`."""

from __future__ import annotations

from pathlib import Path

from starlette.responses import FileResponse, PlainTextResponse, Response

HERE = Path(__file__).parent
NODE_MODULES = HERE / "assets" / "node_modules"
FILES: dict[str, Path] = {
    "htmx.min.js": NODE_MODULES / "htmx.org" / "dist" / "htmx.min.js",
    "xterm.js": NODE_MODULES / "@xterm" / "xterm" / "lib" / "xterm.js",
    "xterm.css": NODE_MODULES / "@xterm" / "xterm" / "css" / "xterm.css",
    "addon-fit.js": NODE_MODULES / "@xterm" / "addon-fit" / "lib" / "addon-fit.js",
    "uPlot.iife.min.js": NODE_MODULES / "uplot" / "dist" / "uPlot.iife.min.js",
    "uPlot.min.css": NODE_MODULES / "uplot" / "dist" / "uPlot.min.css",
    "dashboard.js": HERE / "static" / "dashboard.js",
    "dashboard.css": HERE / "static" / "dashboard.css",
}
MEDIA = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def asset(name: str) -> Response:
    path = FILES.get(name)
    if path is None:
        return PlainTextResponse("no such asset", status_code=404)
    if not path.is_file():
        return PlainTextResponse(f"{name} is not installed: run `make dashboard-assets`", status_code=404)
    return FileResponse(path, media_type=MEDIA[path.suffix], headers={"Cache-Control": "private, max-age=300"})


def installed() -> bool:
    """Whether every third-party asset is on disk (the browser tests check this before they start)."""
    return all(p.is_file() for p in FILES.values())
