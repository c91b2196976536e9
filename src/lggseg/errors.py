"""The one exception type for problems the user can fix (bad path, bad file, bad option)."""


class LggsegError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with status 2."""
