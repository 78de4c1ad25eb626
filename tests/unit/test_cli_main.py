"""The CLI's last line of defence: every outcome is one line and a documented status."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest

from dtqs.runtime import cli


@pytest.fixture
def raising() -> Iterator[None]:
    """A `dtqs boom KIND` command that raises what it is told, added for the test."""

    @cli.cli.command("boom")
    @click.argument("kind")
    def boom(kind: str) -> None:
        raise {"bug": KeyError("x"), "deep": RecursionError("maximum recursion depth"),
               "big": MemoryError(), "stop": KeyboardInterrupt()}[kind]  # fmt: skip

    yield
    del cli.cli.commands["boom"]


def test_an_unexpected_exception_is_one_line_and_exit_70(raising, capsys):
    assert cli.main(["boom", "bug"]) == 70
    err = capsys.readouterr().err
    assert err == "dtqs: internal error: KeyError: 'x' (run with -v for the traceback)\n"


def test_with_v_the_traceback_is_shown(raising, capsys):
    assert cli.main(["-v", "boom", "bug"]) == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError" in err


@pytest.mark.parametrize(("kind", "word"), [("deep", "nested too deeply"), ("big", "too large")])
def test_recursion_and_memory_errors_are_the_users_input(raising, capsys, kind, word):
    assert cli.main(["boom", kind]) == 2
    assert word in capsys.readouterr().err


def test_ctrl_c_before_anything_ran_is_130(raising, capsys):
    assert cli.main(["boom", "stop"]) == 130


def test_a_commands_own_exit_status_is_returned(capsys):
    @cli.cli.command("status-7")
    def seven() -> None:
        raise click.exceptions.Exit(7)

    try:
        # NOTE: click returns it from main(standalone_mode=False); it was dropped (exit 0).
        assert cli.main(["status-7"]) == 7
    finally:
        del cli.cli.commands["status-7"]
