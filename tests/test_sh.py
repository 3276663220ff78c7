"""The one subprocess wrapper: no shell, bounded time, errors that name the command."""
from __future__ import annotations

import pytest

from fastiov_lib import sh


def test_sh_passes_arguments_without_a_shell(tmp_path):
    weird = tmp_path / "a b; echo injected"
    weird.write_text("x")
    assert sh.output(["cat", weird]) == "x"


def test_sh_names_a_missing_command():
    with pytest.raises(sh.CommandError, match="no-such-tool-here: command not found"):
        sh.run(["no-such-tool-here"], what="probe")


def test_sh_names_the_failing_command_and_its_last_lines():
    with pytest.raises(sh.CommandError, match=r"probe: `sh -c 'echo oops >&2; exit 3'` exited 3: oops"):
        sh.run(["sh", "-c", "echo oops >&2; exit 3"], what="probe")


def test_sh_bounds_the_time_a_command_may_take():
    with pytest.raises(sh.CommandError, match="did not finish within 0 s"):
        sh.run(["sleep", "5"], timeout=0.2)


def test_sh_raises_the_callers_error_type():
    class MyError(RuntimeError):
        pass

    with pytest.raises(MyError):
        sh.run(["false"], error=MyError)
