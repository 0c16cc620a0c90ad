"""``torchyard endpoint ...``: online endpoints (Azure ML v2): create, deploy, update traffic, invoke."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from torchyard.cli.common import add_output, emit, example, table
from torchyard.errors import SpecError


def _workspace(args: argparse.Namespace, create: bool = False) -> Any:
    """The workspace (a folder, or a team server: --workspace URL, TORCHYARD_SERVER, a login)."""
    from torchyard.cli.common import workspace  # noqa: PLC0415

    return workspace(args, create=create)


def _yaml(path: str, field: str) -> dict[str, Any]:
    import yaml  # noqa: PLC0415

    try:
        with open(path) as fh:
            doc = yaml.safe_load(fh)
    except OSError as err:
        raise SpecError(field, f"cannot read {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise SpecError(field, f"{path} is not YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise SpecError(field, f"{path} must hold a mapping")
    return doc


def register(subparsers: Any) -> None:
    """Add ``endpoint`` and its subcommands to the top-level parser."""
    e = subparsers.add_parser(
        "endpoint",
        help="online endpoints: deployments behind one address, traffic split, mirroring",
        description="Azure ML v2's online endpoints, locally: each deployment is a local service; "
        "the endpoint routes by traffic weights or the torchyard-deployment header.",
    )
    e.set_defaults(func=lambda _a: (e.print_help(), 2)[1])
    sub = e.add_subparsers(dest="endpoint_command", metavar="SUBCOMMAND")

    c = sub.add_parser("create", help="create an endpoint (NAME, or -f endpoint.yml in Azure v2's shape)")
    c.add_argument("name", nargs="?", help="endpoint name")
    c.add_argument("-f", "--file", help="an Azure v2 online endpoint YAML (name, auth_mode)")
    c.add_argument("--port", type=int, help="port (default: any free one)")
    c.add_argument("--host", default="127.0.0.1", help="address (non-loopback needs --auth)")
    c.add_argument("--auth", action="store_true", help="issue keys, checked as Authorization: Bearer KEY")
    c.add_argument("--max-request-bytes", type=int, default=16 * 1024 * 1024,
                   help="the router answers a larger request body 413 (default 16 MiB)")
    c.set_defaults(func=cmd_create)
    example(c, "torchyard endpoint create digits --auth", "torchyard endpoint create -f endpoint.yml")

    d = sub.add_parser("deploy", help="add or replace a deployment (or -f deployment.yml in Azure v2's shape)")
    d.add_argument("name", nargs="?", help="endpoint name")
    d.add_argument("-f", "--file", help="an Azure v2 online deployment YAML")
    d.add_argument("--deployment", help="deployment name, e.g. blue")
    d.add_argument("--model", action="append", default=[], help="NAME:VERSION (repeatable)")
    d.add_argument("--score", default="score.py", help="scoring script, relative to --source-dir")
    d.add_argument("--source-dir", default=".", help="folder with the scoring code (default: .)")
    d.add_argument("--workers", type=int, default=1, help="worker processes")
    d.add_argument("--max-batch-size", type=int, default=1, help="dynamic batching (typed API)")
    d.add_argument("--max-batch-delay-ms", type=float, default=2.0, help="longest wait for a batch to fill")
    d.add_argument("--max-concurrent-requests", type=int, default=256, help="admitted per worker; more get 429")
    d.add_argument("--request-timeout-ms", type=int, default=5000, help="504 after this")
    d.add_argument("--max-request-bytes", type=int, default=16 * 1024 * 1024,
                   help="a larger request body is answered 413 (default 16 MiB)")
    d.set_defaults(func=cmd_deploy)
    example(d, "torchyard endpoint deploy digits --deployment blue --model digits:2 --score score.py --source-dir serve")

    u = sub.add_parser("update", help="set the traffic split and mirroring")
    u.add_argument("name", help="endpoint name")
    u.add_argument("--traffic", required=True, help="e.g. blue=90,green=10 (sums to 100)")
    u.add_argument("--mirror", help="e.g. green=10: copy that percent of live requests to a shadow deployment")
    u.set_defaults(func=cmd_update)
    example(u, "torchyard endpoint update digits --traffic blue=90,green=10 --mirror green=10")

    i = sub.add_parser("invoke", help="send one request and print the answer")
    i.add_argument("name", help="endpoint name")
    i.add_argument("--request-file", required=True, help="a JSON file: the request body")
    i.add_argument("--deployment", help="pin this deployment")
    i.set_defaults(func=cmd_invoke)
    example(i, "torchyard endpoint invoke digits --request-file request.json --deployment green")

    lg = sub.add_parser("logs", help="the router's log, or one deployment's")
    lg.add_argument("name", help="endpoint name")
    lg.add_argument("--deployment", help="a deployment's service logs")
    lg.set_defaults(func=cmd_logs)
    example(lg, "torchyard endpoint logs digits --deployment blue")

    ls = sub.add_parser("list", help="endpoints", description="Endpoints: name, state, scoring URI, traffic. "
                        "-o json gives a list of what `endpoint show` prints.")
    add_output(ls)
    ls.set_defaults(func=cmd_list)
    example(ls, "torchyard endpoint list -o json")

    sh = sub.add_parser("show", help="an endpoint: address, state, traffic, deployments")
    sh.add_argument("name", help="endpoint name")
    add_output(sh, default="json")
    sh.set_defaults(func=cmd_show)
    example(sh, "torchyard endpoint show digits")

    rm = sub.add_parser("delete", help="delete an endpoint and its deployments (or one --deployment)")
    rm.add_argument("name", help="endpoint name")
    rm.add_argument("--deployment", help="delete only this deployment (it must take no traffic)")
    rm.set_defaults(func=cmd_delete)
    example(rm, "torchyard endpoint delete digits --deployment green")


def cmd_create(args: argparse.Namespace) -> int:
    from torchyard.models.endpoint import Endpoint  # noqa: PLC0415

    name, auth = args.name, "key" if args.auth else None
    if args.file:
        doc = _yaml(args.file, "file")
        name = name or doc.get("name")
        auth = {"key": "key", "aml_token": "key", None: auth}.get(doc.get("auth_mode"), doc.get("auth_mode"))
    if not name:
        raise SpecError("name", "give the endpoint's name (or -f endpoint.yml with name:)")
    endpoint = Endpoint.create(_workspace(args, create=True), name, auth_mode=auth, port=args.port, host=args.host,
                               max_request_bytes=args.max_request_bytes)
    print(endpoint.scoring_uri)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from torchyard.models.endpoint import Endpoint  # noqa: PLC0415
    from torchyard.models.webservice import InferenceConfig, LocalWebservice  # noqa: PLC0415

    name, deployment, models = args.name, args.deployment, list(args.model)
    score, source = args.score, args.source_dir
    workers, timeout_ms, concurrent = args.workers, args.request_timeout_ms, args.max_concurrent_requests
    max_bytes = args.max_request_bytes
    if args.file:
        doc = _yaml(args.file, "file")
        base = os.path.dirname(os.path.abspath(args.file))
        name = name or doc.get("endpoint_name")
        deployment = deployment or doc.get("name")
        model = doc.get("model")
        if isinstance(model, str):
            models = models or [model.removeprefix("azureml:").replace("@latest", "")]
        code = doc.get("code_configuration") or {}
        if code.get("code"):
            source = os.path.join(base, str(code["code"]))
        score = str(code.get("scoring_script", score))
        workers = int(doc.get("instance_count", workers))
        settings = doc.get("request_settings") or {}
        timeout_ms = int(settings.get("request_timeout_ms", timeout_ms))
        concurrent = int(settings.get("max_concurrent_requests_per_instance", concurrent))
        max_bytes = int(settings.get("max_request_bytes", max_bytes))
    if not name:
        raise SpecError("name", "give the endpoint's name")
    if not deployment:
        raise SpecError("deployment", "give --deployment NAME")
    if not models:
        raise SpecError("model", "give --model NAME:VERSION")
    config = LocalWebservice.deploy_configuration(
        workers=workers, max_batch_size=args.max_batch_size, max_batch_delay_ms=args.max_batch_delay_ms,
        max_concurrent_requests=concurrent, request_timeout_ms=timeout_ms, max_request_bytes=max_bytes,
    )
    endpoint = Endpoint(_workspace(args), name)
    endpoint.deploy(deployment, models, InferenceConfig(entry_script=score, source_directory=source), config)
    print(json.dumps({"deployment": deployment, "traffic": endpoint.traffic}))
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from torchyard.models.endpoint import Endpoint, parse_traffic  # noqa: PLC0415

    endpoint = Endpoint(_workspace(args), args.name)
    endpoint.set_traffic(parse_traffic(args.traffic, "traffic"),
                         parse_traffic(args.mirror, "mirror") if args.mirror else None)
    print(json.dumps({"traffic": endpoint.traffic, "mirror": endpoint.mirror_traffic}))
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    from torchyard.models.endpoint import Endpoint  # noqa: PLC0415

    try:
        with open(args.request_file) as fh:
            body = fh.read()
    except OSError as err:
        raise SpecError("request-file", f"cannot read {args.request_file}: {err.strerror}") from None
    answer = Endpoint(_workspace(args), args.name).invoke(body, deployment=args.deployment)
    print(json.dumps(answer))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from torchyard.models.endpoint import Endpoint  # noqa: PLC0415

    print(Endpoint(_workspace(args), args.name).get_logs(args.deployment), end="")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from torchyard.models.endpoint import Endpoint  # noqa: PLC0415

    found = Endpoint.list(_workspace(args))

    def render() -> None:
        if not found:
            print("no endpoints")
            return
        table(None, ["name", "state", "scoring uri", "traffic"],
              [[e.name, e.state, e.scoring_uri or "-",
                ", ".join(f"{k}={v}" for k, v in e.traffic.items()) or "-"] for e in found])

    emit(args, lambda: [e.show() for e in found], render)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from torchyard.models.endpoint import Endpoint  # noqa: PLC0415

    doc = Endpoint(_workspace(args), args.name).show()

    def render() -> None:
        for key, value in doc.items():
            print(f"{key:17} {json.dumps(value) if isinstance(value, dict | list) else value}")

    emit(args, doc, render)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from torchyard.models.endpoint import Endpoint  # noqa: PLC0415

    endpoint = Endpoint(_workspace(args), args.name)
    if args.deployment:
        endpoint.delete_deployment(args.deployment)
    else:
        endpoint.delete()
    return 0
