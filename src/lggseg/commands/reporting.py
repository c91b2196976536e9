"""Progress of ``lggseg predict``: a live bar on a terminal, plain lines anywhere else.

Off a terminal (a log file, a pipe, a CI job) nothing is redrawn: each finished input prints one
line as it finishes, ``[k/N] <case>: ...  (elapsed, ~left)``, flushed at once, so a log shows the
progress of a long job line by line, with no blank lines and no control characters. On a
terminal the same lines scroll above a one-line progress bar that disappears at the end.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from lggseg.pipeline.predict import CaseSummary, LineReporter, Reporter


def _out(message: str) -> None:
    typer.echo(message)
    sys.stdout.flush()


def _err(message: str) -> None:
    typer.echo(message, err=True)
    sys.stderr.flush()


class TerminalReporter(LineReporter):
    """:class:`LineReporter` lines printed above a transient Rich progress bar."""

    def __init__(self) -> None:
        from lggseg.io.progress import make_progress

        self.bar: Any = make_progress(transient=True)
        super().__init__(self._print, self._print)
        self.task: Any = None

    def _print(self, message: str) -> None:
        self.bar.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def start(self, total: int) -> None:
        super().start(total)
        self.bar.start()
        self.task = self.bar.add_task("predicting", total=total, info="")

    def done(self, case: CaseSummary) -> None:
        super().done(case)
        self.bar.update(self.task, advance=1, info=case.name)

    def failed(self, message: str) -> None:
        super().failed(message)
        self.bar.update(self.task, advance=1)

    def close(self) -> None:
        self.bar.stop()


def make_reporter(terminal: bool | None = None) -> Reporter:
    """A :class:`TerminalReporter` when stdout is a terminal, else plain lines (stdout; errors on stderr)."""
    if terminal is None:
        terminal = sys.stdout.isatty()
    return TerminalReporter() if terminal else LineReporter(_out, _err)
