"""Secrets never reach a message: passwords in URLs and signed query strings are hidden."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

import pytest

from taskfleet.redact import redact


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://:hunter2@host:6379/0?name=job", "redis://:***@host:6379/0?name=job"),
        ("rediss://user:hunter2@host/0", "rediss://user:***@host/0"),
        ("https://token123@host/tasks.json", "https://***@host/tasks.json"),
        (
            "https://b.s3.amazonaws.com/t.json?X-Amz-Credential=AKIA&X-Amz-Signature=abc"
            "&X-Amz-Security-Token=tok&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/t.json?X-Amz-Credential=***&X-Amz-Signature=***"
            "&X-Amz-Security-Token=***&X-Amz-Expires=60",
        ),
        (
            "https://storage.googleapis.com/b/t.json?X-Goog-Algorithm=GOOG4-RSA-SHA256"
            "&X-Goog-Credential=sa%40p.iam&X-Goog-Signature=0a1b",
            "https://storage.googleapis.com/b/t.json?X-Goog-Algorithm=GOOG4-RSA-SHA256"
            "&X-Goog-Credential=***&X-Goog-Signature=***",
        ),
        ("https://acct.blob.core.windows.net/c/t.json?sv=2022&sig=xyz", None),
        ("https://api/x?api_key=k1&client_secret=s1&access_token=t1&page=2", None),
        ("sqs://jobs?region=us-west-2&aws_secret_access_key=zzz", None),
        (
            "error at redis://:pw@10.0.0.1:6379 and again",
            "error at redis://:***@10.0.0.1:6379 and again",
        ),
    ],
)
def test_secrets_are_hidden(text: str, shown: str | None) -> None:
    result = redact(text)
    if shown is not None:
        assert result == shown
    for secret in (
        "hunter2",
        "token123",
        "AKIA",
        "abc",
        "tok&",
        "0a1b",
        "xyz",
        "k1",
        "s1",
        "t1&",
        "zzz",
        ":pw@",
    ):
        if secret in text:
            assert secret not in result, result


@pytest.mark.parametrize(
    "text",
    [
        "sqlite:///jobs/queue.db?name=job&max_attempts=3",
        "redis://host:6379/0?name=job",
        "sqs://jobs?region=us-west-2&endpoint_url=http://localhost:4566",
        "plain message with no URL",
    ],
)
def test_urls_without_secrets_are_unchanged(text: str) -> None:
    assert redact(text) == text


# Every character with a meaning in a URL (and a few that need quoting), each between pieces
# that must never be shown. A raw space cannot be in a URL found in free text, so it is tested
# percent-encoded only.
RESERVED = "@/:?#[]%!$&'()*+,;=~"
PIECES = ("Zq7", "Xv8", "Kp9")


def password_with(char: str) -> str:
    return char.join(PIECES)


def assert_hidden(shown: str) -> None:
    for piece in PIECES:
        assert piece not in shown, shown


@pytest.mark.parametrize("char", [*RESERVED, " ", RESERVED + " "])
@pytest.mark.parametrize("user", ["", "bob"])
def test_percent_encoded_passwords_are_hidden_whole(char: str, user: str) -> None:
    url = f"redis://{user}:{quote(password_with(char), safe='')}@h.example:6379/0?name=job"
    assert redact(url) == f"redis://{user}:***@h.example:6379/0?name=job"
    assert redact(f"cannot open {url!r}: refused") == (
        f"cannot open 'redis://{user}:***@h.example:6379/0?name=job': refused"
    )


@pytest.mark.parametrize("char", [*RESERVED, RESERVED])
@pytest.mark.parametrize("user", ["", "bob"])
@pytest.mark.parametrize("scheme", ["redis", "rediss", "https"])
def test_raw_passwords_are_hidden_whole(char: str, user: str, scheme: str) -> None:
    url = f"{scheme}://{user}:{password_with(char)}@h.example:6379/0?name=job"
    for text in (url, f"error at {url} and again", repr(url), f"({url}): {url}"):
        shown = redact(text)
        assert_hidden(shown)
        assert "h.example:6379/0?name=job" in shown
        assert f"{scheme}://{user}:***@" in shown


@pytest.mark.parametrize("char", RESERVED.replace(":", ""))  # a ':' would end a user name
def test_a_lone_token_is_hidden_whole(char: str) -> None:
    shown = redact(f"https://{password_with(char)}@h.example/tasks.json")
    assert shown == "https://***@h.example/tasks.json"


def test_the_standard_library_reads_the_same_user_information() -> None:
    # redis-py and our own parsing use urlsplit: its user information ends at the last '@'
    url = "redis://bob:Zq7@Xv8:Kp9@h.example:6379/0"
    parts = urlsplit(url)
    assert (parts.username, parts.password, parts.hostname) == ("bob", "Zq7@Xv8:Kp9", "h.example")
    assert redact(url) == "redis://bob:***@h.example:6379/0"


@pytest.mark.parametrize("user", ["", "bob"])
def test_a_url_given_alone_may_hold_a_raw_space_in_its_password(user: str) -> None:
    # urlsplit (so redis-py) takes 'Zq7 Xv8 Kp9' as the password; so does redact
    url = f"redis://{user}:{password_with(' ')}@h.example:6379/0?name=job"
    assert redact(url) == f"redis://{user}:***@h.example:6379/0?name=job"
