"""The project's own exception hierarchy.

Every error a user can cause or fix derives from :class:`PlatformError`. Its ``str()`` is the readable,
single-line-per-problem message the CLI prints (without a traceback) and Dagster shows; adapters translate the
exceptions of the libraries they wrap into these classes so callers never handle ``requests`` or ``kubernetes``
exceptions directly.
"""

from __future__ import annotations

from collections.abc import Sequence


def shorten(text: str, limit: int = 60) -> str:
    """``text`` quoted for an error line, cut to ``limit`` characters (a 100,000-character value stays one line)."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


class PlatformError(Exception):
    """Base of every error the platform reports to its users."""


class CatalogError(PlatformError):
    """The model catalog is unreadable or invalid; one entry in ``problems`` per problem found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class UnknownModelError(PlatformError):
    """A command named a model that the catalog does not contain."""

    def __init__(self, model: str, known: Sequence[str]) -> None:
        self.model = model
        choices = ", ".join(sorted(known)) or "none"
        super().__init__(f"model '{model}' is not in the catalog (known models: {choices})")


class ManifestValidationError(PlatformError):
    """A rendered Kubernetes object does not match its API schema; one entry per invalid field."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class WeightsError(PlatformError):
    """Downloading or verifying a model's weights failed."""


class HubNotFoundError(WeightsError):
    """The repository, or the revision in it, does not exist (or is private to this token)."""


class HubAccessError(WeightsError):
    """The hub refused access: a gated repository, no token, or a token without the right."""


class HubUnavailableError(WeightsError):
    """The hub could not be reached or kept failing (5xx) after the retries."""


class ChecksumMismatchError(WeightsError):
    """A downloaded file does not match the checksum the hub lists for it; the file has been removed."""


class InsufficientDiskError(WeightsError):
    """The model store has less free space than the download needs."""


class TargetError(PlatformError):
    """A serving target could not start, promote, stop or report a model."""


class BenchmarkError(PlatformError):
    """The benchmark could not run to the end."""


class KubernetesApiError(TargetError):
    """The Kubernetes API refused or failed a call; the message names the verb, the resource and what to do."""


class KubernetesAccessError(KubernetesApiError):
    """401/403: the credentials are wrong or the Role lacks a verb on a resource."""


class KubernetesNotServedError(KubernetesApiError):
    """The cluster does not serve a resource type the platform needs (e.g. KEDA's CRDs are not installed)."""


class KubernetesConflictError(KubernetesApiError):
    """409: another field manager owns a field we apply, or the object already exists."""


class KubernetesInvalidError(KubernetesApiError):
    """422: the API server rejected an object; the message lists the invalid fields."""


class KubernetesUnavailableError(KubernetesApiError):
    """The API server could not be reached or kept failing (5xx, timeouts) after the retries."""


class RolloutError(TargetError):
    """A promotion did not become ready; the message says why and what the model serves now."""


class JobFailedError(TargetError):
    """A Kubernetes Job (weights download, GPU benchmark) failed; the message carries its pod's reason."""
