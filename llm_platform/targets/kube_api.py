"""Adapter to the Kubernetes API: server-side apply and the few reads the kubernetes target needs.

Built on the official ``kubernetes`` client's ``ApiClient`` (so kubeconfig, in-cluster tokens, TLS and proxies work
as everywhere else) with a static table of the resource types the platform manages, instead of discovery: the
set is small and fixed, and a missing type (KEDA not installed) is checked explicitly with one discovery call.

Every call maps the client's ``ApiException`` to the project's own errors with a message that names the verb and
the resource (the exact words a Role rule needs), and retries 429/5xx/connection failures with backoff where the
call is idempotent (reads, apply, delete). ``sleep`` is injected so that the retries are tested without waiting.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from llm_platform.errors import (
    KubernetesAccessError,
    KubernetesApiError,
    KubernetesConflictError,
    KubernetesInvalidError,
    KubernetesNotServedError,
    KubernetesUnavailableError,
)

Object = dict[str, Any]
T = TypeVar("T")

FIELD_MANAGER = "llm-platform"
CANARY_FIELD_MANAGER = "llm-platform-canary"
"""Owns a canary Deployment's heartbeat, owner and weight annotations (and nothing else)."""
USER_AGENT = "llm-platform"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
ROLE_NAME = "llm-platform-dagster"
"""The Role that grants the platform's service account its calls (shipped in ``k8s/base/rbac.yaml``)."""


@dataclass(frozen=True)
class ApiResource:
    """One resource type of the API: where its objects live and how a Role rule names it."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def rbac_name(self) -> str:
        """``deployments.apps`` - how ``kubectl auth can-i`` and RBAC errors name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        path = f"{root}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


_RESOURCES = (
    ApiResource("apps", "v1", "deployments", "Deployment"),
    ApiResource("", "v1", "services", "Service"),
    ApiResource("", "v1", "pods", "Pod"),
    ApiResource("", "v1", "events", "Event"),
    ApiResource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    ApiResource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    ApiResource("networking.k8s.io", "v1", "ingresses", "Ingress"),
    ApiResource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    ApiResource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject"),
    ApiResource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute"),
    ApiResource("batch", "v1", "jobs", "Job"),
)
RESOURCES: Mapping[tuple[str, str], ApiResource] = {(res.api_version, res.kind): res for res in _RESOURCES}
DEPLOYMENTS = RESOURCES["apps/v1", "Deployment"]
PODS = RESOURCES["v1", "Pod"]
EVENTS = RESOURCES["v1", "Event"]
JOBS = RESOURCES["batch/v1", "Job"]
INGRESSES = RESOURCES["networking.k8s.io/v1", "Ingress"]

#: What to tell the user when a resource type is missing from the cluster.
_INSTALL_HINTS = {
    "keda.sh": "KEDA is not installed in the cluster; install KEDA 2.x (its CRDs and operator) before promoting",
    "gateway.networking.k8s.io": "the Gateway API is not installed in the cluster; install its CRDs (v1.6, standard "
    "channel) and a Gateway implementation, or expose the model with exposure.kind: ingress",
}


def resource_of(obj: Mapping[str, Any]) -> ApiResource:
    """The resource type of a rendered object."""
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    try:
        return RESOURCES[key]
    except KeyError:
        raise KubernetesApiError(f"the platform does not manage {key[1]} ({key[0]}) objects") from None


def _status_body(error: ApiException) -> Mapping[str, Any]:
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _reason(error: ApiException) -> str:
    return f"{error.status} {error.reason}" if error.reason else str(error.status)


def map_api_error(
    error: ApiException, verb: str, resource: ApiResource, namespace: str, name: str | None = None
) -> KubernetesApiError:
    """The project's error for an ``ApiException``: one line naming what was attempted and what to do."""
    status = _status_body(error)
    message = str(status.get("message") or error.reason or "no message")
    target = f"{resource.kind} {namespace}/{name}" if name else f"{resource.rbac_name} in namespace {namespace}"
    if error.status == 401:
        return KubernetesAccessError(
            f"kubernetes rejected the credentials ({_reason(error)}) on {verb} {target}: check the kubeconfig "
            "context or the service-account token"
        )
    if error.status == 403:
        return KubernetesAccessError(
            f"kubernetes: not allowed to {verb} {resource.rbac_name} in namespace {namespace} ({_reason(error)}); "
            f"add the verb '{verb}' on '{resource.plural}' (apiGroup '{resource.group}') to the Role "
            f"{ROLE_NAME}: {message}"
        )
    if error.status == 404:
        return KubernetesNotServedError(
            f"kubernetes does not serve {resource.kind} ({resource.api_version}) on {verb} {target}: "
            + _INSTALL_HINTS.get(resource.group, "install the API that provides it")
        )
    if error.status == 409:
        return KubernetesConflictError(
            f"kubernetes: conflict on {verb} {target}: {message}; another field manager changed fields that "
            "llm-platform owns - change them in the catalog instead, or apply with force_conflicts"
        )
    if error.status == 422:
        causes = status.get("details", {}).get("causes") or []
        fields = "; ".join(f"{cause.get('field', '?')}: {cause.get('message', '')}" for cause in causes)
        return KubernetesInvalidError(f"kubernetes rejected {target} as invalid: {fields or message}")
    return KubernetesUnavailableError(f"kubernetes API failed {verb} {target} ({_reason(error)}): {message}")


class KubeApi:
    """The calls the kubernetes target makes, with retries and the project's errors."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        retries: int = 4,
        backoff_s: float = 0.5,
        request_timeout_s: float = 30.0,
        force_conflicts: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_client = api_client
        self.api_client.user_agent = USER_AGENT
        self.retries = retries
        self.backoff_s = backoff_s
        self.request_timeout_s = request_timeout_s
        self.force_conflicts = force_conflicts
        self.sleep = sleep

    @classmethod
    def from_kubeconfig(cls, context: str | None = None, **kwargs: Any) -> KubeApi:
        """In-cluster credentials when running in a pod, else the kubeconfig (``$KUBECONFIG``)."""
        configuration = k8s_client.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            try:
                # $KUBECONFIG read now: the client reads it once, at import.
                k8s_config.load_kube_config(
                    config_file=os.environ.get("KUBECONFIG"), context=context, client_configuration=configuration
                )
            except (k8s_config.ConfigException, OSError) as error:
                raise KubernetesAccessError(f"kubernetes: no usable kubeconfig or in-cluster config: {error}") from None
        return cls(k8s_client.ApiClient(configuration), **kwargs)

    def batch_api(self) -> k8s_client.BatchV1Api:
        return k8s_client.BatchV1Api(self.api_client)

    def core_api(self) -> k8s_client.CoreV1Api:
        return k8s_client.CoreV1Api(self.api_client)

    # -- retries and error mapping -------------------------------------------------------------------------------

    def call(
        self,
        verb: str,
        resource: ApiResource,
        namespace: str,
        name: str | None,
        request: Callable[[], T],
        *,
        idempotent: bool = True,
    ) -> T:
        """Run one API request: transient failures retried (idempotent calls only), errors mapped."""
        attempts = 1 + (self.retries if idempotent else 0)
        for attempt in range(1, attempts + 1):
            try:
                return request()
            except ApiException as error:
                if error.status not in TRANSIENT_STATUSES or attempt == attempts:
                    mapped = map_api_error(error, verb, resource, namespace, name)
                    if error.status in TRANSIENT_STATUSES and attempts > 1:
                        mapped = KubernetesUnavailableError(f"{mapped} (after {attempts} attempts)")
                    raise mapped from None
            except (urllib3.exceptions.HTTPError, OSError) as error:
                if attempt == attempts:
                    raise KubernetesUnavailableError(
                        f"kubernetes API unreachable on {verb} {resource.rbac_name} in namespace {namespace} "
                        f"after {attempts} attempts: {type(error).__name__}; check the cluster address and network"
                    ) from None
            self.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: object = None,
        content_type: str = "application/json",
        raw: bool = False,
    ) -> Any:
        response = self.api_client.call_api(
            path,
            method,
            query_params=list(query),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            response_types_map={200: "object", 201: "object", 202: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=not raw,
            _request_timeout=self.request_timeout_s,
        )
        if raw:
            return response.data.decode("utf-8", errors="replace")
        return response

    # -- the calls --------------------------------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any], field_manager: str = FIELD_MANAGER) -> Object:
        """Server-side apply (field manager ``llm-platform``): creates or updates, idempotent. Another manager owns
        only the fields it applies: a canary's heartbeat annotations are applied that way, since applying them as
        ``llm-platform`` without the rest of the object would remove the fields that manager owns."""
        resource = resource_of(obj)
        meta = obj["metadata"]
        query = [("fieldManager", field_manager)]
        if self.force_conflicts:
            query.append(("force", "true"))
        path = resource.path(meta["namespace"], meta["name"])
        return self.call(
            "patch",
            resource,
            meta["namespace"],
            meta["name"],
            lambda: self._request("PATCH", path, query=query, body=dict(obj), content_type=APPLY_CONTENT_TYPE),
        )

    def get(self, resource: ApiResource, namespace: str, name: str) -> Object | None:
        """The object, or None when it does not exist."""

        def request() -> Object | None:
            try:
                return dict(self._request("GET", resource.path(namespace, name)))
            except ApiException as error:
                if error.status == 404 and _status_body(error).get("details", {}).get("name") == name:
                    return None
                raise

        return self.call("get", resource, namespace, name, request)

    def list(
        self,
        resource: ApiResource,
        namespace: str,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Object]:
        query = [("labelSelector", label_selector)] if label_selector else []
        if field_selector:
            query.append(("fieldSelector", field_selector))
        result = self.call(
            "list", resource, namespace, None, lambda: self._request("GET", resource.path(namespace), query=query)
        )
        return list(result.get("items") or [])

    def delete(self, resource: ApiResource, namespace: str, name: str) -> bool:
        """Delete with background propagation (a Job's pods, a Deployment's ReplicaSets follow). False if absent."""

        def request() -> bool:
            try:
                self._request(
                    "DELETE",
                    resource.path(namespace, name),
                    body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
                )
            except ApiException as error:
                if error.status == 404:
                    return False
                raise
            return True

        return self.call("delete", resource, namespace, name, request)

    def read_log(self, namespace: str, pod: str, container: str | None = None, tail_lines: int | None = None) -> str:
        query = [("container", container)] if container else []
        if tail_lines is not None:
            query.append(("tailLines", str(tail_lines)))
        path = PODS.path(namespace, pod, "log")
        return str(self.call("get", PODS, namespace, pod, lambda: self._request("GET", path, query=query, raw=True)))

    def serves(self, resource: ApiResource) -> bool:
        """Whether the cluster serves ``resource`` (discovery, which every authenticated user may read)."""
        root = f"/apis/{resource.group}/{resource.version}" if resource.group else f"/api/{resource.version}"

        def request() -> bool:
            try:
                listing = self._request("GET", root)
            except ApiException as error:
                if error.status == 404:
                    return False
                raise
            return any(item.get("name") == resource.plural for item in listing.get("resources") or [])

        return self.call("get", resource, "(discovery)", None, request)
