"""What can go wrong in a training job, each with a message a user can act on."""

from __future__ import annotations


class TrainingError(Exception):
    """A training, promotion or retraining job could not do its work."""


class TrainingDataError(TrainingError, ValueError):
    """Too few dates, rows, labels or bad buyers to train or judge a model."""


class TrackingUnavailableError(TrainingError):
    """The MLflow tracking store cannot be reached or is not an allowed kind."""


class RegistryError(TrainingError):
    """The model registry is missing a model or alias the job needs."""


class JobLockedError(TrainingError):
    """Another retraining job holds the lock."""


class StoreRefreshError(TrainingError):
    """Serving's online store could not be refreshed (its settings, the log, the disk)."""
