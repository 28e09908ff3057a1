"""Stopping what the workbench started: a process and everything below it."""

from __future__ import annotations

import os
import signal

import psutil


def kill_process_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Kill a process, its children and their process groups (kernels run in their own session)."""
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    groups = set()
    for proc in procs:
        try:
            groups.add(os.getpgid(proc.pid))
        except ProcessLookupError:
            pass
    for group in groups:
        if group != os.getpgid(0):
            try:
                os.killpg(group, sig)
            except (ProcessLookupError, PermissionError):
                pass
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)
