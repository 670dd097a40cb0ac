"""User-facing errors.

Everything a user can cause (bad data, a wrong spec, a missing backend, a tampered bundle) raises a
``GanrtError`` subclass whose message says what was wrong, what was expected and what to do. The CLI
prints such an error as one line and exits with status 2; anything else is a bug and keeps its traceback.
"""


class GanrtError(Exception):
    """Base class of every error ganrt raises for a user to read."""


class SpecError(GanrtError):
    """A GeneratorSpec (or a generator's behaviour) does not match what it should be."""


class DataError(GanrtError):
    """A dataset cannot be read or does not have the expected shape or labels."""


class CheckpointError(GanrtError):
    """A checkpoint file is missing, corrupt, foreign or of an unsupported version."""


class SnapshotError(CheckpointError):
    """Another tool's generator file (an NVlabs pickle) cannot be read safely, or its network is not supported."""


class BundleError(GanrtError):
    """A bundle is missing, incomplete, tampered with or of an unsupported version."""


class ExportError(GanrtError):
    """A generator could not be exported to ONNX or an engine."""


class ParityError(ExportError):
    """An exported variant does not match the torch reference within its tolerance."""


class BackendUnavailable(GanrtError):
    """A requested backend, device or precision is not available on this machine."""


class BackendError(GanrtError):
    """A backend failed while running a valid request (the library's own message kept); a server answers 500."""


class InputError(GanrtError):
    """Inputs to a generator (latents, labels, truncation, batch) are invalid."""


class ConfigError(GanrtError):
    """An option or combination of options is invalid."""


class MetricError(GanrtError):
    """A metric cannot be computed from the given inputs (too few samples, missing weights...)."""


class LaunchError(GanrtError):
    """Processes started by the multi-process launcher (torchrun) failed."""
