"""Malformed input gets the documented error, and envd neither crashes nor leaks a process."""

from __future__ import annotations

import os
import struct

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import NotEnoughSpaceException


def test_bad_json_is_invalid_argument(envd) -> None:
    r = httpx.post(f"{envd.url}/filesystem.Filesystem/Stat", content=b"{not json",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument"


def test_wrong_content_type_is_415(envd) -> None:
    r = httpx.post(f"{envd.url}/filesystem.Filesystem/Stat", content=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


def test_bad_stream_envelope_ends_with_an_error(envd) -> None:
    body = struct.pack(">BI", 0, 50) + b"{}"  # declares 50 bytes, sends 2
    r = httpx.post(f"{envd.url}/process.Process/Start", content=body,
                   headers={"Content-Type": "application/connect+json"})
    assert r.status_code == 200 and b'"error"' in r.content


def test_unknown_rpc_is_404(envd) -> None:
    r = httpx.post(f"{envd.url}/process.Process/Nope", json={})
    assert r.status_code == 404


def test_unknown_user_on_files_is_401(envd) -> None:
    r = httpx.get(f"{envd.url}/files", params={"path": "/etc/hostname", "username": "ghost"})
    assert r.status_code == 401 and "invalid user" in r.json()["message"]


def test_upload_larger_than_free_space_is_507_and_leaves_nothing(envd, sbx: Sandbox) -> None:
    big = os.urandom(3 * 1024 * 1024)  # /small is a 2 MiB tmpfs
    with pytest.raises(NotEnoughSpaceException):
        sbx.files.write("/small/too-big.bin", big)
    # Without a Content-Length the limit is hit while writing: same answer, nothing left behind.
    r = httpx.post(f"{envd.url}/files", params={"path": "/small/chunked.bin"},
                   content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 507 and r.json() == {"code": 507, "message": "not enough disk space for the upload"}
    assert sbx.files.list("/small") == []


def test_broken_multipart_is_400_and_leaves_nothing(envd, sbx: Sandbox, workdir: str) -> None:
    body = (b"--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + workdir.encode()
            + b"/half.txt\"\r\n\r\nsome data without the closing boundary")
    r = httpx.post(f"{envd.url}/files", content=body, headers={"Content-Type": "multipart/form-data; boundary=XYZ"})
    assert r.status_code == 400 and "multipart" in r.json()["message"]
    r = httpx.post(f"{envd.url}/files", content=b"x", headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 400
    assert sbx.files.list(workdir) == []


def test_upload_over_a_directory_is_400(envd, workdir: str) -> None:
    r = httpx.post(f"{envd.url}/files", params={"path": workdir}, content=b"x",
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 400 and "directory" in r.json()["message"]


def test_bad_gzip_is_400(envd, workdir: str) -> None:
    r = httpx.post(f"{envd.url}/files", params={"path": f"{workdir}/g"}, content=b"not gzip",
                   headers={"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"})
    assert r.status_code == 400


def test_bad_metadata_is_400(envd, workdir: str) -> None:
    r = httpx.post(f"{envd.url}/files", params={"path": f"{workdir}/m"}, content=b"x",
                   headers={"Content-Type": "application/octet-stream", "X-Metadata-k": "v" * 5000})
    assert r.status_code == 400


def test_start_without_cmd_and_missing_binary(envd) -> None:
    from connectrpc.errors import ConnectError

    from sandhive.rpc.process import process_connect, process_pb

    client = process_connect.ProcessClientSync(envd.url)
    for config in (process_pb.ProcessConfig(), process_pb.ProcessConfig(cmd="/no/such/binary")):
        with pytest.raises(ConnectError) as info:
            list(client.start(process_pb.StartRequest(process=config)))
        assert info.value.code.value == "invalid_argument"


def test_nothing_leaked_and_still_healthy(envd, sbx: Sandbox) -> None:
    assert httpx.get(f"{envd.url}/health").status_code == 204
    assert envd.proc.poll() is None
    leftovers = [p for p in sbx.commands.list() if "sleep 30" not in " ".join(p.args)]
    assert leftovers == []
