"""Weights download: our downloader against ``hf download`` on the same generated repository, and a kill at 50%.

1. Throughput: a generated repository of ``--shards`` x ``--shard-mb`` (default 4 x 256 MB, ~1 GB) plus config and
   tokenizer files, downloaded alternately by ``python -m llm_platform.weights`` (which also verifies every
   sha256 and writes the manifest) and by huggingface_hub's own ``hf download --local-dir`` (which checks sizes
   only), into fresh directories, from two local hubs: olah serving a git repository (``--olah-rounds`` each; olah
   streams local mirrors at ~20 MB/s, so it mostly measures olah) and the protocol-level test hub serving from
   memory (``--rounds`` each; fast enough that client overhead shows). Medians are compared; ``ratio`` is the
   protocol-server one. Goal: ratio ours/hf >= 0.95.
2. Kill at 50%: the same files from the protocol-level test hub (olah's local mirrors do not answer Range
   requests, so nothing could resume against it), our downloader killed (SIGKILL) once half the bytes have been
   served, then run again. Re-downloaded bytes = bytes served over both runs - repository size. Goal: at most one
   file (the largest shard).

    .venv/bin/python bench/download.py [--shards 4] [--shard-mb 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from shortmode import parse_options  # noqa: E402

from llm_platform.devhub import LocalHub, publish_model  # noqa: E402
from tests.fakehub import FakeHub, FakeRepo  # noqa: E402

WORK = REPO_ROOT / "build" / "bench-download"
REPO_ID = "bench/generated-1g"
INCLUDE = ["*.safetensors", "*.json"]


def generate(source: Path, shards: int, shard_bytes: int) -> int:
    """Random shards plus small JSON files; kept between runs when the sizes match."""
    source.mkdir(parents=True, exist_ok=True)
    for index in range(1, shards + 1):
        shard = source / f"model-{index:05d}-of-{shards:05d}.safetensors"
        if not shard.exists() or shard.stat().st_size != shard_bytes:
            with shard.open("wb") as handle:
                for _ in range(shard_bytes // (16 * 1024 * 1024)):
                    handle.write(os.urandom(16 * 1024 * 1024))
                handle.write(os.urandom(shard_bytes % (16 * 1024 * 1024)))
    (source / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    (source / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {str(i): i for i in range(5000)}}}))
    return sum(path.stat().st_size for path in source.iterdir())


def ours_command(endpoint: str, dest: Path) -> list[str]:
    return [sys.executable, "-m", "llm_platform.weights", "--model", "bench", "--repo", REPO_ID, "--dest", str(dest),
            "--endpoint", endpoint]  # fmt: skip


def run_ours(endpoint: str, dest: Path) -> float:
    command = ours_command(endpoint, dest)
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def run_hf(endpoint: str, dest: Path) -> float:
    hf = Path(sys.executable).with_name("hf")
    command = [str(hf), "download", REPO_ID, "--local-dir", str(dest), "--quiet"]
    for pattern in INCLUDE:
        command += ["--include", pattern]
    start = time.perf_counter()
    subprocess.run(
        command,
        check=True,
        capture_output=True,
        env={**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_TELEMETRY": "1"},
    )
    return time.perf_counter() - start


def alternate(endpoint: str, total: int, rounds: int) -> tuple[list[float], list[float]]:
    """MB/s of ours and of hf download, alternating, ``rounds`` each."""
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(rounds):
        for runner, times in ((run_ours, ours), (run_hf, theirs)):
            dest = WORK / "dest"
            shutil.rmtree(dest, ignore_errors=True)
            times.append(total / runner(endpoint, dest) / 1e6)
    shutil.rmtree(WORK / "dest", ignore_errors=True)
    return ours, theirs


def throughput_olah(source: Path, total: int, rounds: int) -> tuple[list[float], list[float]]:
    mirrors = WORK / "mirrors"
    publish_model(mirrors, REPO_ID, source, message="bench")
    with LocalHub(mirrors, log_path=WORK / "olah.log") as hub:
        return alternate(hub.endpoint, total, rounds)


def throughput_protocol_server(source: Path, total: int, rounds: int) -> tuple[list[float], list[float]]:
    hub = FakeHub().start()
    try:
        hub.repos[REPO_ID] = FakeRepo({path.name: path.read_bytes() for path in source.iterdir()})
        return alternate(hub.endpoint, total, rounds)
    finally:
        hub.stop()


def kill_and_resume(source: Path, total: int) -> tuple[int, int, int]:
    """(bytes served by the first run, by the second, re-downloaded) with a kill at 50%."""
    files = {path.name: path.read_bytes() for path in source.iterdir()}
    hub = FakeHub().start()
    try:
        hub.repos[REPO_ID] = FakeRepo(files)
        dest = WORK / "kill"
        shutil.rmtree(dest, ignore_errors=True)
        command = ours_command(hub.endpoint, dest)
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while sum(hub.served.values()) < total // 2 and process.poll() is None:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        first = hub.settled_bytes()
        hub.served.clear()
        subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True)
        second = sum(hub.served.values())
        shutil.rmtree(dest, ignore_errors=True)
        return first, second, first + second - total
    finally:
        hub.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--shard-mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--olah-rounds", type=int, default=1)
    options = parse_options(parser, {"shards": 2, "shard_mb": 4, "rounds": 1, "olah_rounds": 1})

    source = WORK / "src"
    shard_bytes = options.shard_mb * 1024 * 1024
    total = generate(source, options.shards, shard_bytes)
    print(f"repository: {total / 1e9:.2f} GB in {options.shards} shards + 2 JSON files")
    results = {}
    for name, measure, rounds in (
        ("protocol server", throughput_protocol_server, options.rounds),
        ("olah", throughput_olah, options.olah_rounds),
    ):
        if rounds == 0:
            results[name] = float("nan")
            continue
        ours, theirs = measure(source, total, rounds)
        results[name] = statistics.median(ours) / statistics.median(theirs)
        print(
            f"{name}: ours (download + sha256 verify + manifest) MB/s {', '.join(f'{v:.0f}' for v in ours)}; "
            f"hf download (sizes only) MB/s {', '.join(f'{v:.0f}' for v in theirs)}; "
            f"median ratio {results[name]:.2f}"
        )
        if name == "protocol server":
            ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    first, second, wasted = kill_and_resume(source, total)
    print(
        f"kill at 50%: first run served {first} bytes, second run {second}, re-downloaded {wasted} "
        f"(largest file {shard_bytes})"
    )
    print(
        f"repo_bytes={total} ours_mb_s={ours_median:.0f} hf_mb_s={theirs_median:.0f} "
        f"ratio={results['protocol server']:.2f} ratio_olah={results['olah']:.2f} goal_ratio=0.95 "
        f"redownloaded_bytes_after_kill={wasted} largest_file_bytes={shard_bytes} "
        f"goal_redownload_met={wasted <= shard_bytes}"
    )


if __name__ == "__main__":
    main()
