"""Log lines: text with the request id, or one JSON object a line (--log-format json)."""

from __future__ import annotations

import logging
import sys

import msgspec

from llama_box_core.settings import Settings
from llama_box_server.middleware import RequestIdFilter


def configure_logging(settings: Settings) -> None:
    level = logging.DEBUG if settings.verbose or settings.log_verbosity > 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    # On the handler, not a logger, so records of every logger get the request id.
    handler.addFilter(RequestIdFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "request_id": record.request_id,  # set by RequestIdFilter
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()
