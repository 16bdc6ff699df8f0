"""The identity of a serving config on a weights commit: what a benchmark verdict is about."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from llm_platform.catalog.schema import Serving
from llm_platform.engine import DEFAULT_ENGINE

#: Serving fields added after fingerprints were first recorded, left out of one while unset.
LATER_OPTIONAL_FIELDS = ("max_loras", "max_lora_rank")


def config_fingerprint(serving: Serving, weights_sha: str, adapters: Mapping[str, str] | None = None) -> str:
    """Target-independent identity of ``serving`` on a weights commit, with the LoRA adapters served on it (served
    name → commit). Fields added later count where they are set: the engine where it is not the default, the LoRA
    knobs where given, adapters where there are any, so configs from before them keep their identity and their
    benchmarks stay valid."""
    unset = {"engine"} if serving.engine == DEFAULT_ENGINE else set()
    unset |= {knob for knob in LATER_OPTIONAL_FIELDS if getattr(serving, knob) is None}
    fields = serving.model_dump(mode="json", exclude=unset)
    identity: dict[str, object] = {"serving": fields, "weights": weights_sha}
    if adapters:
        identity["adapters"] = dict(adapters)
    payload = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
