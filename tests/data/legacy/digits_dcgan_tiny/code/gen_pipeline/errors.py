"""The one exception type a user sees as a one-line message (the CLI prints it and exits 2)."""


class PipelineError(Exception):
    """A user-facing failure: the message names the file, column, row or field and what to do."""
