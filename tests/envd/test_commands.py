"""commands.* through the released e2b SDK against envd."""

from __future__ import annotations

import time

import pytest
from e2b import CommandExitException, Sandbox
from e2b.exceptions import AuthenticationException, InvalidArgumentException

from .conftest import USER_UID


def test_run_stdout_stderr_exit_code(sbx: Sandbox) -> None:
    result = sbx.commands.run("echo out; echo err >&2")
    assert (result.stdout, result.stderr, result.exit_code, result.error) == ("out\n", "err\n", 0, None)


def test_nonzero_exit_raises_with_output(sbx: Sandbox) -> None:
    with pytest.raises(CommandExitException) as info:
        sbx.commands.run("echo partial; echo broken >&2; exit 7")
    assert info.value.exit_code == 7
    assert info.value.stdout == "partial\n"
    assert info.value.stderr == "broken\n"
    assert info.value.error == "exit status 7"


def test_env_layering(sbx: Sandbox) -> None:
    out = sbx.commands.run('echo "$E2B_SANDBOX|$GREETING|$HOME|$USER"', envs={"GREETING": "hello"}).stdout
    assert out == "true|hello|/root|root\n"


def test_cwd_and_user(sbx: Sandbox, workdir: str) -> None:
    assert sbx.commands.run("pwd", cwd=workdir).stdout == f"{workdir}\n"
    result = sbx.commands.run("id -u; whoami; echo $HOME; pwd", user="user")
    assert result.stdout.split() == [str(USER_UID), "user", "/home/user", "/home/user"]


def test_files_written_by_a_user_belong_to_it(sbx: Sandbox, workdir: str) -> None:
    sbx.commands.run(f"touch {workdir}/mine", user="user")
    assert sbx.files.get_info(f"{workdir}/mine").owner == "user"


def test_unknown_user_is_an_authentication_error(sbx: Sandbox) -> None:
    with pytest.raises(AuthenticationException, match="invalid username"):
        sbx.commands.run("true", user="nobody-here")  # type: ignore[arg-type]


def test_missing_cwd_is_invalid_argument(sbx: Sandbox) -> None:
    with pytest.raises(InvalidArgumentException, match="does not exist"):
        sbx.commands.run("true", cwd="/no/such/dir")


def test_large_output_arrives_whole(sbx: Sandbox) -> None:
    result = sbx.commands.run("head -c 3000000 /dev/zero | tr '\\0' x")
    assert len(result.stdout) == 3_000_000 and set(result.stdout) == {"x"}


def test_callbacks_stream_incrementally(sbx: Sandbox) -> None:
    seen: list[tuple[float, str]] = []
    sbx.commands.run("echo one; sleep 0.6; echo two", on_stdout=lambda line: seen.append((time.monotonic(), line)))
    assert [line for _, line in seen] == ["one\n", "two\n"]
    # The first line came as it was printed, not with the second at the end: they arrived the sleep apart
    # (measured between the two lines, so a slow start on a loaded host does not matter).
    assert seen[1][0] - seen[0][0] > 0.4


def test_background_list_connect_kill(sbx: Sandbox) -> None:
    handle = sbx.commands.run("echo started; sleep 60", background=True)
    assert handle.pid in [p.pid for p in sbx.commands.list()]
    info = next(p for p in sbx.commands.list() if p.pid == handle.pid)
    assert info.cmd == "/bin/bash" and info.args[-1] == "echo started; sleep 60"
    handle.disconnect()
    again = sbx.commands.connect(handle.pid)
    assert sbx.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException) as info2:
        again.wait()
    assert info2.value.error == "signal: killed"
    assert handle.pid not in [p.pid for p in sbx.commands.list()]
    assert sbx.commands.kill(handle.pid) is False


def test_output_produced_while_disconnected_is_delivered_on_reconnect(sbx: Sandbox) -> None:
    handle = sbx.commands.run("sleep 0.3; for i in 1 2 3; do echo line$i; sleep 0.2; done; sleep 2", background=True)
    handle.disconnect()
    time.sleep(1.0)
    result = sbx.commands.connect(handle.pid).wait()
    assert result.stdout == "line1\nline2\nline3\n"


def test_send_stdin_and_close_stdin(sbx: Sandbox) -> None:
    handle = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(handle.pid, "hello ")
    sbx.commands.send_stdin(handle.pid, b"world\n")
    sbx.commands.close_stdin(handle.pid)
    result = handle.wait()
    assert result.stdout == "hello world\n" and result.exit_code == 0


def test_stdin_off_reads_eof(sbx: Sandbox) -> None:
    assert sbx.commands.run("cat; echo done").stdout == "done\n"


def test_tagged_process_reattaches_by_tag(envd) -> None:
    """Start with a tag, reattach and kill by that tag, through Sandhive's own generated client."""
    from protobuf import Oneof

    from sandhive.rpc.process import process_connect, process_pb

    client = process_connect.ProcessClientSync(envd.url)
    config = process_pb.ProcessConfig(cmd="/bin/sh", args=["-c", "echo tagged; sleep 30"])
    started = iter(client.start(process_pb.StartRequest(process=config, tag="my-tag", stdin=False)))
    pid = next(started).event.event.value.pid
    listed = client.list(process_pb.ListRequest()).processes
    assert any(p.pid == pid and p.tag == "my-tag" for p in listed)
    selector = process_pb.ProcessSelector(selector=Oneof("tag", "my-tag"))
    attached = iter(client.connect(process_pb.ConnectRequest(process=selector)))
    assert next(attached).event.event.value.pid == pid
    client.send_signal(process_pb.SendSignalRequest(process=selector, signal=process_pb.Signal.SIGKILL))
    fields = [message.event.event.field for message in attached]
    assert fields[-1] == "end"
    ending = [m.event.event.value for m in started][-1]
    assert (ending.exit_code, ending.exited, ending.status) == (-1, False, "signal: killed")
