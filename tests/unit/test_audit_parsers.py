"""The audit log's pieces without a server: the edge proxy's envd parsers (proxy/audit.py), the recorder's queue
(api/audit.py) on a real SQLite store, the store's team-scoped pages, and the CLI's `--since`."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from protobuf import Oneof

from sandhive.api.audit import AuditLog
from sandhive.cli.audit_cmd import parse_since
from sandhive.proxy import audit
from sandhive.rpc.filesystem import filesystem_pb as fpb
from sandhive.rpc.process import process_pb as pb
from sandhive.store import AuditEntry, Store

Event = tuple[str, str | None, str, str | None, dict[str, Any]]


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return bytes([flags]) + len(payload).to_bytes(4, "big") + payload


def jframe(value: dict[str, Any], flags: int = 0) -> bytes:
    return envelope(json.dumps(value).encode(), flags)


def collect() -> tuple[list[Event], audit.Sink]:
    events: list[Event] = []
    return events, lambda *event: events.append(event)


AUTH = [(b"authorization", b"Basic " + base64.b64encode(b"root:")), (b"content-type", b"application/connect+json")]


def start_observer(sink: audit.Sink, headers: list[tuple[bytes, bytes]] = AUTH) -> audit.Observer:
    observer = audit.observer_for(sink, audit.ENVD_PORT, "POST", "/process.Process/Start", b"", headers, "sbx", "t1")
    assert isinstance(observer, audit.StartObserver)
    return observer


def test_a_command_start_and_end_are_recorded_with_pid_exit_code_and_user() -> None:
    events, sink = collect()
    observer = start_observer(sink)
    body = jframe({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo audit-me"], "cwd": "/tmp"}})
    observer.request_chunk(body[:7])
    observer.request_chunk(body[7:])
    observer.response_start(200)
    stream = (jframe({"event": {"start": {"pid": 42}}})
              + jframe({"event": {"data": {"stdout": base64.b64encode(b'"end" {"end":1}').decode()}}})
              + jframe({"event": {"keepalive": {}}})
              + jframe({"event": {"end": {"exited": True, "status": "exit status 0"}}}) + jframe({}, flags=2))
    for i in range(0, len(stream), 3):  # chunk boundaries anywhere, even inside the envelope's header
        observer.response_chunk(stream[i:i + 3])
    observer.finish()
    observer.finish()
    assert [e[2] for e in events] == ["process.start", "process.end"]
    start, end = events[0][4], events[1][4]
    assert start == {"cmd": "/bin/bash", "args": ["-l", "-c", "echo audit-me"], "user": "root", "cwd": "/tmp",
                     "pid": 42}
    assert end["pid"] == 42 and end["exitCode"] == 0 and end["exited"] is True and end["durationMs"] >= 0
    assert events[0][:2] == ("sbx", "t1")


def test_binary_proto_start_and_pty() -> None:
    events, sink = collect()
    observer = start_observer(sink, [(b"content-type", b"application/connect+proto")])
    request = pb.StartRequest(process=pb.ProcessConfig(cmd="/bin/bash", args=["-i"]), pty=pb.PTY(
        size=pb.PTY.Size(cols=80, rows=24)))
    observer.request_chunk(envelope(request.to_binary()))
    observer.response_start(200)
    start = pb.StartResponse(event=pb.ProcessEvent(event=Oneof("start", pb.ProcessEvent.StartEvent(pid=7))))
    end = pb.StartResponse(event=pb.ProcessEvent(event=Oneof("end", pb.ProcessEvent.EndEvent(exit_code=3,
                                                                                             exited=True))))
    observer.response_chunk(envelope(start.to_binary()) + envelope(end.to_binary()))
    assert [e[2] for e in events] == ["pty.start", "pty.end"]
    assert events[0][4]["user"] is None and events[0][4]["pid"] == 7 and events[1][4]["exitCode"] == 3


def test_a_refused_start_is_recorded_with_its_error() -> None:
    events, sink = collect()
    observer = start_observer(sink)
    observer.request_chunk(jframe({"process": {"cmd": "nope"}}))
    observer.response_start(200)
    observer.response_chunk(jframe({"error": {"code": "unauthenticated", "message": "invalid username"}}, flags=2))
    observer.finish()
    assert len(events) == 1 and events[0][2] == "process.start"
    assert events[0][4]["error"] == "unauthenticated: invalid username"


def test_large_output_frames_are_skipped_not_kept() -> None:
    frames = audit.Frames()
    big = envelope(b"x" * (audit.MAX_FRAME + 10))
    tail = jframe({"event": {"start": {"pid": 1}}})
    out: list[tuple[int, bytes]] = []
    data = big + tail
    for i in range(0, len(data), 4096):
        out += frames.feed(data[i:i + 4096])
        assert len(frames._buffer) <= audit.MAX_FRAME + 4096 + 5
    assert out == [(0, tail[5:])]


def test_file_write_counts_bytes_and_takes_paths_from_query_or_answer() -> None:
    events, sink = collect()
    observer = audit.observer_for(sink, audit.ENVD_PORT, "POST", "/files", b"path=%2Ftmp%2Fa.txt&username=user",
                                  [], "sbx", "t1")
    assert observer is not None
    for chunk in (b"a" * 1000, b"b" * 24):
        observer.request_chunk(chunk)
    observer.response_start(200)
    observer.response_chunk(b'[{"path": "/tmp/a.txt"}]')
    observer.finish()
    assert events[-1][2:] == ("file.write", "/tmp/a.txt", {"path": "/tmp/a.txt", "bytes": 1024, "user": "user"})
    multi = audit.observer_for(sink, audit.ENVD_PORT, "POST", "/files", b"", [], "sbx", "t1")
    assert multi is not None
    multi.response_start(200)
    multi.response_chunk(b'[{"path": "/x"}, {"path": "/y"}]')
    multi.finish()
    assert events[-1][4]["paths"] == ["/x", "/y"] and events[-1][3] == "/x"


def test_remove_and_move_in_json_and_binary() -> None:
    events, sink = collect()
    remove = audit.observer_for(sink, audit.ENVD_PORT, "POST", "/filesystem.Filesystem/Remove", b"",
                                [(b"content-type", b"application/json")], "sbx", "t1")
    assert remove is not None
    remove.request_chunk(b'{"path": "/tmp/gone"}')
    remove.response_start(200)
    remove.finish()
    move = audit.observer_for(sink, audit.ENVD_PORT, "POST", "/filesystem.Filesystem/Move", b"",
                              [(b"content-type", b"application/proto")], "sbx", "t1")
    assert move is not None
    move.request_chunk(fpb.MoveRequest(source="/a", destination="/b").to_binary())
    move.response_start(404)
    move.finish()
    assert events[0][2:4] == ("file.remove", "/tmp/gone")
    assert events[1][2] == "file.rename" and events[1][4]["destination"] == "/b" and events[1][4]["error"] == "HTTP 404"


def test_only_the_audited_envd_requests_are_observed_whatever_their_spelling() -> None:
    _, sink = collect()
    assert audit.observer_for(sink, 8080, "POST", "/files", b"", [], "s", "t") is None
    assert audit.observer_for(sink, audit.ENVD_PORT, "GET", "/files", b"", [], "s", "t") is None
    assert audit.observer_for(sink, audit.ENVD_PORT, "POST", "/process.Process/List", b"", [], "s", "t") is None
    assert audit.observer_for(None, audit.ENVD_PORT, "POST", "/files", b"", [], "s", "t") is None
    for path in ("/files/", "//files", "/./files", "/process.Process//Start"):
        assert audit.observer_for(sink, audit.ENVD_PORT, "POST", path, b"", [], "s", "t") is not None, path


def test_garbage_bodies_still_yield_an_event() -> None:
    events, sink = collect()
    observer = start_observer(sink)
    observer.request_chunk(b"\x00\x00\x00\x00\x05garbage")
    observer.response_start(400)
    observer.finish()
    assert events[0][2] == "process.start" and events[0][4]["error"] == "HTTP 400"
    assert audit.basic_user([(b"authorization", b"Basic !!!")]) is None


def test_the_recorder_writes_in_order_and_loses_nothing_on_close(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.migrate()

    async def scenario() -> None:
        log = AuditLog(store, flush_seconds=30)
        log.start()
        for i in range(1200):
            log.record("team-a", "sandbox.create", sandbox_id=f"s{i}", target=f"s{i}")
        log.record("team-b", "sandbox.kill", sandbox_id="s0", detail={"x": 1})
        await log.close()  # long before the 30 s flush: close writes everything

    asyncio.run(scenario())
    rows, token = store.list_audit_events("team-a", limit=1000)
    assert [r.target for r in rows] == [f"s{i}" for i in range(1000)] and token == str(rows[-1].id)
    more, token = store.list_audit_events("team-a", limit=1000, cursor=token)
    assert len(more) == 200 and token is None
    assert [r.action for r in store.list_audit_events("team-b")[0]] == ["sandbox.kill"]
    assert store.list_audit_events("team-b", sandbox_id="s1")[0] == []
    assert len(store.list_audit_events("team-a", action="sandbox.*", limit=5)[0]) == 5
    with pytest.raises(ValueError):
        store.list_audit_events("team-a", cursor="x1")
    store.close()


def test_disabled_recorder_records_nothing_and_pruning_drops_old_events(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.migrate()
    off = AuditLog(store, enabled=False)
    off.record("t", "sandbox.create")
    asyncio.run(off.close())
    assert store.list_audit_events("t")[0] == []
    old = datetime.now(UTC) - timedelta(days=8)
    store.add_audit_events([AuditEntry(time=old, team_id="t", action="a"),
                            AuditEntry(time=datetime.now(UTC), team_id="t", action="b")])
    assert asyncio.run(AuditLog(store, retention_days=7).prune()) == 1
    assert [r.action for r in store.list_audit_events("t")[0]] == ["b"]
    store.close()


def test_since_takes_spans_and_times() -> None:
    now = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    assert parse_since("10m", now) == "2026-12-07T02:50:00+00:00"
    assert parse_since("2026-12-07T01:00:00", now) == "2026-12-07T01:00:00+00:00"
    assert parse_since(None) is None
    with pytest.raises(Exception, match="neither"):
        parse_since("yesterday")


def connect_observer(sink: audit.Sink) -> audit.Observer:
    observer = audit.observer_for(sink, audit.ENVD_PORT, "POST", "/process.Process/Connect", b"", AUTH, "sbx", "t1")
    assert isinstance(observer, audit.ConnectObserver)
    return observer


def start_and_leave(sink: audit.Sink, pid: int, trailer: bool) -> None:
    """A background command's Start stream that closes after its start: the client went away (or, with
    `trailer`, the stream's deadline passed) while the process runs on."""
    observer = start_observer(sink)
    observer.request_chunk(jframe({"process": {"cmd": "/bin/sleep", "args": ["30"]}}))
    observer.response_start(200)
    observer.response_chunk(jframe({"event": {"start": {"pid": pid}}}))
    if trailer:
        observer.response_chunk(jframe({}, flags=2))
    observer.finish()


@pytest.mark.parametrize("trailer", [False, True])
def test_a_command_nobody_watches_to_its_end_is_recorded_as_detached(trailer: bool) -> None:
    events, sink = collect()
    start_and_leave(sink, pid=9001 + trailer, trailer=trailer)
    assert [e[2] for e in events] == ["process.start", "process.detach"]
    assert events[1][3] == "/bin/sleep" and events[1][4]["pid"] == 9001 + trailer


def test_the_end_of_a_detached_command_is_recorded_once_when_a_client_reconnects() -> None:
    events, sink = collect()
    start_and_leave(sink, pid=9100, trailer=False)
    for _ in range(2):  # the second Connect sees the same end again: recorded once
        observer = connect_observer(sink)
        observer.request_chunk(jframe({"process": {"pid": 9100}}))
        observer.response_start(200)
        observer.response_chunk(jframe({"event": {"start": {"pid": 9100}}})
                                + jframe({"event": {"end": {"exitCode": 3, "exited": True}}}) + jframe({}, flags=2))
        observer.finish()
    assert [e[2] for e in events] == ["process.start", "process.detach", "process.end"]
    end = events[2]
    assert end[3] == "/bin/sleep" and end[4]["exitCode"] == 3 and end[4]["reconnected"] is True


def test_a_connect_to_a_watched_command_records_nothing() -> None:
    events, sink = collect()
    observer = connect_observer(sink)
    observer.request_chunk(jframe({"process": {"pid": 9200}}))
    observer.response_start(200)
    observer.response_chunk(jframe({"event": {"start": {"pid": 9200}}})
                            + jframe({"event": {"end": {"exitCode": 0, "exited": True}}}))
    observer.finish()
    assert events == []
