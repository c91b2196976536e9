"""The one exception type for problems the user can fix (bad path, bad file, bad option)."""

import sys
from collections.abc import Callable
from typing import NoReturn


class LggsegError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with status 2."""


def run_script(main: Callable[[], int]) -> NoReturn:
    """Exit with ``main()``'s status; a :class:`LggsegError` becomes one ``error:`` line and status 2.

    For the research scripts in ``scripts/``, so that they treat bad input as the CLI does.
    """
    try:
        code = main()
    except LggsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)
