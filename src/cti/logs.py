"""structlog set-up: a human console on a TTY, JSON lines otherwise; secrets are redacted.

Everything the process writes to stderr goes through here, in the same format and through the
same redaction: our own structlog calls, the standard `logging` records of every library
(aiohttp, SQLAlchemy, asyncpg, alembic, asyncio's "exception was never retrieved" reports),
Python warnings, and exceptions that escape a thread.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = frozenset({"secret", "password", "passwd", "token", "authorization", "cookie"})
_MASK = "********"
# Secrets inside free text (a library's message, an exception's text): a URL's password, a
# bearer token, `token=`/`password=` pairs, the session cookie.
_PATTERNS = (
    (re.compile(r"(://[^:/@\s]*):([^@/\s]+)@"), r"\1:" + _MASK + "@"),
    (re.compile(r"(?i)\b(bearer\s+)[\w\-.~+/=]+"), r"\1" + _MASK),
    (re.compile(r"(?i)\b(token|password|passwd|secret|cti_session)=([^&\s;,'\"]+)"), r"\1=" + _MASK),
)
# Libraries whose INFO lines are chatter (every SQL statement, each migration step).
_QUIET = {"sqlalchemy": logging.WARNING, "alembic": logging.WARNING, "aiohttp.access": logging.WARNING}


class SecretRedactor:
    """Masks secret-named fields and any known secret value wherever it appears in a log line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = [s for s in secrets if s]

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, _MASK)
            for pattern, replacement in _PATTERNS:
                value = pattern.sub(replacement, value)
            return value
        if isinstance(value, dict):
            return {
                k: (_MASK if str(k).lower() in _SECRET_KEYS else self._scrub(v)) for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return type(value)(self._scrub(v) for v in value)
        return value

    def __call__(
        self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if key.lower() in _SECRET_KEYS:
                event_dict[key] = _MASK
            else:
                event_dict[key] = self._scrub(event_dict[key])
        return event_dict


class _StructlogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one root handler cti installs (a second configure_logging replaces it)."""


def configure_logging(level: str = "info", fmt: str = "auto", secrets: Iterable[str] = ()) -> None:
    """Configure structlog and the standard library's logging once for the process."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    redactor = SecretRedactor(secrets)
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(numeric, renderer, redactor, timestamper)


def _route_stdlib_logging(numeric: int, renderer: Any, redactor: SecretRedactor, timestamper: Any) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, timestamper],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
    )
    handler = _StructlogHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StructlogHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name, quiet in _QUIET.items():
        logging.getLogger(name).setLevel(max(quiet, numeric))
    logging.captureWarnings(True)  # warnings.warn(...) → the "py.warnings" logger
    threading.excepthook = _thread_excepthook


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    structlog.get_logger("threading").error(
        "exception in a thread",
        thread=getattr(args.thread, "name", None),
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
