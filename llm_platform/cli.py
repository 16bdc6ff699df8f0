"""``llm-platform``: the command line for operators and CI.

Exit codes: 0 on success, 2 on bad input (catalog, model name, arguments) with one readable line per problem
on stderr and no traceback, 1 when something outside the user's input failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llm_platform.catalog import Catalog, ModelPatch, ModelSpec, model_warnings, parse_assignments, platform_warnings
from llm_platform.catalog_files import CATALOG_ENV_VAR, default_catalog_path, load_catalog
from llm_platform.dagster_api import DEFAULT_URL
from llm_platform.errors import CatalogError, ManifestValidationError, PlatformError, UnknownModelError
from llm_platform.manifests.render import dump_yaml, render_files
from llm_platform.manifests.validation import KUBERNETES_VERSIONS, validate_objects

if TYPE_CHECKING:
    from llm_platform.targets.local_servers import LocalServers

DAGSTER_URL_ENV_VAR = "LLM_PLATFORM_DAGSTER_URL"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
_BAD_INPUT = (CatalogError, UnknownModelError, ManifestValidationError)


def _catalog_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--catalog",
        type=Path,
        default=None,
        help=f"model catalog (default: ${CATALOG_ENV_VAR} or catalog/models.yaml)",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-platform", description="Lifecycle of self-hosted LLMs: catalog, manifests, promotion."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_catalog_option()]

    commands.add_parser(
        "validate",
        parents=common,
        help="check the catalog and every object rendered from it",
        description="Validate the catalog and the Kubernetes objects rendered from it "
        f"(Kubernetes {', '.join(KUBERNETES_VERSIONS)}; KEDA and Prometheus Operator CRD schemas).",
    )
    render = commands.add_parser(
        "render",
        parents=common,
        help="write the Kubernetes objects of models as YAML",
        description="Render (and validate) the Kubernetes objects of the given models, or of all models.",
    )
    render.add_argument("models", nargs="*", metavar="MODEL", help="catalog model names (default: all)")
    render.add_argument("--out", type=Path, help="directory to write one file per model into (default: stdout)")

    plan = commands.add_parser(
        "plan",
        parents=common,
        help="estimate a model's engine configs on platform.gpu_type before any GPU is used (AIConfigurator)",
        description="The serving plan of one model: for each candidate tensor-parallel size, max_num_seqs and "
        "max_num_batched_tokens, whether it fits the GPU, its KV cache and the highest concurrency meeting the "
        "model's SLO at its traffic; the best start, or the nearest option when no config meets the SLO.",
    )
    plan.add_argument("model", metavar="MODEL", help="catalog model name")
    plan.add_argument("--gpu-type", help="GPU type to plan for (default: the catalog's platform.gpu_type)")
    plan.add_argument("--weights-dir", help="a local directory with the model's config.json (default: the bundled "
                      "config of source.repo, or source.path)")  # fmt: skip
    plan.add_argument("--all", action="store_true", help="print every candidate, not only those that meet the SLO")

    demo = commands.add_parser(
        "demo",
        parents=common,
        help="run the whole lifecycle of the demo model on this machine (local hub, vLLM on CPU) and leave it serving",
    )
    demo.add_argument("--model", default="tiny-llama", help="catalog model to run (default: tiny-llama)")

    promote = commands.add_parser(
        "promote",
        parents=common,
        help="submit a promotion of a model to Dagster (GraphQL API); --wait follows it to the end",
    )
    promote.add_argument("model", metavar="MODEL")
    promote.add_argument("--revision", help="weights branch, tag or commit to download first (runs `lifecycle`)")
    promote.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a serving field for this promotion, e.g. --set max_num_seqs=64 (repeatable)",
    )
    promote.add_argument("--reason", default="", help="why (recorded in serving_config's metadata)")
    promote.add_argument("--benchmark-prompts", type=int, help="requests per concurrency level of the benchmark")
    promote.add_argument(
        "--benchmark-concurrency", help="comma-separated concurrency levels of the benchmark, e.g. 1,8,32"
    )
    promote.add_argument("--wait", action="store_true", help="follow the run; exit 0 on success, 1 otherwise")
    promote.add_argument(
        "--dagster-url",
        default=os.environ.get(DAGSTER_URL_ENV_VAR) or DEFAULT_URL,
        help=f"Dagster webserver (default: ${DAGSTER_URL_ENV_VAR} or {DEFAULT_URL})",
    )

    local = commands.add_parser("local", help="the local target and services: status, stop")
    local_commands = local.add_subparsers(dest="local_command", required=True)
    local_commands.add_parser("status", help="models served on this machine, and the local services")
    stop = local_commands.add_parser(
        "stop", help="stop a model's servers and endpoint (default: all models, then the local services)"
    )
    stop.add_argument("models", nargs="*", metavar="MODEL")

    dev = commands.add_parser("dev", help="developer tools").add_subparsers(dest="dev_command", required=True)
    tiny = dev.add_parser(
        "make-tiny-model",
        help="write the offline demo model (random-weight Llama, local BPE tokenizer) in Hugging Face layout",
    )
    tiny.add_argument("directory", type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    traffic = dev.add_parser(
        "traffic",
        help="send completions to a model's local endpoint from concurrent callers until interrupted (to watch a "
        "canary promotion); prints the answers' statuses every 10 s",
    )
    traffic.add_argument("model", metavar="MODEL")
    traffic.add_argument("--callers", type=int, default=8, help="concurrent callers (default 8)")
    traffic.add_argument("--max-tokens", type=int, default=48, help="output tokens per request (default 48)")
    traffic.add_argument("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)")
    return parser


def _render_validated(catalog: Catalog, names: Sequence[str] | None) -> dict[str, list[dict[str, object]]]:
    files = render_files(catalog, names)
    validate_objects(obj for objects in files.values() for obj in objects)
    return files


def _write_files(out: Path, files: dict[str, list[dict[str, object]]], origin: str) -> None:
    """Write every file or none that is half-written: each goes to a temporary name, then is renamed."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise CatalogError([f"--out {str(out)[:200]}: not a directory; name a directory for the files"]) from None
    except OSError as error:
        raise CatalogError([f"--out {str(out)[:200]}: cannot create the directory: {error.strerror}"]) from None
    header = f"Generated by `llm-platform render` from {origin}; edit the catalog, not this file."
    for name, objects in files.items():
        with tempfile.NamedTemporaryFile("w", dir=out, prefix=f".{name}.", delete=False) as handle:
            handle.write(dump_yaml(objects, header))
        Path(handle.name).replace(out / name)


def definitions_problems(catalog: Catalog) -> list[str]:
    """What Dagster itself would refuse when the code location loads this catalog (asset keys, owners, schedules,
    partitions): ``validate`` promises the code location's checks, so it builds and validates the definitions."""
    import dagster as dg

    from llm_platform.definitions import build_definitions

    try:
        dg.Definitions.validate_loadable(build_definitions(catalog))
    except Exception as error:  # Dagster raises many kinds; each is a catalog the code location cannot load
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return [f"the Dagster code location would not load this catalog: {first[:300]}"]
    return []


def _cmd_validate(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    problems = definitions_problems(catalog)
    if problems:
        raise CatalogError([f"{args.catalog or default_catalog_path()}: {problem}" for problem in problems])
    files = _render_validated(catalog, None)
    count = sum(len(objects) for objects in files.values())
    origin = args.catalog or default_catalog_path()
    for path, message in platform_warnings(catalog.platform):
        print(f"warning: {origin}: {path}: {message}", file=sys.stderr)
    for model in catalog.models:
        for path, message in model_warnings(model):
            print(f"warning: {origin}: model '{model.name}': {path}: {message}", file=sys.stderr)
    print(
        f"{origin}: {len(catalog.models)} models valid; {count} rendered objects valid for Kubernetes "
        f"{' and '.join(KUBERNETES_VERSIONS)}"
    )
    return EXIT_OK


def _cmd_render(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    files = _render_validated(catalog, args.models or None)
    if args.out is None:
        print(dump_yaml([obj for objects in files.values() for obj in objects]), end="")
        return EXIT_OK
    _write_files(args.out, files, str(args.catalog or default_catalog_path()))
    print(f"wrote {len(files)} files to {args.out}: {', '.join(sorted(files))}", file=sys.stderr)
    return EXIT_OK


def _cmd_plan(args: argparse.Namespace) -> int:
    from llm_platform.catalog import GPU_TYPES
    from llm_platform.perfmodel import plan_model  # imports AIConfigurator's data only when planning
    from llm_platform.planning.plan import PlanAxes

    catalog = load_catalog(args.catalog)
    model = catalog.model(args.model)
    gpu_type = args.gpu_type or catalog.platform.gpu_type
    if gpu_type is not None and gpu_type not in GPU_TYPES:
        raise CatalogError([f"--gpu-type: '{gpu_type[:40]}' is not one of {', '.join(GPU_TYPES)}"])
    local_dir = args.weights_dir or model.source.path
    architecture = _hub_architecture(catalog, model) if local_dir is None and gpu_type is not None else None
    plan = plan_model(model, gpu_type, catalog.platform.gpu_quota, local_dir, PlanAxes(), architecture)
    if plan.note:
        print(plan.verdict, file=sys.stderr)
        return EXIT_FAILED
    frame = plan.frame()
    shown = frame if args.all else frame[frame["slo_concurrency"] > 0]
    if len(shown):
        print(shown.drop(columns=["note"]).to_string(index=False, float_format=lambda value: f"{value:.1f}"))
    print(plan.verdict)
    return EXIT_OK if plan.best is not None else EXIT_FAILED


def _hub_architecture(catalog: Catalog, model: ModelSpec) -> dict[str, object] | None:
    """The architecture of a hub model that AIConfigurator does not bundle, from its ``config.json`` alone (the
    catalog's hub, ``$HF_ENDPOINT`` and ``$HF_TOKEN`` as the downloads use them; the pinned revision): a plan before
    any weights are downloaded. None when the model is bundled or comes from a local path."""
    from llm_platform.defs.resources import weights_resource_from_env
    from llm_platform.perfmodel import bundled_model_configs

    repo = model.source.repo
    if repo is None or repo in bundled_model_configs():
        return None
    _, architecture = (
        weights_resource_from_env(catalog.platform).hub().read_config(model.name, repo, model.source.revision)
    )
    return architecture


def _cmd_dev(args: argparse.Namespace) -> int:
    if args.dev_command == "traffic":
        return _dev_traffic(args)
    from llm_platform.dev.tiny_model import make_tiny_model  # needs the `local` extra (torch, transformers)

    directory = make_tiny_model(args.directory, seed=args.seed)
    print(f"wrote the tiny demo model to {directory}: {', '.join(sorted(p.name for p in directory.iterdir()))}")
    return EXIT_OK


def _dev_traffic(args: argparse.Namespace) -> int:
    from llm_platform.dev.traffic import Traffic

    if args.callers < 1 or args.max_tokens < 1:
        raise CatalogError("--callers and --max-tokens must be at least 1")
    target = _local_target()
    endpoint = target.endpoint(args.model)
    if endpoint is None:
        raise PlatformError(f"model '{args.model}': not served on this machine (start it: llm-platform demo)")
    traffic = Traffic(endpoint, target.api_key or "", args.model, callers=args.callers, max_tokens=args.max_tokens,
                      max_requests=2**62)  # fmt: skip
    started = time.monotonic()
    print(f"{args.callers} callers at {endpoint} ({args.max_tokens} tokens per request); Ctrl-C stops", flush=True)
    with traffic:
        try:
            while args.seconds is None or time.monotonic() - started < args.seconds:
                time.sleep(min(10.0, args.seconds or 10.0))
                print(f"{time.monotonic() - started:6.0f} s: {dict(sorted(traffic.outcomes.items()))}", flush=True)
        except KeyboardInterrupt:
            pass
    print(f"answers: {dict(sorted(traffic.outcomes.items()))}")
    return EXIT_OK


def _dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or "dagster_home").resolve()


def _cmd_demo(args: argparse.Namespace) -> int:
    from llm_platform.defs.planning import PLAN_CHECK
    from llm_platform.demo import run_demo

    catalog_path = args.catalog or default_catalog_path()
    catalog = load_catalog(catalog_path)
    home = _dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    result = run_demo(catalog, catalog_path, model_name=args.model, home=home)
    print()
    print(f"Dagster run {result.run_id}: {'succeeded' if result.success else 'did not promote'}")
    print(f"  run in the Dagster UI: {result.run_url}")
    print(f"  weights revision: {result.revision or '-'}")
    if result.frame is not None:
        columns = ["concurrency", "output_throughput", "request_throughput", "p95_ttft_ms", "p95_itl_ms", "failed"]
        print("  smoke benchmark (vllm bench serve):")
        print("    " + result.frame[columns].round(1).to_string(index=False).replace("\n", "\n    "))
    if result.plan:
        print(f"  serving plan: {result.plan}")
    slo_checks = {name: ok for name, ok in result.checks.items() if name != PLAN_CHECK}
    if slo_checks:
        print("  SLO checks: " + ", ".join(f"{name} {'passed' if ok else 'FAILED'}" for name, ok in slo_checks.items()))
    if result.failure:
        print(f"  failure: {result.failure}")
    if result.endpoint:
        key_file = home / "api-key"
        print(f"  endpoint: {result.endpoint}  (every /v1/ call needs the API key in {key_file}; try:")
        print(
            f'    curl {result.endpoint}/v1/completions -H "Authorization: Bearer $(cat {key_file})" '
            f'-H \'Content-Type: application/json\' -d \'{{"model": "{args.model}", "prompt": "Hello", '
            f'"max_tokens": 16}}\')'
        )
    for name, url in result.services.items():
        print(f"  {name}: {url}")
    print("  stop the model and the services: make stop  (or .venv/bin/llm-platform local stop)")
    return EXIT_OK if result.success else EXIT_FAILED


def _benchmark_options(prompts: int | None, concurrency: str | None) -> dict[str, object]:
    """The smoke benchmark's run config from ``--benchmark-prompts`` / ``--benchmark-concurrency``."""
    options: dict[str, object] = {}
    if prompts is not None:
        if prompts < 1:
            raise CatalogError(["--benchmark-prompts: must be at least 1"])
        options["prompts_per_level"] = prompts
    if concurrency is not None:
        try:
            levels = sorted({int(level) for level in concurrency.split(",")})
        except ValueError:
            levels = []
        if not levels or levels[0] < 1:
            raise CatalogError([f"--benchmark-concurrency {concurrency!r}: expected positive integers, e.g. 1,8,32"])
        options["concurrency_levels"] = levels
    return options


def _cmd_promote(args: argparse.Namespace) -> int:
    from llm_platform.dagster_api import DagsterApi, run_url
    from llm_platform.defs.jobs import promotion_request

    catalog = load_catalog(args.catalog)
    model = catalog.model(args.model)
    # Refused here, before anything is submitted: the same validation the run applies.
    patch = ModelPatch.parse(model, parse_assignments(args.assignments), origin="--set")
    patch.apply(model, origin="--set", fleet=catalog)  # the GPU quota, as the catalog itself must meet it
    overrides = patch.as_overrides()
    benchmark = _benchmark_options(args.benchmark_prompts, args.benchmark_concurrency)
    job, run_config = promotion_request(
        revision=args.revision, overrides=overrides, reason=args.reason, benchmark=benchmark
    )
    api = DagsterApi(args.dagster_url)
    run_id = api.submit(job, model.name, run_config, tags={"llm-platform/trigger": "cli"})
    print(f"submitted {job} run {run_id} for '{model.name}': {run_url(api.base_url, run_id)}", flush=True)
    if not args.wait:
        return EXIT_OK
    outcome = api.follow(run_id, log=lambda line: print(line, flush=True))
    if outcome.succeeded:
        print(f"run {run_id} succeeded: '{model.name}' is promoted")
        return EXIT_OK
    reason = outcome.failures[0].splitlines()[0] if outcome.failures else "see the run in the UI"
    print(f"run {run_id} ended {outcome.status}: {reason}", file=sys.stderr)
    return EXIT_FAILED


def _local_target() -> LocalServers:
    from llm_platform.defs.resources import local_target_from_env

    os.environ.setdefault("DAGSTER_HOME", str(_dagster_home()))
    return local_target_from_env().target()


def _cmd_local(args: argparse.Namespace) -> int:
    from llm_platform.services import LocalServices

    target = _local_target()
    services = LocalServices(_dagster_home())
    if args.local_command == "status":
        for record in services.running():
            print(f"service {record.name}: {record.url} (pid {record.pid}, log {record.log_path})")
        models = target.models()
        if not models:
            print("no model is served by the local target")
        for name in models:
            status = target.status(name)
            state = "healthy" if status.healthy else "not serving"
            print(
                f"{name}: {state}; endpoint {status.endpoint or '-'}; servers: "
                + (", ".join(f"{s.fingerprint} (pid {s.pid}, port {s.port})" for s in status.servers) or "none")
            )
        return EXIT_OK
    for name in args.models or target.models():
        target.stop(name)
        print(f"stopped {name}")
    if not args.models:
        for record in reversed(services.running()):
            services.stop(record.name)
            print(f"stopped service {record.name}")
    return EXIT_OK


_COMMANDS = {
    "validate": _cmd_validate,
    "render": _cmd_render,
    "plan": _cmd_plan,
    "dev": _cmd_dev,
    "demo": _cmd_demo,
    "promote": _cmd_promote,
    "local": _cmd_local,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except _BAD_INPUT as exc:
        print(f"error: {exc}".replace("\n", "\nerror: "), file=sys.stderr)
        return EXIT_BAD_INPUT
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
