"""The node API's wire for paused sandboxes and snapshots (`/node/v1/saved/...`), shared by the node
(`node_saved_api`) and the control plane (`remote_saved`).

A saved sandbox's files stay on the node that made them. Its `SavedSandbox.state` carries that node's id
(`models.NODE_ID_KEY`) into the store (the `saved` column of a paused sandbox, `snapshots.state`), so the control
plane resumes or restores it on that node. Directories cross the wire as a kind and a name, never as paths: a
node only ever touches `<its data dir>/<kind>/<name>`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..errors import UserError
from ..node.runtime import SavedSandbox
from .models import CreateBody, Handle

Kind = Literal["paused", "snapshots"]  # the node's directories under its data dir: pauses, snapshots (and forks)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def check_name(name: str) -> str:
    """A directory name the control plane may give (an id): no separator, no dot, nothing relative."""
    if not NAME.match(name):
        raise UserError(400, f"invalid saved-sandbox name {name!r}")
    return name


class Saved(BaseModel):
    """A `SavedSandbox` on the wire: where its files are as (kind, name) on its node."""

    source_id: str
    backend: str
    mode: Literal["memory", "filesystem"]
    kind: Kind
    name: str
    state: dict[str, Any] = Field(default_factory=dict)
    path: str = ""  # the directory on its node (for logs and the store; never read back by a node)

    @classmethod
    def of(cls, saved: SavedSandbox) -> Saved:
        """The wire form of a saved sandbox the control plane has (its directory is the node's path)."""
        directory = Path(saved.directory)
        kind = directory.parent.name
        if kind not in ("paused", "snapshots"):
            raise UserError(409, f"saved sandbox {saved.source_id} is not a remote node's pause or snapshot")
        return cls(source_id=saved.source_id, backend=saved.backend, mode=saved.mode, kind=kind,  # type: ignore[arg-type]
                   name=directory.name, state=dict(saved.state), path=str(directory))

    def directory(self, data_dir: Path) -> Path:
        return data_dir / self.kind / check_name(self.name)

    def to_saved(self, data_dir: Path) -> SavedSandbox:
        """As the node's runtime knows it: its own directory, its state without what the node added."""
        state = {k: v for k, v in self.state.items() if not k.startswith("cluster_")}
        return SavedSandbox(self.source_id, self.backend, self.mode, self.directory(data_dir), state)

    def to_remote(self) -> SavedSandbox:
        """As the control plane keeps it: the node's path (for its name) and the node's id in its state."""
        return SavedSandbox(self.source_id, self.backend, self.mode, Path(self.path or f"/{self.kind}/{self.name}"),
                            dict(self.state))


class PauseBody(BaseModel):
    handle: Handle
    mode: Literal["memory", "filesystem"]
    name: str


class SnapshotBody(BaseModel):
    handle: Handle
    name: str


class ResumeBody(BaseModel):
    """Resume (`kind` paused) or restore (`kind` snapshots) `saved` on this node as the sandbox `create` says."""

    saved: Saved
    create: CreateBody
    source_token: bool = False  # restore: the snapshot's envd still holds its source's token (derived here)
