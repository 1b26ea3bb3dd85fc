"""The SDK as a package, without a server: lazy top-level exports, configuration, signatures, decoding."""

from __future__ import annotations

import subprocess
import sys

import pytest
from protobuf import Oneof

from sandhive.rpc.process import process_pb as pb
from sandhive.sdk import signing
from sandhive.sdk.config import DEFAULT_API_URL, ConnectionConfig
from sandhive.sdk.exceptions import InvalidArgumentException
from sandhive.sdk.output import CommandOutput


def imported_after(code: str) -> set[str]:
    """Which of sandhive.sdk, httpx and pyqwest a fresh interpreter has imported after running `code`."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in ('sandhive.sdk', 'httpx', 'pyqwest') if m in sys.modules))"
    return set(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
               .stdout.split())


def test_importing_sandhive_or_envd_does_not_import_the_sdk() -> None:
    """The sandboxes' system image ships only sandhive/__init__.py, envd and rpc."""
    assert imported_after("import sandhive") == set()
    assert "sandhive.sdk" not in imported_after("import sandhive.envd")
    assert "sandhive.sdk" in imported_after("from sandhive import Sandbox")


def test_top_level_exports_are_the_sdks() -> None:
    import sandhive
    import sandhive.sdk

    assert set(sandhive.__all__) == {"__version__", *sandhive.sdk.__all__}
    assert sandhive.Sandbox is sandhive.sdk.Sandbox and sandhive.AsyncSandbox is sandhive.sdk.AsyncSandbox
    assert sandhive.__version__
    with pytest.raises(AttributeError):
        sandhive.NoSuchThing  # noqa: B018
    assert "Sandbox" in dir(sandhive)


def test_config_precedence() -> None:
    env = {"SANDHIVE_API_URL": "http://own:1", "SANDHIVE_API_KEY": "own-key", "E2B_API_URL": "http://e2b:2",
           "E2B_SANDBOX_URL": "http://e2b-sbx:3", "E2B_API_KEY": "e2b-key"}
    own = ConnectionConfig.resolve(env=env)
    assert (own.api_url, own.sandbox_url, own.api_key) == ("http://own:1", "http://own:1", "own-key")
    e2b = ConnectionConfig.resolve(env={k: v for k, v in env.items() if k.startswith("E2B_")})
    assert (e2b.api_url, e2b.sandbox_url, e2b.api_key) == ("http://e2b:2", "http://e2b-sbx:3", "e2b-key")
    only_sandbox_url = ConnectionConfig.resolve(env={"E2B_SANDBOX_URL": "http://one:4/"})
    assert only_sandbox_url.api_url == only_sandbox_url.sandbox_url == "http://one:4"
    explicit = ConnectionConfig.resolve(api_url="http://kw:5", api_key="kw", request_timeout=0, env=env)
    assert (explicit.api_url, explicit.sandbox_url, explicit.api_key) == ("http://kw:5", "http://kw:5", "kw")
    assert explicit.request_timeout is None  # 0 means no limit
    default = ConnectionConfig.resolve(env={})
    assert default.api_url == DEFAULT_API_URL and default.api_key is None and default.request_timeout == 60
    assert default.host_domain() == "localhost:3000"
    with pytest.raises(InvalidArgumentException, match="not an http"):
        ConnectionConfig.resolve(api_url="ftp://x", env={})


def test_signatures_match_e2bs() -> None:
    """The released e2b SDK computes the same v1_ signatures (it is a test dependency)."""
    from e2b.sandbox.signature import get_signature

    for operation in ("read", "write"):
        for user in (None, "root"):
            for expires_in in (None, 100):
                theirs = get_signature("/tmp/a b.txt", operation, user, "token123", expires_in)
                ours = signing.signature("/tmp/a b.txt", operation, user, "token123", theirs["expiration"])
                assert ours == theirs["signature"]


def _data(stream: str, data: bytes) -> pb.ProcessEvent:
    return pb.ProcessEvent(event=Oneof("data", pb.ProcessEvent.DataEvent(output=Oneof(stream, data))))


def test_output_decodes_across_events_and_replaces_invalid_bytes() -> None:
    output = CommandOutput(1, "command 'x'")
    chunks = output.feed(_data("stdout", b"caf\xc3")) + output.feed(_data("stdout", b"\xa9!"))
    chunks += output.feed(_data("stderr", b"\xff"))
    chunks += output.feed(pb.ProcessEvent(event=Oneof("end", pb.ProcessEvent.EndEvent(exit_code=0, exited=True))))
    assert output.stdout == "café!" and output.stderr == "\ufffd" and output.exit_code == 0
    assert [c for c in chunks if c[0]] == [("caf", None, None), ("é!", None, None)]
    assert output.result().stdout == "café!"
