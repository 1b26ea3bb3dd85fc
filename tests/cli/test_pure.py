"""The CLI's small pure functions: no server needed."""

from __future__ import annotations

import pytest
import typer

from sandhive.cli.common import parse_pairs
from sandhive.cli.exec_cmd import command_line
from sandhive.cli.logs_cmd import new_lines
from sandhive.cli.output import size


def test_new_lines_while_the_log_fits_the_window() -> None:
    assert new_lines([], ["a", "b"]) == ["a", "b"]
    assert new_lines(["a", "b"], ["a", "b", "c"]) == ["c"]
    assert new_lines(["a", "b"], ["a", "b"]) == []


def test_new_lines_once_the_window_slides() -> None:
    assert new_lines(["a", "b", "c"], ["b", "c", "d"]) == ["d"]
    assert new_lines(["a", "b", "c"], ["c", "d", "e"]) == ["d", "e"]
    assert new_lines(["a", "b", "c"], ["x", "y", "z"]) == ["x", "y", "z"]  # nothing in common: all of it is new
    assert new_lines(["x", "x", "y"], ["x", "y", "x", "y"]) == ["x", "y"]  # repeats: the longest overlap wins
    assert new_lines(["a"], []) == []  # a killed sandbox's logs read as empty


def test_command_line() -> None:
    assert command_line(["echo $HOME; exit 7"]) == "echo $HOME; exit 7"  # one argument: a shell command line
    assert command_line(["ls", "-l", "my file"]) == "ls -l 'my file'"  # several: an argv


def test_parse_pairs() -> None:
    assert parse_pairs(["a=1", "b=x=y", "c="], "--metadata") == {"a": "1", "b": "x=y", "c": ""}
    for bad in ("novalue", "=1"):
        with pytest.raises(typer.BadParameter):
            parse_pairs([bad], "--metadata")


def test_size() -> None:
    assert [size(n) for n in (0, 1023, 1024, 512 * 2**20, 1.5 * 2**30, None)] == [
        "0 B", "1023 B", "1 KiB", "512 MiB", "1.5 GiB", "-"]
