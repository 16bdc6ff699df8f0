"""What serves, named once: a base model and its children (adapters, rollout tracks) get the names, labels and keys
that every layer uses for them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from llm_platform.catalog import parse_catalog
from llm_platform.conventions import MODEL_LABEL, TRACK_LABEL, ServedModel
from llm_platform.manifests.serving import render_model


def test_a_base_model_is_named_as_the_platform_always_named_it() -> None:
    catalog = parse_catalog({"models": [{"name": "llama", "source": {"repo": "acme/llama"}}]})
    base = catalog.model("llama").identity
    assert base == ServedModel("llama")
    assert (base.served_name, base.object_name, base.key) == ("llama", "vllm-llama", "llama")
    assert base.labels() == {MODEL_LABEL: "llama"}
    deployment = next(obj for obj in render_model(catalog.platform, catalog.model("llama"), "a" * 40)
                      if obj["kind"] == "Deployment")  # fmt: skip
    assert deployment["metadata"]["name"] == base.object_name
    assert deployment["spec"]["selector"]["matchLabels"][MODEL_LABEL] == "llama"


def test_an_adapter_adds_a_served_name_and_a_track_adds_objects() -> None:
    base = ServedModel("llama")
    adapter, canary = base.adapter("sql-expert"), base.track("canary")
    # An adapter is asked for by its own name and shares the base's objects and pods.
    assert (adapter.served_name, adapter.object_name, adapter.labels()) == ("sql-expert", "vllm-llama",
                                                                            {MODEL_LABEL: "llama"})  # fmt: skip
    # A track serves the base's name from objects of its own, its pods labelled with the track.
    assert (canary.served_name, canary.object_name) == ("llama", "vllm-llama-canary")
    assert canary.labels() == {MODEL_LABEL: "llama", TRACK_LABEL: "canary"}
    for served in (base, adapter, canary):
        assert ServedModel.parse(served.key) == served
    assert len({base.key, adapter.key, canary.key, base.track("sql-expert").key}) == 4


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ServedModel("llama", "x"), "needs both a name and a kind"),
        (lambda: ServedModel("llama", None, "adapter"), "needs both a name and a kind"),
        (lambda: ServedModel("llama").adapter("a/b"), "is not a child name"),
        (lambda: ServedModel.parse("llama/variant:x"), "is not a served-model key"),
    ],
)
def test_malformed_identities_are_refused(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()
