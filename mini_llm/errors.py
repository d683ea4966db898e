"""The one exception type users see.

Every check of user input raises `UserError` with a single line that says what is wrong and
what to do. The CLI prints it as `error: ...` and exits 2, with no traceback.
"""


class UserError(Exception):
    """A problem with the user's input, explained in one line."""
