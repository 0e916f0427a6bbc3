"""Errors a user can fix. The command line prints these as one message, no traceback."""


class ConfigError(ValueError):
    """A bad configuration value, unknown name or incompatible setting."""


class DataError(ValueError):
    """A missing, malformed or inconsistent data file."""


class ResourceError(OSError):
    """The machine cannot serve the run: a full disk, a missing device."""
