"""Keep secrets out of logs, events and error messages.

Queue URLs may carry passwords (`redis://:secret@host`) and SQS/HTTP URLs may carry signed
query strings. Every URL we print goes through `redact` first, and `redact` also takes free
text (an exception's message) that may hold a URL anywhere.

A URL's user information is found with the standard library's rule (`urllib.parse.urlsplit`,
which redis-py and every client we use follow): it is everything before the LAST '@' of the
authority, so a password may hold a raw '@' or ':'. A password with a raw '/', '?' or '#'
ends the authority early (the rest of the password then reads as a path, a query or a
fragment); such a URL cannot reach its server, but it is shown in the error that says so.
So everything before the last '@' of the whole URL is taken as user information: hiding part
of a path by mistake costs nothing; showing a password does.
"""

from __future__ import annotations

import re

HIDDEN = "***"

# In free text a URL starts at its scheme and runs to the next white space (quotes and
# punctuation around it are kept as they are: only the user information is rewritten). A text
# that starts with a scheme is taken whole as one URL, because most callers pass a URL alone,
# and urlsplit (so redis-py) accepts a raw space in a password.
_SCHEME = r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)"
_URL = re.compile(_SCHEME + r"(?P<rest>\S*)")
_WHOLE_URL = re.compile(_SCHEME + r"(?P<rest>.*)", re.DOTALL)
# A query parameter whose name holds one of these words carries a secret: this covers AWS
# (X-Amz-Signature, X-Amz-Security-Token), GCS (X-Goog-Signature, X-Goog-Credential), Azure
# (sig) and the usual api_key, access_token, client_secret, password. Hiding a harmless
# parameter by mistake costs nothing; showing a signature does.
_SECRET_PARAMS = re.compile(
    r"(?i)(?P<key>[?&][\w.-]*(?:password|passwd|pwd|secret|token|signature|credential|key|sig)"
    r"[\w.-]*=)(?P<value>[^&\s]*)"
)


def _hide_user_info(user_info: str) -> str:
    """`user:***` for `user:password`, `***` for a user information without a user name (a
    lone token, or `:password`)."""
    user, colon, _password = user_info.partition(":")
    return f"{user}:{HIDDEN}" if colon else HIDDEN


def _redact_url(match: re.Match[str]) -> str:
    rest = match.group("rest")
    at = rest.rfind("@")  # the end of the user information, as explained above
    if at <= 0:  # no user information, or an empty one ('redis://@host')
        return match.group(0)
    return f"{match.group('scheme')}{_hide_user_info(rest[:at])}{rest[at:]}"


def redact(text: str) -> str:
    """Replace passwords in URLs and secret query parameters in `text` with '***'."""
    whole = _WHOLE_URL.fullmatch(text)
    text = _redact_url(whole) if whole else _URL.sub(_redact_url, text)
    return _SECRET_PARAMS.sub(lambda m: m.group("key") + HIDDEN, text)
