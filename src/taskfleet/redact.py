"""Keep secrets out of logs, events and error messages.

Queue URLs may carry passwords (`redis://:secret@host`) and SQS/HTTP URLs may carry signed
query strings. Every URL we print goes through `redact` first.
"""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^@/\s]*)@")
_SECRET_PARAMS = re.compile(
    r"(?i)(?P<key>[?&](?:password|passwd|pwd|secret|token|key|signature|x-amz-signature|"
    r"x-amz-credential|x-amz-security-token|access_key|secret_key|aws_secret_access_key|"
    r"aws_session_token|sig)=)(?P<value>[^&\s]*)"
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
