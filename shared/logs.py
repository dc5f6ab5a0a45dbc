"""Log lines that say where they come from: worker, topic/partition@offset, event id and shop.

Context is bound with `context(...)` around the work it describes (a batch, one record being
isolated, a timed job) and added to every record logged inside it by `ContextFilter`, so an
operator reading "could not apply" also reads which record, which event and which shop.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

_CONTEXT: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "memberflow_log_context", default=())


@contextlib.contextmanager
def context(**fields: object) -> Iterator[None]:
    """Bind fields (None values are left out) to every log record made inside the block."""
    bound = dict(_CONTEXT.get())
    bound.update({k: str(v) for k, v in fields.items() if v is not None})
    token = _CONTEXT.set(tuple(bound.items()))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current() -> dict[str, str]:
    return dict(_CONTEXT.get())


class ContextFilter(logging.Filter):
    """Appends the bound context to the message: `... [worker=tiering at=orders/2@1200]`."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _CONTEXT.get()
        record.context = (" [" + " ".join(f"{k}={v}" for k, v in bound) + "]") if bound else ""
        return True


def configure(verbose: bool) -> None:
    """Logging for the command line: INFO with -v, else WARNING; context on every line."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
