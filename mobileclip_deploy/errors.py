"""One exception type for everything a user can get wrong, so the CLI can print it without a traceback."""


class UserError(Exception):
    """Bad input from the user (unknown model, wrong checkpoint, refused option, missing device)."""
