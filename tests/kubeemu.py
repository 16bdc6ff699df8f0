"""A Kubernetes API over real HTTP for the kubernetes target's tests: kmock's emulator with the gaps filled.

kmock (``KubernetesEmulator``) gives the HTTP server, URL parsing, discovery and Status errors. This subclass
fills what our target relies on and kmock leaves out (see ../shared/DESIGN.md): server-side apply that creates a
missing object and replaces the applier's fields, ``metadata.generation`` bumped on spec changes,
``resourceVersion``, label and field selectors on lists, 404s that say whether the object or the resource type is
missing, pod logs, injected faults, and a record of every call our client made (verb + resource, for the RBAC
check).

No controllers run in the emulator: :class:`FakeDeploymentController` and :class:`FakeKubelet` play the Deployment
controller, the Job controller and the kubelet by writing objects and ``status`` through the same HTTP API, in a
thread, following a scenario the test chooses. The kubelet really runs the download Job's container command (the
platform image is this checkout) with the PVC mounted as a host directory.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import aiohttp.web
import attrs
import kmock
from kmock._internal import rendering
from kubernetes import client as k8s_client

from llm_platform.targets.kube_api import RESOURCES, USER_AGENT, ApiResource, KubeApi

Object = dict[str, Any]
SECRETS = ApiResource("", "v1", "secrets", "Secret")
SERVED = (*RESOURCES.values(), SECRETS)
KEDA = RESOURCES["keda.sh/v1alpha1", "ScaledObject"]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Call:
    """One request of our client, as an RBAC rule names it."""

    verb: str
    group: str
    resource: str  # plural, or plural/subresource
    namespace: str | None


@dataclass
class Fault:
    """Answer the next ``times`` matching requests with an error instead of serving them."""

    verb: str
    resource: str
    status: int
    message: str = "injected"
    reason: str = "Injected"
    times: int = 1
    causes: list[dict[str, str]] = field(default_factory=list)


def _verb(method: str, name: str | None, params: Mapping[str, str]) -> str:
    if method == "GET":
        if params.get("watch") == "true":
            return "watch"
        return "get" if name else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete" if name else "deletecollection"}[
        method
    ]


def _merge(base: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386)."""
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return copy.deepcopy(patch)
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge(base.get(key), value)
    return merged


def _dig(obj: Mapping[str, Any], dotted: str) -> Any:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _selected(obj: Mapping[str, Any], label_selector: str | None, field_selector: str | None) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, (label_selector or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value:
                return False
        elif term not in labels:
            return False
    for term in filter(None, (field_selector or "").split(",")):
        key, value = term.split("=", 1)
        if str(_dig(obj, key.rstrip("="))) != value:
            return False
    return True


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus apply, generations, selectors, logs, faults and a call log (see the module doc)."""

    served: set[tuple[str, str]] = attrs.field(factory=lambda: {(r.group, r.plural) for r in SERVED})
    faults: list[Fault] = attrs.field(factory=list)
    calls: list[Call] = attrs.field(factory=list)
    pod_logs: dict[tuple[str, str], str] = attrs.field(factory=dict)
    store: dict[tuple[str, str, str, str], Object] = attrs.field(factory=dict)
    #: What each field manager last applied to each object: server-side apply's ownership, roughly (the object is the
    #: merge of every manager's applied configuration, so a manager applying a few fields leaves the others' alone).
    managed: dict[tuple[str, str, str, str], dict[str, Object]] = attrs.field(factory=dict)
    guard: threading.Lock = attrs.field(factory=threading.Lock)
    version: int = 0

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for resource in SERVED:
            self.declare(resource)

    def declare(self, resource: ApiResource) -> None:
        key = f"{resource.api_version}/{resource.plural}" if resource.group else f"v1/{resource.plural}"
        self.resources[key] = kmock.ResourceInfo(kind=resource.kind, namespaced=True, verbs={"get", "list", "patch"})
        self.served.add((resource.group, resource.plural))

    def undeclare(self, resource: ApiResource) -> None:
        """The cluster stops serving ``resource`` (a CRD that is not installed)."""
        key = f"{resource.api_version}/{resource.plural}"
        del self.resources[key]
        self.served.discard((resource.group, resource.plural))

    # -- thread-safe views for assertions -------------------------------------------------------------------------

    def stored(self, resource: ApiResource, namespace: str | None = None) -> dict[str, Object]:
        with self.guard:
            return {
                name: copy.deepcopy(obj)
                for (group, plural, ns, name), obj in self.store.items()
                if (group, plural) == (resource.group, resource.plural) and namespace in (None, ns)
            }

    def our_calls(self) -> list[Call]:
        with self.guard:
            return list(self.calls)

    # -- the HTTP side ---------------------------------------------------------------------------------------------

    @staticmethod
    def _status(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> aiohttp.web.Response:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": code}
        body.update(reason=reason, message=message, details=dict(details or {}))
        return aiohttp.web.json_response(body, status=code)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        resource = request.resource
        if resource is None or resource.plural is None or request.action == kmock.action.WATCH:
            return await super()._handle(request)  # discovery, non-API paths, watches
        method = str(request.method.value if hasattr(request.method, "value") else request.method)
        verb = _verb(method, request.name, request.params)
        group = resource.group or ""
        plural = resource.plural + (f"/{request.subresource}" if request.subresource else "")
        with self.guard:
            if request.headers.get("User-Agent", "").startswith(USER_AGENT):
                self.calls.append(Call(verb, group, plural, request.namespace))
            for fault in self.faults:
                if fault.times > 0 and fault.verb == verb and fault.resource == plural:
                    fault.times -= 1
                    details = {"causes": fault.causes} if fault.causes else {}
                    return self._status(fault.status, fault.reason, fault.message, details)
            if (group, resource.plural) not in self.served:
                return self._status(404, "NotFound", "the server could not find the requested resource")
            ns = request.namespace or ""
            if request.subresource == "log":
                text = self.pod_logs.get((ns, request.name or ""), "")
                return aiohttp.web.Response(text=text, content_type="text/plain")
            if verb == "list":
                items = [
                    copy.deepcopy(obj)
                    for (g, p, n, _), obj in sorted(self.store.items())
                    if (g, p) == (group, resource.plural)
                    and n == ns
                    and _selected(obj, request.params.get("labelSelector"), request.params.get("fieldSelector"))
                ]
                metadata = {"resourceVersion": str(self.version)}
                listing = {"kind": "List", "apiVersion": "v1", "metadata": metadata, "items": items}
                return aiohttp.web.json_response(listing)
            if verb == "create":
                return self._create(group, resource.plural, ns, request.data)
            key = (group, resource.plural, ns, request.name or "")
            existing = self.store.get(key)
            content_type = request.headers.get("Content-Type", "")
            if verb == "patch" and content_type.startswith("application/apply-patch"):
                manager = request.params.get("fieldManager", "")
                if existing is None:
                    # The API server authorizes an apply that creates as a create as well.
                    if request.headers.get("User-Agent", "").startswith(USER_AGENT):
                        self.calls.append(Call("create", group, plural, request.namespace))
                    self.managed[key] = {manager: copy.deepcopy(request.data)}
                    return self._create(group, resource.plural, ns, request.data)
                return self._apply(key, existing, request.data, manager)
            if existing is None:
                return self._status(
                    404, "NotFound", f'{plural} "{request.name}" not found', {"name": request.name, "kind": plural}
                )
            if verb == "get":
                return aiohttp.web.json_response(copy.deepcopy(existing))
            if verb == "delete":
                del self.store[key]
                self.managed.pop(key, None)
                return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})
            if verb == "patch":
                patch = request.data
                if request.subresource == "status":
                    patch = {"status": patch.get("status", {})}
                return self._write(key, _merge(existing, patch), existing)
        return self._status(405, "MethodNotAllowed", f"{method} is not supported by the emulator")

    def _next_version(self) -> str:
        self.version += 1
        return str(self.version)

    def _create(self, group: str, plural: str, ns: str, data: Object) -> aiohttp.web.Response:
        name = data.get("metadata", {}).get("name", "")
        key = (group, plural, ns, name)
        if key in self.store:
            return self._status(409, "AlreadyExists", f'{plural} "{name}" already exists', {"name": name})
        obj = copy.deepcopy(data)
        meta = obj.setdefault("metadata", {})
        meta.update(namespace=ns, uid=f"uid-{self.version + 1}", generation=1, creationTimestamp=now())
        meta["resourceVersion"] = self._next_version()
        obj.setdefault("status", {})
        self.store[key] = obj
        return aiohttp.web.json_response(copy.deepcopy(obj), status=201)

    def _apply(
        self, key: tuple[str, str, str, str], existing: Object, data: Object, manager: str
    ) -> aiohttp.web.Response:
        """Server-side apply by ``manager``: its fields replace the ones it applied before (a field it no longer
        applies is gone), other managers' applied fields stay; status and identity stay."""
        configs = self.managed.setdefault(key, {"": {k: v for k, v in existing.items() if k != "status"}})
        configs[manager] = copy.deepcopy(data)
        applied: Object = {}
        for config in configs.values():
            applied = _merge(applied, config)
        applied["status"] = existing.get("status", {})
        meta = applied.setdefault("metadata", {})
        for kept in ("uid", "creationTimestamp", "generation", "namespace"):
            meta[kept] = existing["metadata"][kept]
        return self._write(key, applied, existing)

    def _write(self, key: tuple[str, str, str, str], new: Object, old: Object) -> aiohttp.web.Response:
        meta = new["metadata"]
        if {k: v for k, v in new.items() if k not in ("metadata", "status")} != {
            k: v for k, v in old.items() if k not in ("metadata", "status")
        }:
            meta["generation"] = old["metadata"]["generation"] + 1
        if new != old:
            meta["resourceVersion"] = self._next_version()
        self.store[key] = new
        return aiohttp.web.json_response(copy.deepcopy(new))


@dataclass
class RunningCluster:
    """The emulator serving on a real port, in its own event loop thread."""

    emulator: ClusterEmulator
    url: str

    def api(self, **kwargs: Any) -> KubeApi:
        return KubeApi(k8s_client.ApiClient(k8s_client.Configuration(host=self.url)), **kwargs)

    def raw(self) -> ApiClient:
        """A client that is not ours (a controller's): its calls stay out of the RBAC record."""
        return ApiClient(self.url)


@contextmanager
def running_cluster() -> Iterator[RunningCluster]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        holder["stop"] = stop
        async with ClusterEmulator() as emulator, kmock.Server(emulator) as server:
            holder["cluster"] = RunningCluster(emulator, str(server.url).rstrip("/"))
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("the Kubernetes emulator did not start")
    try:
        yield holder["cluster"]
    finally:
        loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(10)
        loop.close()


class ApiClient:
    """The controllers' plain JSON client (any User-Agent but ours)."""

    def __init__(self, url: str) -> None:
        self.client = k8s_client.ApiClient(k8s_client.Configuration(host=url))

    def request(self, method: str, path: str, body: object = None, query: list[tuple[str, str]] | None = None) -> Any:
        content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
        return self.client.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            response_types_map={200: "object", 201: "object"},
            _return_http_data_only=True,
        )

    def list(self, resource: ApiResource, namespace: str, label_selector: str | None = None) -> list[Object]:
        query = [("labelSelector", label_selector)] if label_selector else []
        return list(self.request("GET", resource.path(namespace), query=query)["items"])

    def create(self, resource: ApiResource, namespace: str, obj: Object) -> Object:
        return dict(self.request("POST", resource.path(namespace), obj))

    def patch_status(self, resource: ApiResource, namespace: str, name: str, status: Object) -> None:
        self.request("PATCH", resource.path(namespace, name, "status"), {"status": status})

    def delete(self, resource: ApiResource, namespace: str, name: str) -> None:
        self.request("DELETE", resource.path(namespace, name))


DEPLOYMENTS = RESOURCES["apps/v1", "Deployment"]
PODS = RESOURCES["v1", "Pod"]
EVENTS = RESOURCES["v1", "Event"]
JOBS = RESOURCES["batch/v1", "Job"]
PVCS = RESOURCES["v1", "PersistentVolumeClaim"]

OWNER_LABEL = "emulator/owner-uid"
#: What the fake Deployment controller makes of a new revision.
OUTCOMES = ("ready", "image_pull", "crash_loop", "oom", "unschedulable", "quota", "deadline", "never_ready")


class _PollingThread:
    def __init__(self, client: ApiClient, namespace: str, interval_s: float = 0.02) -> None:
        self.client = client
        self.namespace = namespace
        self.interval_s = interval_s
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        if self.errors:
            raise self.errors[0]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except BaseException as error:  # surfaced in __exit__
                self.errors.append(error)
                return
            time.sleep(self.interval_s)

    def step(self) -> None:
        raise NotImplementedError


class FakeDeploymentController(_PollingThread):
    """Plays the Deployment controller and the kubelet: one pod per new generation, in the chosen outcome."""

    def __init__(self, client: ApiClient, namespace: str, outcome: Callable[[Object], str]) -> None:
        super().__init__(client, namespace)
        self.outcome = outcome

    def step(self) -> None:
        deployments = self.client.list(DEPLOYMENTS, self.namespace)
        for deployment in deployments:
            generation = deployment["metadata"]["generation"]
            if deployment.get("status", {}).get("observedGeneration", 0) < generation:
                self.roll(deployment, generation, self.outcome(deployment))
        # Garbage collection: the pods of a deleted Deployment go with it.
        owners = {deployment["metadata"]["uid"] for deployment in deployments}
        for pod in self.client.list(PODS, self.namespace, OWNER_LABEL):
            if pod["metadata"]["labels"][OWNER_LABEL] not in owners:
                self.client.delete(PODS, self.namespace, pod["metadata"]["name"])

    def roll(self, deployment: Object, generation: int, outcome: str) -> None:
        name = deployment["metadata"]["name"]
        template = deployment["spec"]["template"]
        selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
        # Its own pods only (their owner, as a ReplicaSet's controllerRef): a canary's pods match the stable
        # Deployment's selector too, and a real controller never takes them.
        old_pods = [
            pod for pod in self.client.list(PODS, self.namespace, selector)
            if pod["metadata"]["labels"].get(OWNER_LABEL) == deployment["metadata"]["uid"]
        ]  # fmt: skip
        status: Object = {"observedGeneration": generation, "replicas": 1 + len(old_pods), "updatedReplicas": 1}
        status["availableReplicas"] = status["readyReplicas"] = len(old_pods)
        status["conditions"] = [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]
        if outcome == "quota":
            status.update(updatedReplicas=0, replicas=len(old_pods))
            status["conditions"].append(
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": "FailedCreate",
                    "message": f'pods "{name}-x" is forbidden: exceeded quota: gpu-quota, requested: '
                    "requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=8, limited: requests.nvidia.com/gpu=8",
                }
            )
            self.client.patch_status(DEPLOYMENTS, self.namespace, name, status)
            return
        if outcome == "deadline":
            status["conditions"] = [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": f'ReplicaSet "{name}-x" has timed out progressing.',
                }
            ]
            self.client.patch_status(DEPLOYMENTS, self.namespace, name, status)
            return
        uid = deployment["metadata"]["uid"]
        pod_name = f"{name}-{uid}-g{generation}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "labels": {**template["metadata"]["labels"], OWNER_LABEL: uid},
                "annotations": template["metadata"].get("annotations", {}),
            },
            "spec": template["spec"],
        }
        self.client.create(PODS, self.namespace, pod)
        self.client.patch_status(PODS, self.namespace, pod_name, pod_status(outcome, template))
        if outcome == "image_pull":
            image = template["spec"]["containers"][0]["image"]
            self.client.create(
                EVENTS,
                self.namespace,
                {
                    "metadata": {"name": f"{pod_name}.1"},
                    "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": self.namespace},
                    "type": "Warning",
                    "reason": "Failed",
                    "message": f'Failed to pull image "{image}": not found',
                    "lastTimestamp": now(),
                },
            )
        if outcome == "ready":
            for old in old_pods:
                self.client.delete(PODS, self.namespace, old["metadata"]["name"])
            status.update(replicas=1, availableReplicas=1, readyReplicas=1)
            status["conditions"] = [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]
        self.client.patch_status(DEPLOYMENTS, self.namespace, name, status)


def pod_status(outcome: str, template: Object) -> Object:
    container = template["spec"]["containers"][0]["name"]
    ready = outcome == "ready"
    conditions = [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Ready", "status": "True" if ready else "False"},
    ]
    state: Object = {"running": {"startedAt": now()}}
    last: Object = {}
    if outcome == "unschedulable":
        conditions = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
            }
        ]
        return {"phase": "Pending", "conditions": conditions}
    if outcome == "image_pull":
        state = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
    if outcome in ("crash_loop", "oom"):
        state = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}
        reason = "OOMKilled" if outcome == "oom" else "Error"
        last = {"terminated": {"exitCode": 137 if outcome == "oom" else 1, "reason": reason}}
    return {
        "phase": "Running" if "running" in state else "Pending",
        "conditions": conditions,
        "containerStatuses": [
            {"name": container, "ready": ready, "restartCount": 3 if last else 0, "state": state, "lastState": last}
        ],
    }


class FakeKubelet(_PollingThread):
    """Plays the Job controller and the kubelet: runs each new Job's container as a local process.

    Volumes backed by a PersistentVolumeClaim are host directories (``pvcs``), emptyDirs are temporary
    directories, Secret volumes directories with one file per key of the Secret in the emulator (empty when an
    optional Secret is missing); their mount paths are rewritten in the command, arguments and environment.
    ``secretKeyRef`` environment variables are read from the Secrets in the emulator. ``runners`` maps an image
    prefix to a function that runs the (rewritten) command and returns (exit code, output); the default runs it.
    """

    def __init__(
        self,
        cluster: RunningCluster,
        namespace: str,
        pvcs: Mapping[str, Path],
        scratch: Path,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(cluster.raw(), namespace, interval_s=0.05)
        self.emulator = cluster.emulator
        self.pvcs = pvcs
        self.scratch = scratch
        self.extra_env = dict(extra_env or {})
        self.seen: set[str] = set()

    def step(self) -> None:
        jobs = self.client.list(JOBS, self.namespace)
        # Background propagation: the pods of a deleted Job go with it.
        names = {job["metadata"]["name"] for job in jobs}
        for pod in self.client.list(PODS, self.namespace, "job-name"):
            if pod["metadata"]["labels"]["job-name"] not in names:
                self.client.delete(PODS, self.namespace, pod["metadata"]["name"])
        for job in jobs:
            uid = job["metadata"]["uid"]
            if uid not in self.seen:
                self.seen.add(uid)
                self.run(job)

    def _mounts(self, pod_spec: Object, container: Object, job_name: str) -> dict[str, str]:
        volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
        mounts = {}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "persistentVolumeClaim" in volume:
                host = self.pvcs[volume["persistentVolumeClaim"]["claimName"]]
            else:
                host = self.scratch / job_name / mount["name"]
            host.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                secrets = {s["metadata"]["name"]: s for s in self.client.list(SECRETS, self.namespace)}
                stored = secrets.get(volume["secret"]["secretName"], {})
                for key, value in stored.get("stringData", {}).items():
                    (host / key).write_text(value)
            mounts[mount["mountPath"]] = str(host)
        return mounts

    def _env(self, container: Object, rewrite: Callable[[str], str]) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", ""), **self.extra_env}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = rewrite(item["value"])
            elif "secretKeyRef" in item.get("valueFrom", {}):
                ref = item["valueFrom"]["secretKeyRef"]
                secrets = {s["metadata"]["name"]: s for s in self.client.list(SECRETS, self.namespace)}
                secret = secrets.get(ref["name"])
                if secret is not None and ref["key"] in secret.get("stringData", {}):
                    env[item["name"]] = secret["stringData"][ref["key"]]
        return env

    def run(self, job: Object) -> None:
        name = job["metadata"]["name"]
        pod_spec = job["spec"]["template"]["spec"]
        container = pod_spec["containers"][0]
        mounts = self._mounts(pod_spec, container, name)

        # One pass, longest mount path first, only at path boundaries (the host paths may contain a mount path).
        alternatives = "|".join(re.escape(path) for path in sorted(mounts, key=len, reverse=True))
        pattern = re.compile(rf"(?<![\w/.-])({alternatives})(?=/|$|[\s'\"])")

        def rewrite(text: str) -> str:
            return pattern.sub(lambda match: mounts[match.group(1)], text)

        command = [rewrite(part) for part in (*container.get("command", []), *container.get("args", []))]
        if command[0] == "python":
            command[0] = sys.executable  # the platform image's interpreter is this checkout's
        env = self._env(container, rewrite)
        pod_name = f"{name}-{job['metadata']['uid']}"
        labels = {**job["spec"]["template"]["metadata"].get("labels", {}), "job-name": name}
        self.client.create(PODS, self.namespace, {"metadata": {"name": pod_name, "labels": labels}, "spec": pod_spec})
        self.client.patch_status(JOBS, self.namespace, name, {"active": 1, "startTime": now()})
        completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
        with self.emulator.guard:
            self.emulator.pod_logs[self.namespace, pod_name] = completed.stdout + completed.stderr
        succeeded = completed.returncode == 0
        terminated = {"exitCode": completed.returncode, "reason": "Completed" if succeeded else "Error"}
        self.client.patch_status(
            PODS,
            self.namespace,
            pod_name,
            {
                "phase": "Succeeded" if succeeded else "Failed",
                "containerStatuses": [{"name": container["name"], "ready": False, "state": {"terminated": terminated}}],
            },
        )
        self.client.patch_status(
            JOBS, self.namespace, name, {"active": 0, "succeeded": 1} if succeeded else {"active": 0, "failed": 1}
        )


def secret(name: str, key: str, value: str) -> Object:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {key: value}}


def role_rules() -> set[tuple[str, str, str]]:
    """What the shipped Role (``k8s/base/rbac.yaml``) grants: (API group, resource, verb)."""
    import yaml

    rbac = Path(__file__).resolve().parents[1] / "k8s" / "base" / "rbac.yaml"
    role = next(doc for doc in yaml.safe_load_all(rbac.read_text()) if doc["kind"] == "Role")
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
