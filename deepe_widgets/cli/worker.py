"""`deepe worker` (in the foreground) and `deepe worker stop`."""

from __future__ import annotations

from .workspace import prepare


def cmd_worker(args) -> int:
    from .. import worker

    prepare()
    return worker.run(args)


def cmd_worker_stop(args) -> int:
    from ..worker import stop_workers

    asked = stop_workers(now=args.now)
    if not asked:
        print("no worker is running on this host")
        return 0
    how = "at once" if args.now else "after the running job's checkpoint (it goes back to the queue)"
    print(f"asked {len(asked)} worker(s) to stop {how}: pid {', '.join(map(str, asked))}")
    return 0


def _add_worker_flags(parser) -> None:
    from .. import worker

    worker.add_arguments(parser)


def add_arguments(sub, verb) -> None:
    """`deepe worker [stop]`; the worker's own flags come from `worker.add_arguments`, once `deepe worker`
    is what runs (importing the worker costs every other verb a tenth of a second or more)."""
    p = verb(sub, "worker", cmd_worker, "run a worker in the foreground (SIGTERM: stop after a checkpoint)")
    p.add_later = _add_worker_flags
    worker_sub = p.add_subparsers(dest="verb")
    p = verb(worker_sub, "stop", cmd_worker_stop, "stop this host's workers: the running job saves a "
             "checkpoint and goes back to the queue")
    p.add_argument("--now", action="store_true", help="hand the running job back without the checkpoint")
