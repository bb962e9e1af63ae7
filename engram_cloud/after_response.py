"""Work a request leaves for after its response has been sent.

Some writes only describe requests: when an API key was last used, how often memories were
read. They fall due on whichever request happens to come at the time, which then waits for a
write transaction it did not ask for. Deferred, they run when the response is closed: a WSGI
server closes it after sending its bytes, and that fires Django's `request_finished`, in the
same worker, before it takes its next request. The client has its answer by then.

Outside a request (commands, tasks, a service called directly) deferred work runs at once. Work
a request deferred whose response was never closed runs when the thread's next request starts.
A failure is logged; it never reaches a client.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

from django.core.signals import request_finished, request_started

logger = logging.getLogger(__name__)

_deferred: contextvars.ContextVar[list[Callable[[], None]] | None] = contextvars.ContextVar(
    "engram_after_response", default=None
)


def defer(task: Callable[[], None]) -> None:
    """Run `task` once the current response has been sent, or now outside a request."""
    tasks = _deferred.get()
    if tasks is None:
        _run([task])
    else:
        tasks.append(task)


def _run(tasks: list[Callable[[], None]]) -> None:
    for task in tasks:
        try:
            task()
        except Exception:
            logger.exception("work deferred until after a response failed")


def _request_started(**_: Any) -> None:
    leftover = _deferred.get()
    _deferred.set([])
    if leftover:
        _run(leftover)


def _request_finished(**_: Any) -> None:
    tasks = _deferred.get()
    _deferred.set(None)
    if tasks:
        _run(tasks)


def connect_signals() -> None:
    request_started.connect(_request_started, dispatch_uid="engram.after_response.started")
    request_finished.connect(_request_finished, dispatch_uid="engram.after_response.finished")
