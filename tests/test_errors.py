"""``lggseg.errors.run_script``: the research scripts treat bad input as the CLI does."""

from __future__ import annotations

import pytest

from lggseg.errors import LggsegError, run_script


def test_a_user_error_is_one_line_and_status_2(capsys):
    def main() -> int:
        raise LggsegError("docs/x/fold_2/test/per_patient.csv is missing")

    with pytest.raises(SystemExit) as exit_info:
        run_script(main)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: docs/x/fold_2/test/per_patient.csv is missing\n"


def test_main_status_passes_through(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_script(lambda: 3)
    assert exit_info.value.code == 3 and capsys.readouterr().err == ""


def test_other_exceptions_are_not_hidden():
    def main() -> int:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        run_script(main)
