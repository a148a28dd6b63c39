"""The one exception type the CLI turns into a single line on stderr."""


class UserError(Exception):
    """Bad input or a refused operation; the message is shown as is."""
