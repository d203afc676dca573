"""Credentials out of text and URLs: the one redaction of keylib.

Every text that leaves keylib (rows, run manifests, log lines, reports, exception
messages) goes through :func:`redact`; a URL that is kept, as a track's ``uri`` or
``track_id``, goes through :func:`strip_credentials` first. This module imports only the
standard library, so serving code can use it without pandas or boto3.

What counts as a credential:

* the values of this process's AWS credential variables (``AWS_SECRET_ACCESS_KEY``, ...);
* URL user-info (``https://user:password@host``);
* anything shaped like an AWS access key id (``AKIA...``, ``ASIA...``);
* the value of a credential parameter, ``name=value`` (in a query string or free text) or
  ``"name": "value"`` (JSON, Python reprs), whatever the case of ``name``: every
  ``X-Amz-*`` and ``X-Goog-*`` parameter (presigned S3 and GCS URLs), ``AWSAccessKeyId``,
  ``token``, ``signature``, ``sig`` (Azure SAS), ``key``, ``access_token``, ``password``,
  ``secret``, ``policy`` and ``key-pair-id`` (CloudFront), and any name ending in
  ``token``, ``secret``, ``signature``, ``password``, ``_key`` or ``-key``.
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import unquote_plus, urlsplit, urlunsplit

__all__ = ["redact", "strip_credentials", "is_credential_parameter", "RedactingFilter"]

MASK = "***"

_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}\b")

_SECRET_NAMES = frozenset({
    "token", "signature", "sig", "key", "access_token", "password", "passwd", "pwd", "secret",
    "awsaccesskeyid", "apikey", "policy", "key-pair-id", "credential", "credentials",
})
_SECRET_PREFIXES = ("x-amz-", "x-goog-")
_SECRET_SUFFIXES = ("token", "secret", "signature", "password", "_key", "-key")

# A credential parameter's name (the rule of is_credential_parameter, as a pattern), not
# glued to a longer word before it. Only these names match, so a URL nested in another
# parameter's value is still searched.
_NAME = (
    r"(?<![\w.-])(?P<name>(?i:"
    + "|".join([*(re.escape(p) + r"[\w.-]*" for p in _SECRET_PREFIXES),
                *(r"[\w.-]*" + re.escape(s) for s in _SECRET_SUFFIXES),
                *(re.escape(n) for n in sorted(_SECRET_NAMES, key=len, reverse=True))])
    + r"))"
)
# name=value (also percent-encoded, as in a URL nested in a query); the value runs to the
# next '&', blank, '#', quote or angle bracket.
_ASSIGNED = re.compile(_NAME + r"(?P<sep>=|%3[Dd])[^&\s#\"'<>]+")
# "name": "value" and 'name': 'value' (JSON, Python reprs of dicts and headers).
_QUOTED = re.compile(r"(?P<q>[\"'])" + _NAME + r"(?P=q)(?P<sep>\s*:\s*)(?P<vq>[\"'])[^\"']*(?P=vq)")


def is_credential_parameter(name: str) -> bool:
    """True when a query parameter (or header) called ``name`` carries a credential.

    Parameters
    ----------
    name : str
        The parameter's name, percent-decoded; compared case-insensitively.
    """
    name = name.strip().lower()
    return (name in _SECRET_NAMES or name.startswith(_SECRET_PREFIXES)
            or name.endswith(_SECRET_SUFFIXES))


def _mask_assigned(match: re.Match) -> str:
    return f"{match['name']}{match['sep']}{MASK}"


def _mask_quoted(match: re.Match) -> str:
    return f"{match['q']}{match['name']}{match['q']}{match['sep']}{match['vq']}{MASK}{match['vq']}"


def redact(text: object) -> str | None:
    """``text`` as a string without credentials, each replaced by ``***``; ``None`` stays
    ``None``.

    Parameters
    ----------
    text : object
        Anything: a message, an exception, a URI (``str(text)`` is redacted).

    Returns
    -------
    str or None
        The text with every credential of the module docstring masked; parameter names
        are kept, so ``...?X-Amz-Signature=abc&x=1`` reads ``...?X-Amz-Signature=***&x=1``.
    """
    if text is None:
        return None
    text = str(text)
    for name in _SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, MASK)
    text = _USERINFO.sub(f"{MASK}@", text)
    text = _ACCESS_KEY_ID.sub(MASK, text)
    text = _ASSIGNED.sub(_mask_assigned, text)
    return _QUOTED.sub(_mask_quoted, text)


def strip_credentials(uri: str) -> str:
    """An ``http(s)://`` URL without its credential parameters and user-info; any other
    URI or path unchanged.

    Only an http(s) URL has a query string: in a file name or an S3 key ``?`` is an
    ordinary character, so those are returned as they are. The other parameters keep
    their order and spelling.

    Parameters
    ----------
    uri : str
        ``https://h/a.mp3?X-Amz-Signature=..&x=1``, say.

    Returns
    -------
    str
        ``https://h/a.mp3?x=1`` for that example.

    Examples
    --------
    >>> strip_credentials("https://u:pw@h/a.mp3?X-Amz-Signature=abc&x=1#t")
    'https://h/a.mp3?x=1#t'
    >>> strip_credentials("/music/what?token=1.mp3")
    '/music/what?token=1.mp3'
    """
    if not uri.lower().startswith(("http://", "https://")):
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:  # a malformed netloc ("http://[x"): mask rather than parse
        return redact(uri)
    netloc = parts.netloc.rpartition("@")[2]
    # A fragment can carry parameters too (OAuth's #access_token=...).
    return urlunsplit((parts.scheme, netloc, parts.path, _without_credentials(parts.query),
                       _without_credentials(parts.fragment)))


def _without_credentials(query: str) -> str:
    """``a=1&token=x;b=2`` -> ``a=1;b=2``: the kept parameters exactly as written."""
    if "=" not in query:
        return query
    # Each separator ('&' or ';') stays with the parameter after it.
    pieces = re.split(r"(?=[&;])", query)
    kept = [p for p in pieces
            if p.lstrip("&;") and not is_credential_parameter(unquote_plus(p.lstrip("&;").partition("=")[0]))]
    return "".join(kept).lstrip("&;")


class RedactingFilter(logging.Filter):
    """A logging filter (for handlers) that passes every record with its message, and any
    traceback, redacted: a URI logged as an argument cannot carry a credential out."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True
