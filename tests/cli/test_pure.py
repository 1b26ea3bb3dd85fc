"""The CLI's small pure functions: no server needed."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import typer

from sandhive.cli.common import parse_pairs
from sandhive.cli.exec_cmd import command_line
from sandhive.cli.logs_cmd import new_lines
from sandhive.cli.network_cmd import egress
from sandhive.cli.output import size
from sandhive.cli.run_code_cmd import ResultPrinter, chart_note, error_text, free_path
from sandhive.sdk.code_models import Result


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


def test_run_code_saves_binary_results_and_prints_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    printer = ResultPrinter(tmp_path / "out", "plot")
    printer(Result(text="<Figure size 640x480 with 1 Axes>", png=png, chart={"type": "line", "title": "t",
                                                                               "elements": [{}]}))
    printer(Result(text="   a\n0  1", html="<table></table>", is_main_result=True))
    printer(Result(svg="<svg/>", pdf=base64.b64encode(b"%PDF-1.4").decode()))
    assert [p.name for p in printer.saved] == ["plot-1.png", "plot-1.pdf", "plot-1.svg"]
    assert (tmp_path / "out" / "plot-1.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "out" / "plot-1.pdf").read_bytes() == b"%PDF-1.4"
    assert free_path(tmp_path / "out", "plot", "png").name == "plot-2.png"
    out = capsys.readouterr().out
    assert out == "   a\n0  1\n"  # a figure's text is its repr: not printed, the file is the result


def test_run_code_says_what_it_could_not_save(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    printer = ResultPrinter(tmp_path / "file" / "out", "x")  # under a file: cannot be made
    printer(Result(png=base64.b64encode(b"png").decode(), chart={"type": "line", "title": "[red]t", "elements": []}))
    assert printer.saved == [] and "cannot save the PNG result" in printer.failed[0]
    err = capsys.readouterr().err
    assert "PNG not saved" in err and "'[red]t'" in err  # a title is text, not Rich markup


def test_run_code_errors_end_with_name_and_value() -> None:
    coloured = "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"
    assert error_text("ZeroDivisionError", "division by zero", f"Traceback\n{coloured}\n", colour=False) == (
        "Traceback\nZeroDivisionError: division by zero\n")
    assert error_text("E", "v", "", colour=False) == "E: v\n"
    assert error_text("E", "v", "tb line", colour=False) == "tb line\nE: v\n"
    assert chart_note({"type": "bar", "title": "Sales", "elements": [1, 2]}) == "a bar chart 'Sales' with 2 elements"
    assert chart_note({"type": "line", "elements": [1]}) == "a line chart with 1 element"


def test_egress_options_become_sdk_keys() -> None:
    assert egress(None, None) == {}
    assert egress(["1.2.3.4"], ["0.0.0.0/0", "10.0.0.0/8"]) == {"allow_out": ["1.2.3.4"],
                                                                "deny_out": ["0.0.0.0/0", "10.0.0.0/8"]}
