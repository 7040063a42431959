"""Keep secrets out of logs, events and error messages.

Queue URLs may carry passwords (`redis://:secret@host`) and SQS/HTTP URLs may carry signed
query strings. Every URL we print goes through `redact` first.
"""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^@/\s]*)@")
# A query parameter whose name holds one of these words carries a secret: this covers AWS
# (X-Amz-Signature, X-Amz-Security-Token), GCS (X-Goog-Signature, X-Goog-Credential), Azure
# (sig) and the usual api_key, access_token, client_secret, password. Hiding a harmless
# parameter by mistake costs nothing; showing a signature does.
_SECRET_PARAMS = re.compile(
    r"(?i)(?P<key>[?&][\w.-]*(?:password|passwd|pwd|secret|token|signature|credential|key|sig)"
    r"[\w.-]*=)(?P<value>[^&\s]*)"
)


def redact(text: str) -> str:
    """Replace passwords in URLs and secret query parameters in `text` with '***'."""

    def _userinfo(m: re.Match[str]) -> str:
        info = m.group("userinfo")
        if ":" in info:
            user = info.split(":", 1)[0]
            return f"{m.group('scheme')}{user}:***@"
        if info:
            return f"{m.group('scheme')}***@"
        return m.group(0)

    text = _USERINFO.sub(_userinfo, text)
    return _SECRET_PARAMS.sub(lambda m: m.group("key") + "***", text)
