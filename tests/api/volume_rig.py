"""Cleanup for the volume suites (tests/api/test_volumes_sdk.py, tests/hostile/test_volumes.py)."""

from __future__ import annotations

from tests.api.rig import Server, kill_team_sandboxes


def delete_team_volumes(server: Server, *teams: str) -> None:
    """A failed test may leave volumes: their images stay loop-mounted under the data dir until deleted, so a run
    ends by killing the teams' sandboxes (which hold them) and deleting every volume."""
    for team in teams:
        key = server.key(team)
        kill_team_sandboxes(server, key)
        with server.client(key) as c:
            for volume in c.get("/volumes").json():
                c.delete(f"/volumes/{volume['volumeID']}")
