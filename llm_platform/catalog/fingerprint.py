"""The identity of a serving config on a weights commit: what a benchmark verdict is about."""

from __future__ import annotations

import hashlib
import json

from llm_platform.catalog.schema import Serving
from llm_platform.engine import DEFAULT_ENGINE


def config_fingerprint(serving: Serving, weights_sha: str) -> str:
    """Target-independent identity of ``serving`` on a weights commit. The engine counts where it is not the
    default: configs of the default engine keep the identity they had before ``serving.engine`` existed, so their
    benchmarks stay valid."""
    fields = serving.model_dump(mode="json", exclude={"engine"} if serving.engine == DEFAULT_ENGINE else None)
    payload = json.dumps({"serving": fields, "weights": weights_sha}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
