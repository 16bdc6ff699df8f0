"""The kubernetes target against a real cluster: runs when KUBECONFIG points at one, skips with the reason otherwise.

kind with a fake ``nvidia.com/gpu`` extended resource on its node and KEDA installed is enough: the promotion below
uses an image that cannot be pulled, so the real Deployment controller and kubelet report the failure, and the
target must remove everything it created (there is no previous revision). Set ``LLM_PLATFORM_E2E_NAMESPACE`` to
use a namespace other than the catalog's (it must exist, with the Role of k8s/base bound to your identity).
"""

from __future__ import annotations

import os

import pytest

from llm_platform.errors import RolloutError
from llm_platform.manifests.serving import render_model
from llm_platform.targets.kube_api import KubeApi, resource_of
from llm_platform.targets.kubernetes_cluster import KubernetesCluster, KubernetesTargetSettings
from tests.conftest import tiny_catalog

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="needs a real cluster: set KUBECONFIG (kind with a fake nvidia.com/gpu resource and KEDA is enough)",
    ),
]


def test_unpullable_first_promotion_is_removed_again() -> None:
    namespace = os.environ.get("LLM_PLATFORM_E2E_NAMESPACE", "llm-serving")
    catalog = tiny_catalog(
        platform={"namespace": namespace, "vllm_image": "registry.invalid/llm-platform-e2e/vllm"},
        serving={"max_model_len": 2048, "startup_timeout_s": 60},
    )
    model = catalog.model("tiny-llama")
    api = KubeApi.from_kubeconfig(os.environ.get("LLM_PLATFORM_E2E_CONTEXT"))
    target = KubernetesCluster(
        api, catalog.platform, KubernetesTargetSettings(poll_interval_s=2, rollout_timeout_s=300)
    )

    with pytest.raises(RolloutError, match="no previous revision, so the new objects were removed"):
        target.promote(model, "0" * 40, log=print)

    for obj in render_model(catalog.platform, model):
        assert api.get(resource_of(obj), namespace, obj["metadata"]["name"]) is None, obj["kind"]
