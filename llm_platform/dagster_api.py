"""Adapter to a running Dagster webserver's GraphQL API: submit a promotion, follow a run to its end.

Uses ``dagster_graphql.DagsterGraphQLClient`` (the supported client) for submission and status; the run's step
events come from the same GraphQL endpoint (``logsForRun``), so ``llm-platform promote --wait`` can show progress.
Connection problems and GraphQL errors become :class:`DagsterApiError` with the URL and what to do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llm_platform.errors import PlatformError

if TYPE_CHECKING:
    from dagster_graphql import DagsterGraphQLClient

DEFAULT_URL = "http://127.0.0.1:3000"
LOCATION = "llm_platform"
PARTITION_TAG = "dagster/partition"
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}

_EVENTS_QUERY = """
query RunEvents($runId: ID!, $after: String) {
  logsForRun(runId: $runId, afterCursor: $after) {
    __typename
    ... on EventConnection {
      cursor
      events {
        __typename
        ... on MessageEvent { message stepKey level }
        ... on ExecutionStepFailureEvent { error { message } }
        ... on RunFailureEvent { message }
        ... on AssetCheckEvaluationEvent { evaluation { checkName success } }
      }
    }
    ... on PythonError { message }
  }
}
"""

#: Events worth a line in ``--wait``'s progress display.
_SHOWN = {
    "ExecutionStepStartEvent",
    "ExecutionStepSuccessEvent",
    "ExecutionStepFailureEvent",
    "MaterializationEvent",
    "AssetCheckEvaluationEvent",
    "RunStartEvent",
    "RunSuccessEvent",
    "RunFailureEvent",
}


#: Levels of the assets' own log lines (context.log) shown by ``--wait``.
_LOGGED_LEVELS = {"INFO", "WARNING", "ERROR", "CRITICAL"}


class DagsterApiError(PlatformError):
    """The Dagster webserver could not be reached, or refused a request."""


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str
    failures: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCESS"


#: How Dagster names the class of a deliberate failure (``dg.Failure``) in a step's error message.
_FAILURE_CLASS = "dagster._core.definitions.events.Failure: "


def _without_failure_class(message: str) -> str:
    """A step's error message as the user should read it: a ``Failure``'s description is the platform's own sentence
    (the class path says nothing); any other exception keeps its class, which is part of what went wrong."""
    return message.removeprefix(_FAILURE_CLASS)


def run_url(base_url: str, run_id: str) -> str:
    return f"{base_url.rstrip('/')}/runs/{run_id}"


class DagsterApi:
    """Submit and follow runs of the ``llm_platform`` code location."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from dagster_graphql import DagsterGraphQLClient  # imported here: it loads all of Dagster (~1 s)

        parts = urlsplit(base_url)
        if not parts.hostname:
            raise DagsterApiError(f"'{base_url}' is not a Dagster URL such as {DEFAULT_URL}")
        self.base_url = base_url.rstrip("/")
        self.client: DagsterGraphQLClient = DagsterGraphQLClient(
            parts.hostname,
            port_number=parts.port,
            use_https=parts.scheme == "https",
            path_prefix=parts.path.rstrip("/"),
            timeout=30,
        )
        self.sleep = sleep
        self.clock = clock

    def _unreachable(self, error: BaseException) -> DagsterApiError:
        return DagsterApiError(
            f"Dagster at {self.base_url} did not accept the request ({type(error).__name__}); is the webserver "
            "running (`make run` starts one, or `dagster dev -w workspace.yaml`)?"
        )

    def _graphql_error(self, error: Exception, what: str) -> DagsterApiError:
        """The client wraps transport failures (connection refused, timeouts) like answers; tell them apart."""
        cause = error.__cause__ or error.__context__
        if str(error).startswith("Exception occured during execution of query") and cause is not None:
            return self._unreachable(cause)
        return DagsterApiError(f"Dagster at {self.base_url} {what}: {str(error).strip().splitlines()[0]}")

    def submit(self, job: str, model: str, run_config: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        """Submit ``job`` for the ``model`` partition; returns the run id."""
        from dagster_graphql import DagsterGraphQLClientError

        try:
            return self.client.submit_job_execution(
                job,
                repository_location_name=LOCATION,
                run_config=dict(run_config),
                tags={**tags, PARTITION_TAG: model},
            )
        except DagsterGraphQLClientError as error:
            raise self._graphql_error(error, f"refused the {job} run for '{model}'") from None
        except Exception as error:  # requests/gql transport errors: connection refused, timeouts
            raise self._unreachable(error) from None

    def status(self, run_id: str) -> str:
        try:
            return self.client.get_run_status(run_id).value
        except Exception as error:
            raise self._unreachable(error) from None

    def events(self, run_id: str, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """The run's events after ``cursor`` and the new cursor."""
        from dagster_graphql import DagsterGraphQLClientError

        try:
            data = self.client._execute(_EVENTS_QUERY, {"runId": run_id, "after": cursor})
        except DagsterGraphQLClientError as error:
            first = str(error).strip().splitlines()[0]
            raise DagsterApiError(
                f"Dagster at {self.base_url} failed the events query of run {run_id}: {first}"
            ) from None
        except Exception as error:
            raise self._unreachable(error) from None
        logs = data["logsForRun"]
        if logs["__typename"] != "EventConnection":
            raise DagsterApiError(f"Dagster could not list the events of run {run_id}: {logs.get('message')}")
        return list(logs["events"]), logs["cursor"]

    def follow(
        self, run_id: str, log: Callable[[str], None] = print, poll_s: float = 2.0, timeout_s: float = 3 * 3600
    ) -> RunOutcome:
        """Print the run's step events as they happen until it finishes; returns its final status."""
        started = self.clock()
        cursor: str | None = None
        failures: list[str] = []
        checks: dict[str, bool] = {}
        while True:
            events, cursor = self.events(run_id, cursor)
            for event in events:
                kind = event["__typename"]
                if kind == "ExecutionStepFailureEvent" and event.get("error"):
                    failures.append(_without_failure_class(str(event["error"]["message"]).strip()))
                if kind == "AssetCheckEvaluationEvent":
                    evaluation = event["evaluation"]
                    checks[evaluation["checkName"]] = bool(evaluation["success"])
                    log(f"  check {evaluation['checkName']}: {'passed' if evaluation['success'] else 'FAILED'}")
                elif kind in _SHOWN or (kind == "LogMessageEvent" and event.get("level") in _LOGGED_LEVELS):
                    step = f"[{event['stepKey']}] " if event.get("stepKey") else ""
                    log(f"  {step}{str(event.get('message') or kind).splitlines()[0]}")
            status = self.status(run_id)
            if status in FINISHED:
                return RunOutcome(run_id, status, failures, checks)
            if self.clock() - started > timeout_s:
                raise DagsterApiError(f"run {run_id} still {status} after {timeout_s:.0f} s: {self.base_url}")
            self.sleep(poll_s)
