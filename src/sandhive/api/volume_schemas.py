"""The JSON bodies of E2B's volume API (beta), with E2B's key names (`volumeID`, not `volume_id`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict


class NewVolume(BaseModel):
    """`POST /volumes`."""

    model_config = ConfigDict(extra="ignore")
    name: str


class Volume(BaseModel):
    volumeID: str
    name: str


class VolumeAndToken(Volume):
    """A volume and the bearer token of its content API (`/volumecontent/{volumeID}/...`)."""

    token: str


class VolumeMetadata(BaseModel):
    """`PATCH /volumecontent/{volumeID}/path`: what to change (ids as the sandbox sees them)."""

    model_config = ConfigDict(extra="ignore")
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None


class VolumeEntryStat(BaseModel):
    name: str
    type: Literal["file", "directory", "symlink", "unknown"]
    path: str
    size: int
    mode: int
    uid: int
    gid: int
    atime: datetime
    mtime: datetime
    ctime: datetime
    target: str | None = None
