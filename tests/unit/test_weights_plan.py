"""Pure decisions of a weights download: file selection, retention, progress lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from llm_platform.catalog import DEFAULT_ALLOW_PATTERNS
from llm_platform.weights.plan import RemoteFile, SnapshotManifest, architecture_of, select_files, snapshots_to_prune
from llm_platform.weights.progress import LogProgress, ProgressEvent, human_bytes


def _listing(*paths: str) -> list[RemoteFile]:
    return [RemoteFile(path, 10, None, None) for path in paths]


def _paths(files: list[RemoteFile]) -> list[str]:
    return [item.path for item in files]


def test_default_patterns_take_safetensors_configs_and_tokenizers_only() -> None:
    listing = _listing(
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",
        "pytorch_model.bin",
        "consolidated.pt",
        "README.md",
        ".gitattributes",
        "original/params.json",
        "chat_template.jinja",
    )
    assert _paths(select_files(listing, DEFAULT_ALLOW_PATTERNS)) == [
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "original/params.json",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
    ]


def test_pickled_weights_are_the_fallback_when_there_are_no_safetensors() -> None:
    listing = _listing("pytorch_model.bin", "config.json", "tokenizer.json")
    assert _paths(select_files(listing, DEFAULT_ALLOW_PATTERNS)) == [
        "config.json",
        "pytorch_model.bin",
        "tokenizer.json",
    ]


def test_explicit_patterns_still_drop_pickles_beside_safetensors() -> None:
    listing = _listing("model.safetensors", "pytorch_model.bin", "config.json")
    assert _paths(select_files(listing, ("*",))) == ["config.json", "model.safetensors"]
    assert _paths(select_files(_listing("pytorch_model.bin"), ("*.bin",))) == ["pytorch_model.bin"]


def _manifest(sha: str, minutes_ago: int) -> SnapshotManifest:
    return SnapshotManifest(
        model="m",
        repo="o/m",
        requested_revision="main",
        sha=sha,
        files=(),
        total_bytes=0,
        downloaded_bytes=0,
        duration_s=1.0,
        completed_at=datetime(2026, 1, 1, tzinfo=UTC) - timedelta(minutes=minutes_ago),
    )


def test_retention_keeps_the_newest_and_never_a_protected_sha() -> None:
    snapshots = [_manifest("a", 30), _manifest("b", 20), _manifest("c", 10), _manifest("d", 0)]
    assert snapshots_to_prune(snapshots, keep=0) == []
    assert [m.sha for m in snapshots_to_prune(snapshots, keep=2)] == ["b", "a"]
    assert [m.sha for m in snapshots_to_prune(snapshots, keep=1, protected={"a"})] == ["c", "b"]


def test_manifest_throughput() -> None:
    manifest = _manifest("a", 0).model_copy(update={"downloaded_bytes": 1000, "duration_s": 2.0})
    assert manifest.throughput_bytes_per_s == 500.0


def test_log_progress_is_rate_limited_but_always_reports_the_end() -> None:
    lines: list[str] = []
    now = [0.0]
    progress = LogProgress(lines.append, interval_s=5.0, clock=lambda: now[0])
    event = ProgressEvent("m", 500_000_000, 2_000_000_000, 1, 4, 10.0)
    progress(event)
    now[0] = 1.0
    progress(event)
    now[0] = 2.0
    progress(ProgressEvent("m", 2_000_000_000, 2_000_000_000, 4, 4, 12.0), final=True)
    assert lines == [
        "model 'm': 500.0 MB / 2.0 GB (25%), 1/4 files, 50.0 MB/s",
        "model 'm': 2.0 GB / 2.0 GB (100%), 4/4 files, 166.7 MB/s",
    ]


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (999, 1000, 1_500_000, 3 * 10**12)] == ["999 B", "1.0 kB", "1.5 MB", "3.0 TB"]


def test_the_architecture_keeps_the_fields_of_config_json_a_performance_model_reads_and_nothing_else() -> None:
    config = {
        "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_hidden_layers": 32, "torch_dtype": "bfloat16",
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "deep": {"x": 1}},
        "auto_map": {"AutoModel": "evil.py"}, "nested": [{"a": 1}], "name" * 100: 1, "long": "x" * 1000,
    }  # fmt: skip
    assert architecture_of(config) == {
        "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_hidden_layers": 32,
        "torch_dtype": "bfloat16", "rope_scaling": {"rope_type": "llama3", "factor": 8.0},
    }  # fmt: skip
    assert architecture_of({f"key{i}": "v" * 200 for i in range(500)}) is None  # over the size bound
