"""`Volume`: a team's persistent volume (E2B's beta volumes), mounted into sandboxes with
`Sandbox.create(volume_mounts={"/mnt/data": volume})` and kept after they end.

    vol = Volume.create("data")
    with Sandbox.create(volume_mounts={"/mnt/data": vol}) as sbx:
        sbx.commands.run("echo hi > /mnt/data/x")
    print(vol.read_file("/x"))
    Volume.destroy(vol.volume_id)

The class-level calls use the API key; the content calls (`read_file`, `write_file`, `list`, `remove`) use the
volume's own token, which `create` and `connect` fetch. Blocking only (the calls are few and short).
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from . import volume_calls
from .config import ConnectionConfig
from .dual import dualmethod
from .sandbox import _once
from .volume_calls import VolumeInfo

if TYPE_CHECKING:
    from typing import Unpack

    from .config import ConnectionOptions


class Volume:
    def __init__(self, info: VolumeInfo, config: ConnectionConfig) -> None:
        self._info = info
        self._config = config

    @property
    def volume_id(self) -> str:
        return self._info.volume_id

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def token(self) -> str | None:
        return self._info.token

    @classmethod
    def create(cls, name: str, **opts: Unpack[ConnectionOptions]) -> Volume:
        """A new volume called `name` (unique in the team: letters, digits, '-' and '_')."""
        config = ConnectionConfig.resolve(**opts)
        return cls(_once(config, volume_calls.create(config, name)), config)

    @classmethod
    def connect(cls, volume_id: str, **opts: Unpack[ConnectionOptions]) -> Volume:
        config = ConnectionConfig.resolve(**opts)
        return cls(_once(config, volume_calls.get(config, volume_id)), config)

    @classmethod
    def get_info(cls, volume_id: str, **opts: Unpack[ConnectionOptions]) -> VolumeInfo:
        config = ConnectionConfig.resolve(**opts)
        return _once(config, volume_calls.get(config, volume_id))

    @dualmethod
    def list(cls, **opts: Unpack[ConnectionOptions]) -> builtins.list[VolumeInfo]:
        """`Volume.list()`: the team's volumes. `vol.list(path)`: the paths in a directory of the volume."""
        config = ConnectionConfig.resolve(**opts)
        return _once(config, volume_calls.list_all(config))

    @list.instance
    def _list_dir(self, path: str = "/") -> builtins.list[str]:
        return _once(self._config, volume_calls.list_dir(self._config, self._info, path))

    @dualmethod
    def destroy(cls, volume_id: str, **opts: Unpack[ConnectionOptions]) -> bool:
        """Delete a volume and its files: True if deleted, False if there was none (409 while a sandbox mounts it)."""
        config = ConnectionConfig.resolve(**opts)
        return _once(config, volume_calls.destroy(config, volume_id))

    @destroy.instance
    def _destroy_on_instance(self) -> bool:
        return _once(self._config, volume_calls.destroy(self._config, self.volume_id))

    def read_file(self, path: str, format: str = "text") -> str | bytes:
        data = _once(self._config, volume_calls.read_file(self._config, self._info, path))
        return data if format == "bytes" else data.decode()

    def write_file(self, path: str, data: str | bytes) -> None:
        """Write a file (its parent directories are made), owned by the sandbox user (uid 1000)."""
        payload = data.encode() if isinstance(data, str) else data
        _once(self._config, volume_calls.write_file(self._config, self._info, path, payload))

    def remove(self, path: str) -> None:
        _once(self._config, volume_calls.remove(self._config, self._info, path))

    def __repr__(self) -> str:
        return f"Volume(volume_id={self.volume_id!r}, name={self.name!r})"
