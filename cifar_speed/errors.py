"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class CifarSpeedError(Exception):
    """A user-facing failure: bad input, missing data, a backend this machine cannot run.

    The message must be a single line that says what is wrong and, where possible, what to do.
    The CLI prints it as `cifar-speed: error: <message>` and exits with status 2.
    """


class UnavailableError(CifarSpeedError):
    """A backend / precision / device combination this machine cannot run (with the reason)."""
