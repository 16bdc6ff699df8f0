"""Jobs on the kubernetes target (through dagster-k8s' client): the weights download Job end to end, its failures,
and the least-privilege Role checked against every call the target makes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_platform.catalog import Catalog, parse_catalog
from llm_platform.conventions import SERVING_CONTAINER
from llm_platform.errors import JobFailedError, KubernetesAccessError, RolloutError
from llm_platform.manifests.jobs import weights_job_name
from llm_platform.manifests.pods import HF_TOKEN_KEY, WEIGHTS_REVISION_ANNOTATION, resource_name
from llm_platform.store_layout import SNAPSHOT_MANIFEST
from llm_platform.targets.kubernetes import KubernetesTarget
from llm_platform.targets.kubernetes_cluster import KubernetesCluster, KubernetesTargetSettings
from tests.fakehub import FakeHub, FakeRepo
from tests.kubeemu import (
    DEPLOYMENTS,
    JOBS,
    PVCS,
    SECRETS,
    FakeDeploymentController,
    FakeKubelet,
    Fault,
    RunningCluster,
    role_rules,
)

pytestmark = pytest.mark.integration

TOKEN = "hf_" + "k8sjob" * 6
REPO = "acme/tiny"
SETTINGS = KubernetesTargetSettings(poll_interval_s=0.05, rollout_timeout_s=3, job_timeout_s=30)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    server = FakeHub().start()
    server.repos[REPO] = FakeRepo(
        {
            "config.json": b'{"max_position_embeddings": 4096}',
            "model.safetensors": os.urandom(300_000),
            "tokenizer.json": b'{"version": "1.0"}' + b" " * 2000,
        }
    )
    server.faults.required_token = TOKEN
    yield server
    server.stop()


def _catalog(hub: FakeHub, repo: str = REPO) -> Catalog:
    return parse_catalog(
        {
            "platform": {"hf_endpoint": hub.endpoint},
            "models": [{"name": "tiny", "source": {"repo": repo}, "serving": {"max_model_len": 2048}}],
        }
    )


@pytest.fixture
def kubelet(cluster: RunningCluster, tmp_path: Path) -> Iterator[FakeKubelet]:
    namespace = "llm-serving"
    cluster.raw().request(
        "POST",
        SECRETS.path(namespace),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-token"}, "stringData": {HF_TOKEN_KEY: TOKEN}},
    )
    with FakeKubelet(cluster, namespace, {"model-weights": tmp_path / "pvc"}, tmp_path / "scratch") as running:
        yield running


def _target(cluster: RunningCluster, catalog: Catalog) -> KubernetesCluster:
    return KubernetesCluster(cluster.api(sleep=lambda _: None), catalog.platform, SETTINGS)


def _stored_text(cluster: RunningCluster) -> str:
    """Everything the cluster holds but the token's own Secret: objects of every kind and every pod log."""
    with cluster.emulator.guard:
        objects = [obj for (_, plural, _, _), obj in cluster.emulator.store.items() if plural != "secrets"]
        return json.dumps([objects, list(cluster.emulator.pod_logs.values())])


def test_weights_job_downloads_to_the_pvc_and_returns_the_manifest(
    cluster: RunningCluster, hub: FakeHub, kubelet: FakeKubelet, tmp_path: Path
) -> None:
    catalog = _catalog(hub)
    lines: list[str] = []

    result = _target(cluster, catalog).download_weights(catalog.model("tiny"), "main", log=lines.append)
    manifest = result.manifest
    assert not result.reused and str(result.directory) == f"/models/tiny/{manifest.sha}"

    repo = hub.repos[REPO]
    assert manifest.sha == repo.sha and manifest.model == "tiny"
    snapshot = tmp_path / "pvc" / "tiny" / repo.sha
    assert (snapshot / SNAPSHOT_MANIFEST).is_file()
    assert (snapshot / "model.safetensors").read_bytes() == repo.files["model.safetensors"]
    assert {entry.path for entry in manifest.files} == set(repo.files)
    # The token went from the Secret to the hub, and nowhere else.
    assert hub.tokens_seen == {TOKEN}
    assert TOKEN not in _stored_text(cluster)
    assert TOKEN not in "\n".join(lines)
    assert any("created" in line for line in lines)
    # The model store (RWX PVC) was applied before the Job that mounts it.
    assert "model-weights" in cluster.emulator.stored(PVCS)


def test_a_succeeded_job_for_a_commit_is_reused(cluster: RunningCluster, hub: FakeHub, kubelet: FakeKubelet) -> None:
    catalog = _catalog(hub)
    target = _target(cluster, catalog)
    sha = hub.repos[REPO].sha

    first = target.download_weights(catalog.model("tiny"), sha)
    second = target.download_weights(catalog.model("tiny"), sha)

    assert first == second
    creates = [call for call in cluster.emulator.our_calls() if call.verb == "create" and call.resource == "jobs"]
    assert len(creates) == 1
    assert weights_job_name(catalog.model("tiny"), sha) in cluster.emulator.stored(JOBS)
    # A branch always runs a Job (it may have moved); this one finds the snapshot complete and fetches nothing.
    served_before = sum(hub.served.values())
    by_branch = target.download_weights(catalog.model("tiny"), "main")
    assert by_branch.reused and by_branch.manifest.sha == sha
    assert sum(hub.served.values()) == served_before


def test_a_failed_job_reports_the_pods_error_line(cluster: RunningCluster, hub: FakeHub, kubelet: FakeKubelet) -> None:
    catalog = _catalog(hub, repo="acme/missing")

    with pytest.raises(JobFailedError) as failure:
        _target(cluster, catalog).download_weights(catalog.model("tiny"), "main")

    message = str(failure.value)
    assert "exit code 2" in message
    assert "error: model 'tiny'" in message and "acme/missing" in message
    assert TOKEN not in message


def test_forbidden_job_creation_names_the_verb(cluster: RunningCluster, hub: FakeHub) -> None:
    catalog = _catalog(hub)
    cluster.emulator.faults.append(Fault("create", "jobs", 403, reason="Forbidden"))
    with pytest.raises(KubernetesAccessError, match=r"not allowed to create jobs\.batch in namespace llm-serving"):
        _target(cluster, catalog).download_weights(catalog.model("tiny"), "main")


def test_the_role_grants_exactly_the_calls_the_target_makes(
    cluster: RunningCluster, hub: FakeHub, kubelet: FakeKubelet
) -> None:
    """Least privilege, derived: every flow of the target runs against the emulator, which records each call
    (verb, API group, resource) our client makes; the Role in k8s/base must grant all of them and nothing else."""
    catalog = parse_catalog(
        {
            "platform": {"hf_endpoint": hub.endpoint},
            "models": [
                {
                    "name": "tiny",
                    "source": {"repo": REPO},
                    "serving": {"max_model_len": 2048},
                    "exposure": {"host": "tiny.example.com", "tls_secret": "tiny-example-com-tls"},
                },
                {
                    "name": "routed",
                    "source": {"repo": REPO},
                    "serving": {"max_model_len": 2048},
                    "exposure": {"kind": "gateway", "host": "routed.example.com", "tls_secret": "routed-tls"},
                },
            ],
        }
    )
    model = catalog.model("tiny")
    target = _target(cluster, catalog)
    crashing, unpullable = "c" * 40, "e" * 40
    outcomes = {crashing: "crash_loop", unpullable: "image_pull"}

    def scenario(deployment: dict[str, Any]) -> str:
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        return outcomes.get(annotations[WEIGHTS_REVISION_ANNOTATION], "ready")

    with FakeDeploymentController(cluster.raw(), catalog.platform.namespace, scenario):
        with pytest.raises(RolloutError, match="no previous revision"):
            target.promote(model, crashing)  # the new objects are deleted again
        target.promote(model, "1" * 40)
        with pytest.raises(RolloutError, match="rolled back to"):
            target.promote(model, unpullable)
        with pytest.raises(RolloutError, match="no previous revision"):
            target.promote(catalog.model("routed"), crashing)  # its HTTPRoute is deleted again
        target.promote(catalog.model("routed"), "1" * 40)
    target.download_weights(model, "main")
    target.download_weights(model, "main")  # a branch: the earlier Job is replaced, not reused
    target.current_revision(model)

    used = {(call.group, call.resource, call.verb) for call in cluster.emulator.our_calls()}
    granted = role_rules()
    assert used - granted == set(), "calls the Role does not grant"
    assert granted - used == set(), "grants no call needs"
    assert {call.namespace for call in cluster.emulator.our_calls()} == {catalog.platform.namespace}


ADAPTER_REPO = "acme/tiny-sql-lora"


def test_an_adapter_job_fetches_only_the_adapter_beside_the_base_and_the_deployment_serves_it(
    cluster: RunningCluster, hub: FakeHub, kubelet: FakeKubelet, tmp_path: Path
) -> None:
    adapter_config = {"peft_type": "LORA", "r": 32, "base_model_name_or_path": REPO}
    hub.repos[ADAPTER_REPO] = FakeRepo({
        "adapter_config.json": json.dumps(adapter_config).encode(),
        "adapter_model.safetensors": os.urandom(50_000),
        "adapter_model.bin": b"a pickle: never fetched",
    })  # fmt: skip
    hub.repos["acme/pickled-lora"] = FakeRepo({"adapter_config.json": b"{}", "adapter_model.bin": b"pickle"})
    catalog = parse_catalog({
        "platform": {"hf_endpoint": hub.endpoint},
        "models": [{
            "name": "tiny", "source": {"repo": REPO}, "serving": {"max_model_len": 2048},
            "adapters": [{"name": "tiny-sql", "source": {"repo": ADAPTER_REPO}},
                         {"name": "tiny-pickled", "source": {"repo": "acme/pickled-lora"}}],
        }],
    })  # fmt: skip
    model, target = catalog.model("tiny"), _target(cluster, catalog)
    base = target.download_weights(model, "main").manifest
    fetched_base = {path: hub.served[path] for path in hub.repos[REPO].files}

    sql = target.download_adapter(model, model.adapters[0])

    sha = hub.repos[ADAPTER_REPO].sha
    assert (
        sql.manifest.model == "tiny/adapters/tiny-sql" and str(sql.directory) == f"/models/tiny/adapters/tiny-sql/{sha}"
    )
    assert {entry.path for entry in sql.manifest.files} == {"adapter_config.json", "adapter_model.safetensors"}
    assert (tmp_path / "pvc" / "tiny" / "adapters" / "tiny-sql" / sha / SNAPSHOT_MANIFEST).is_file()
    assert sql.manifest.adapter_config is not None and sql.manifest.adapter_config["r"] == 32
    assert {path: hub.served[path] for path in hub.repos[REPO].files} == fetched_base  # nothing of the base again
    assert (tmp_path / "pvc" / "tiny" / base.sha / SNAPSHOT_MANIFEST).is_file()  # the base, untouched
    # An adapter without safetensors: refused before a byte is fetched, in one line from the Job.
    with pytest.raises(JobFailedError, match=r"has no \*\.safetensors matching source.allow_patterns"):
        target.download_adapter(model, model.adapters[1])
    assert not list((tmp_path / "pvc" / "tiny" / "adapters").rglob("*.bin"))

    # The Deployment: the LoRA flags with the adapter's path on the PVC it mounts already (rank from its config).
    served = base.with_adapters({"tiny-sql": sql.manifest})
    with FakeDeploymentController(cluster.raw(), catalog.platform.namespace, lambda _: "ready"):
        KubernetesTarget(target, tmp_path / "artifacts").promote(model, served)
    deployment = cluster.emulator.stored(DEPLOYMENTS)[resource_name(model)]
    (engine,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == SERVING_CONTAINER]
    args = engine["args"]
    assert args[args.index("--lora-modules") + 1] == f"tiny-sql=/models/tiny/adapters/tiny-sql/{sha}"
    assert args[args.index("--max-lora-rank") + 1] == "32" and args[args.index("--max-loras") + 1] == "2"
    mount = next(m for m in engine["volumeMounts"] if m["mountPath"] == catalog.platform.weights_mount_path)
    assert mount["readOnly"] is True
    env = {item["name"]: item.get("value") for item in engine["env"]}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "0"
