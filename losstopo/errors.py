"""Errors a researcher is meant to read: the CLI prints them as one line, without a traceback."""


class LosstopoError(Exception):
    """Base of every error that names a cause the user can fix."""


class ConfigError(LosstopoError):
    pass


class DataError(LosstopoError):
    pass


class TrainingDiverged(LosstopoError):
    pass
