"""The one exception type users see, and `guarded`, which turns it into one line for the CLI.

Every check of user input raises `UserError` with a single line that says what is wrong and
what to do. The CLI prints it as `error: ...` and exits 2, with no traceback.
"""


class UserError(Exception):
    """A problem with the user's input, explained in one line."""


def guarded(fn) -> int:
    """Run a command's fn; a UserError becomes one line on stderr and exit status 2, Ctrl-C 130."""
    import sys

    try:
        return fn() or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
