"""One way to keep secrets out of anything a person or a log file reads: CLI output, log records and
exception messages. Masked are passwords inside URLs (`mongodb://user:***@host`), secret query
parameters (`?password=***`), every `SecretStr` setting, and any value whose setting or variable
name says it is a secret (`*_PASSWORD`, `*_SECRET*`, `*_TOKEN`, `*API_KEY`, ...), wherever it appears.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Iterable
from itertools import pairwise
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from pydantic import SecretStr

MASK = "***"
# scheme://user:password@ — the password ends at the last "@" before the host (passwords may hold "@"
# only percent-encoded, as RFC 3986 requires).
URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<password>[^/?#\s]*)@", re.I)
# Words of a variable or field name (split at "_", "-", ".") that make its value a secret.
SECRET_WORDS = {"password", "passwd", "pwd", "passphrase", "secret", "token", "apikey", "fernet", "credentials"}
SECRET_WORD_PAIRS = {("api", "key"), ("private", "key"), ("access", "key"), ("session", "key"), ("auth", "token")}
SECRET_PARAMETER = re.compile(r"(?P<head>[?&;](?:[\w.-]*(?:password|secret|token|api[_-]?key|sig|signature)"
                              r"[\w.-]*)=)(?P<value>[^&;#\s]+)", re.I)
# Values shorter than this are not searched for verbatim: masking every "a" would garble the text.
MIN_SECRET_LENGTH = 4


def is_secret_name(name: str) -> bool:
    """MONGO_ROOT_PASSWORD, AWS_SECRET_ACCESS_KEY, OPENAI_API_KEY: yes; TWIN_CHUNK_TOKENS: no."""
    words = [word for word in re.split(r"[_.\-]+", name.lower()) if word]
    return bool(SECRET_WORDS.intersection(words)) or any(pair in SECRET_WORD_PAIRS for pair in pairwise(words))


def url_passwords(text: str) -> list[str]:
    """The passwords written into the URLs in `text` (raw and percent-decoded)."""
    found = []
    for match in URL_PASSWORD.finditer(text):
        password = match.group("password")
        if password:
            found += [password, unquote(password)]
    return found


class SecretRegistry:
    """Secret values known to this process, masked verbatim wherever they show up."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, *values: str | SecretStr | None) -> None:
        for value in values:
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if text and len(text) >= MIN_SECRET_LENGTH:
                self._values.add(text)

    def add_from_environment(self, environ: dict[str, str] | None = None) -> None:
        for name, value in (os.environ if environ is None else environ).items():
            if is_secret_name(name):
                self.add(value)
            self.add(*url_passwords(value))

    def add_from_settings(self, settings: Any) -> None:
        for name in type(settings).model_fields:
            value = getattr(settings, name)
            if isinstance(value, SecretStr) or (is_secret_name(name) and isinstance(value, str)):
                self.add(value)
            elif isinstance(value, str):
                self.add(*url_passwords(value))

    def values(self) -> Iterable[str]:
        # Longest first, so that a secret containing another is masked whole.
        return sorted(self._values, key=len, reverse=True)

    def clear(self) -> None:
        self._values.clear()


SECRETS = SecretRegistry()


def register_secret(*values: str | SecretStr | None) -> None:
    """Mask these values from now on, here and, inside an Airflow task, in the task's log too."""
    SECRETS.add(*values)
    if "airflow.sdk" in sys.modules:  # only when Airflow runs us: never import it for this
        try:
            from airflow.sdk.log import mask_secret
        except ImportError:
            return
        for value in values:
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if text and len(text) >= MIN_SECRET_LENGTH:
                mask_secret(text)


def mask(text: str, secrets: SecretRegistry | None = None) -> str:
    """`text` with every password in a URL, secret query parameter and known secret value masked."""
    text = URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    text = SECRET_PARAMETER.sub(lambda m: f"{m.group('head')}{MASK}", text)
    for value in (secrets or SECRETS).values():
        text = text.replace(value, MASK)
    return text


def masked_value(name: str, value: object) -> str:
    """How a setting or variable is shown: secrets by name or type as MASK (empty stays empty)."""
    if value is None:
        return ""
    if isinstance(value, SecretStr) or is_secret_name(name):
        raw = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        return MASK if raw else ""
    return mask(str(value))


class MaskingFilter(logging.Filter):
    """Masks each record's message and its exception text before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is still logged, as logging itself would
            return True
        record.msg, record.args = mask(message), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = mask("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
            record.exc_info = None
        return True


_FILTER = MaskingFilter()


def install(settings: Any = None) -> None:
    """Mask secrets in every log record of this process and in uncaught exceptions' tracebacks.

    A record factory rather than a handler filter: it also covers handlers added later (Airflow,
    GX, uvicorn configure their own) and records of loggers that do not propagate.
    """
    SECRETS.add_from_environment()
    if settings is not None:
        SECRETS.add_from_settings(settings)
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "twin_masking", False):
        def masking_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = factory(*args, **kwargs)
            _FILTER.filter(record)
            return record

        masking_factory.twin_masking = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(masking_factory)
    sys.excepthook = _masking_excepthook


def _masking_excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    sys.stderr.write(mask("".join(traceback.format_exception(kind, exc, tb))))
