"""Live views: one poller per view on the kernel's loop (DESIGN.md's live charts), polls that survive a
lost database, blocking work run in a thread, and the mixin the polling views share."""

from __future__ import annotations

import asyncio
import logging

from .common import close_tree
from .feedback import ConnectionNote

RETRY_FIRST, RETRY_MAX = 1.0, 10.0  # seconds between tries while the database does not answer: 1, 2, 4, 8, 10, 10 …

log = logging.getLogger("deepe.ui")


def start_poller(coro_factory):
    """Run `coro_factory()` as a task on the kernel's running loop; None outside one (tests poll by hand)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            return None
        if not loop.is_running():
            return None
    return loop.create_task(coro_factory())


async def poll_forever(poll_once, note: ConnectionNote, seconds: float) -> None:
    """Await `poll_once()` every `seconds` until it returns True. A failed poll shows "reconnecting…"
    in `note` and is retried after 1 s, 2 s, 4 s … at most 10 s; the note goes once a poll succeeds."""
    retry = None  # seconds to the next try while polls fail
    while True:
        await asyncio.sleep(retry or seconds)
        try:
            done = await poll_once()
        except Exception as exc:  # e.g. the database is away: the view says so and keeps trying
            retry = min(retry * 2, RETRY_MAX) if retry else RETRY_FIRST
            log.warning("live view: poll failed (%s: %s); next try in %g s", type(exc).__name__, exc, retry)
            note.show(f"reconnecting… (next try in {retry:g} s)", "warn")
            continue
        retry = None
        if note.value:
            note.clear()
        if done:
            return


def run_in_background(work, done, failed) -> asyncio.Task | None:
    """Run the blocking `work()` in a thread, then `done(result)` (or `failed(exc)`) on the kernel's
    loop, where widgets may be touched; the page stays live meanwhile. Outside a running loop
    (a plain Python test) it all runs here and now, and None is returned."""

    async def run():
        try:
            result = await asyncio.to_thread(work)
        except Exception as exc:
            failed(exc)
        else:
            done(result)

    task = start_poller(run)
    if task is None:
        try:
            result = work()
        except Exception as exc:
            failed(exc)
        else:
            done(result)
    return task


class PollingView:
    """A view that follows the database live: mixed in before its widget class
    (`class TrainingList(PollingView, w.VBox)`).

    The view gives `poll_seconds`, a `connection` (a ConnectionNote placed in its page) and
    `async poll_once()`, which reads in a thread, updates widgets on the loop and returns True once
    nothing more can change; it calls `start_polling()` once it has drawn itself. `close()` stops the
    poller and closes every widget of the view."""

    poll_seconds = 2.0
    connection: ConnectionNote
    _task: asyncio.Task | None = None  # the poller; None outside a running loop (tests call poll_once)

    async def poll_once(self) -> bool:
        """One poll: True once the view has nothing more to follow."""
        raise NotImplementedError

    def start_polling(self) -> None:
        """Poll every `poll_seconds` on the kernel's loop, saying "reconnecting…" in `connection` while
        polls fail; nothing starts outside a running loop."""
        self._task = start_poller(lambda: poll_forever(self.poll_once, self.connection, self.poll_seconds))

    def close(self) -> None:
        """Stop polling and close every widget of the view."""
        if self._task is not None:
            self._task.cancel()
        close_tree(self)
