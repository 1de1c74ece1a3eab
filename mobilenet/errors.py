"""The package's error type for bad user input: the CLI prints its message as one line and exits with status 2."""


class MobileNetError(ValueError):
    """A user mistake or a bad input file, with a message that says what was wrong and what is accepted."""
