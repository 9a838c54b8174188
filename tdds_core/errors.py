"""Exception types. Every message names the problem and the fix; the CLI prints them without a traceback."""
from __future__ import annotations


class TddsError(Exception):
    """Base class for errors a user can act on."""


class ConfigError(TddsError, ValueError):
    """An invalid config file, field or command-line override."""


class DataError(TddsError, ValueError):
    """A dataset that is missing, empty, corrupt or inconsistent."""


class ArtifactError(TddsError):
    """An artifact that is missing, incomplete, corrupt or belongs to another run."""


class ScoringError(TddsError, ValueError):
    """Invalid scoring input: shapes, NaN/Inf logits, bad window settings."""


class StorageError(TddsError):
    """The artifact store (local folder or S3) failed or is unreachable."""


class TrackingError(TddsError):
    """The MLflow tracking backend failed or is unreachable."""


class PipelineError(TddsError):
    """Compiling, running or submitting a KFP pipeline failed."""


class TrainingError(TddsError):
    """A training run that stopped: its processes failed (the run resumes from its last checkpoint)."""
