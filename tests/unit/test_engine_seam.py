"""The engine seam holds: no module outside ``llm_platform/engine/`` names a vLLM flag or metric, and moving vLLM
behind the seam changed no identity a running deployment carries."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from llm_platform.catalog import Serving, config_fingerprint
from llm_platform.engine.vllm import VLLM
from llm_platform.engine.vllm_flags import ALLOWED_FLAGS, MANAGED_FLAGS, REFUSED_FLAGS

PACKAGE = Path(__file__).resolve().parents[2] / "llm_platform"
ENGINE_PACKAGE = PACKAGE / "engine"

#: Flag names vLLM shares with the platform's own command lines (the gate, the weights Job, the CLI): these say
#: nothing about vLLM where they appear, so the search leaves them out.
SHARED_FLAG_NAMES = {"--model", "--host", "--port", "--seed", "--config"}


def _outside_engine() -> list[Path]:
    return [path for path in sorted(PACKAGE.rglob("*.py")) if ENGINE_PACKAGE not in path.parents]


def test_no_module_outside_the_engine_package_names_a_vllm_flag_or_metric() -> None:
    flags = (set(MANAGED_FLAGS) | set(REFUSED_FLAGS) | set(ALLOWED_FLAGS)) - SHARED_FLAG_NAMES
    flag = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(flags, key=len, reverse=True))) + r")(?![\w-])")
    metric = re.compile(r"\bvllm:[a-z_]+")
    # Every metric name the platform reads is caught by the pattern, so the search covers them all.
    assert all(metric.fullmatch(name) for name in VLLM.metrics.all_names)
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {match.group(0)}"
        for path in _outside_engine()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for match in (*flag.finditer(line), *metric.finditer(line))
    ]
    assert len(_outside_engine()) > 50  # the search looked at the package
    assert not found, "vLLM names outside llm_platform/engine/:\n" + "\n".join(found)


def test_the_search_would_find_a_flag_or_metric() -> None:
    """The patterns of the test above match what they must (a search that finds nothing proves nothing)."""
    flags = set(MANAGED_FLAGS) - SHARED_FLAG_NAMES
    sample = 'args = ["--max-model-len", "4096"]; query = "sum(vllm:num_requests_waiting)"'
    flag = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, flags)) + r")(?![\w-])")
    assert flag.search(sample) and re.search(r"\bvllm:[a-z_]+", sample)


def test_vllm_fingerprints_are_what_they_were_before_the_seam() -> None:
    """A pod-template annotation carries the engine fingerprint and benchmarks are keyed by the config fingerprint:
    had the seam changed either for vLLM, every Deployment would roll and every benchmark be redone on upgrade."""
    invocation = VLLM.invocation(Serving(), served_model_name="m", weights_path="/w", host="127.0.0.1", port=8002)
    before = json.dumps({"args": invocation.args, "env": dict(sorted(invocation.env.items()))}, sort_keys=True)
    assert invocation.fingerprint == hashlib.sha256(before.encode()).hexdigest()[:16]
    fields = Serving().model_dump(mode="json")
    for later in ("engine", "max_loras", "max_lora_rank"):  # fields added since: out of the identity while unset
        del fields[later]
    config = json.dumps({"serving": fields, "weights": "abc"}, sort_keys=True)
    assert config_fingerprint(Serving(), "abc") == hashlib.sha256(config.encode()).hexdigest()[:16]
