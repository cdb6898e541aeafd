"""One exception tree for anomalens.

::

    AnomalensError
    ├── InputError          (also a ValueError)  bad data or arguments: shape, dtype, NaN/inf, unknown names
    ├── NotFittedError      (also an AttributeError)  a fitted-only method used before ``fit``
    ├── CheckpointError     a saved model that is missing, corrupted, of another class or version
    ├── ConfigError         (also a ValueError)  invalid settings or hyper-parameters
    └── BackendError        an external service (LLM server, chroma server) failed

Third-party errors are translated once, at the boundary, with ``raise ... from exc``.
Messages name the parameter, what was expected and what was received; they never echo whole
rows or secrets.
"""

from __future__ import annotations

__all__ = [
    "AnomalensError",
    "InputError",
    "NotFittedError",
    "CheckpointError",
    "ConfigError",
    "BackendError",
]


class AnomalensError(Exception):
    """Base class of every error anomalens raises on purpose."""


class InputError(AnomalensError, ValueError):
    """The data or an argument is not what the method accepts."""


class NotFittedError(AnomalensError, AttributeError):
    """A method that needs a fitted model was called before ``fit``."""


class CheckpointError(AnomalensError):
    """A saved model cannot be loaded: missing, corrupted, another class or version."""


class ConfigError(AnomalensError, ValueError):
    """A hyper-parameter or setting is invalid."""


class BackendError(AnomalensError):
    """An external service (LLM server, vector-store server) failed or is unreachable."""
