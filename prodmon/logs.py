"""Structured JSON logs for the server's own logging: one object per line."""

import datetime as dt
import json
import logging

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "@timestamp": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(),
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "message": record.getMessage(),
            "process.pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                body[key] = (
                    value if isinstance(value, str | int | float | bool | None) else repr(value)
                )
        if record.exc_info:
            body["error.stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(body, ensure_ascii=False)
