"""The exceptions fakedet raises; the CLI alone turns them into messages and exit codes."""


class FakedetError(Exception):
    """Base of every error fakedet reports to a user: one sentence naming the value and the fix."""

    exit_code = 1


class UsageError(FakedetError):
    """Bad input from the user (a path, a flag, a file): exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration value out of range, an unknown key or an unreadable config file."""


class DataError(UsageError):
    """A dataset that cannot be used: missing, empty, a class missing, bad CSV rows."""


class CheckpointError(UsageError):
    """A file that is not a usable fakedet checkpoint."""


class TrainingError(FakedetError):
    """A failure while training (non-finite losses, out of memory, disk full): exit code 1."""


class WriteError(FakedetError):
    """A file could not be written (disk full, size limit, permissions): exit code 1."""


class OutputPathError(UsageError):
    """An output path that cannot be written: a file where a folder is due, no permission: exit 2."""
