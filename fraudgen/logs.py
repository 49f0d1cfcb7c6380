"""structlog JSON logging with secrets and identifiers masked before anything is rendered."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

#: keys whose values are never written in clear
SECRET_KEYS = re.compile(r"(password|secret|token|api[_-]?key|hmac|authorization|dsn|credential)", re.I)
#: keys holding identifiers that are masked to a short prefix
ID_KEYS = frozenset({"user_id", "account_id", "card_id", "device_id", "ip_address", "counterparty_id"})
_DSN_PASSWORD = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")


def mask_dsn(text: str) -> str:
    """``postgresql://u:secret@host`` → ``postgresql://u:***@host``."""
    return _DSN_PASSWORD.sub(r"\1***\3", text)


def mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key == "event":
            event[key] = mask_dsn(str(value))
        elif SECRET_KEYS.search(key):
            event[key] = "***"
        elif key in ID_KEYS and isinstance(value, str):
            event[key] = value[:3] + "***"
        elif isinstance(value, str):
            event[key] = mask_dsn(value)
    return event


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is *now* (tests and daemons swap it), never a closed stream."""

    def write(self, text: str) -> int:
        try:
            return sys.stderr.write(text)
        except (ValueError, OSError):  # closed or broken stream: logging must never fail a request
            return 0

    def flush(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            sys.stderr.flush()


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr; idempotent."""
    numeric = logging.getLevelName(level.upper())
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            mask_secrets,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
