"""The operator's subcommands of `llmservice`: `crd`, `render` and `operator`.

`crd` and `render` need no cluster and import no kopf: they print what the operator would
install or create, for GitOps review and offline checks.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

import yaml

from llmservice.operator.crd import KIND, apply_defaults, crd_yaml, openapi_schema
from llmservice.operator.settings import Settings


class _NoAliasDumper(yaml.SafeDumper):
    """Prints shared sub-objects in full instead of as YAML anchors (&id001)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml_stream(documents: list[dict[str, Any]]) -> str:
    return yaml.dump_all(documents, Dumper=_NoAliasDumper, sort_keys=False, width=100)


def register(subparsers: Any) -> None:
    crd = subparsers.add_parser("crd", help="print the LLMService CustomResourceDefinition (YAML)")
    crd.set_defaults(handler=_print_crd)

    render = subparsers.add_parser(
        "render", help="print the objects the operator would create for LLMService manifests"
    )
    render.add_argument(
        "-f", "--filename", required=True, action="append", help="YAML file(s), or - for stdin"
    )
    render.add_argument(
        "-n", "--namespace", default="default", help="namespace of resources without one"
    )
    render.add_argument(
        "--default-image", help="runtime image when spec.image is unset (LLMSERVICE_DEFAULT_IMAGE)"
    )
    render.set_defaults(handler=_render)

    op = subparsers.add_parser("operator", help="run the Kubernetes operator (kopf)")
    op.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="serve only this namespace (repeatable; default: LLMSERVICE_WATCH_NAMESPACES, "
        "else the whole cluster)",
    )
    op.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="kopf's liveness endpoint (empty to disable)",
    )
    op.add_argument(
        "--peering",
        default=None,
        help="kopf peering name: with several replicas, the one of highest priority works and "
        "the others stand by (default: standalone)",
    )
    op.add_argument("--priority", type=int, default=None, help="peering priority (default: random)")
    op.add_argument("--verbose", action="store_true", help="debug logging")
    op.set_defaults(handler=_run_operator)


def _print_crd(args: argparse.Namespace) -> int:
    sys.stdout.write(crd_yaml())
    return 0


def _read_documents(filename: str) -> list[Any]:
    text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def _render(args: argparse.Namespace) -> int:
    from llmservice.operator.builders import build_all
    from llmservice.operator.resource import InvalidLLMService, parse_llmservice

    settings = Settings.from_env()
    if args.default_image:
        settings = Settings(**{**settings.__dict__, "default_image": args.default_image})
    schema = openapi_schema()
    manifests: list[dict[str, Any]] = []
    for filename in args.filename:
        try:
            documents = _read_documents(filename)
        except (OSError, yaml.YAMLError) as error:
            print(f"error: {filename}: {error}", file=sys.stderr)
            return 1
        for doc in documents:
            if not isinstance(doc, dict) or doc.get("kind") != KIND:
                continue  # other objects in the same file (Secrets, claims) are not ours
            try:
                # The API server fills in the CRD's defaults before the operator sees the object.
                svc = parse_llmservice(apply_defaults(doc, schema), args.namespace)
            except InvalidLLMService as error:
                name = (doc.get("metadata") or {}).get("name", "?")
                print(f"error: {filename}: LLMService {name}: {error}", file=sys.stderr)
                return 1
            manifests.extend(build_all(svc, settings))
    sys.stdout.write(dump_yaml_stream(manifests))
    return 0


def _run_operator(args: argparse.Namespace) -> int:
    import kopf

    import llmservice.operator.handlers  # noqa: F401  (registers the handlers)

    namespaces = args.namespace or list(Settings.from_env().watch_namespaces)
    priority = args.priority
    if args.peering and priority is None:
        # Peers of equal priority all pause; a random one makes exactly one replica active.
        priority = random.SystemRandom().randint(1, 2**31 - 1)
    kopf.configure(verbose=args.verbose)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=priority or 0,
        liveness_endpoint=args.liveness or None,
    )
    return 0
