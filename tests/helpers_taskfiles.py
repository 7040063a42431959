"""Helpers for the task-file, queue CLI and SQLite queue tests.

`run_taskfleet` runs the real `taskfleet` command in a subprocess, so a test sees exactly what a
user sees: the exit code, stdout, stderr (and whether a traceback leaked). `BAD_ENTRIES` lists
every invalid task entry the issue names, with the words its error must contain; the tests write
each one into JSON, JSONL and YAML files with `write_entries`.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The console script of this environment; `-c` with the same entry point when a prelude (code
# that breaks an import, say) must run first.
TASKFLEET_SCRIPT = Path(sys.executable).with_name("taskfleet")


def run_taskfleet(
    *args: str,
    input: str | bytes | None = None,
    prelude: str | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `taskfleet ARGS` as a real process and return its result (text, never raising)."""
    if prelude is None and TASKFLEET_SCRIPT.exists():
        argv = [str(TASKFLEET_SCRIPT), *args]
    else:
        code = f"{prelude or ''}\nfrom taskfleet.cli import main\nmain()\n"
        argv = [sys.executable, "-c", code, *args]
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        argv,
        input=input.decode() if isinstance(input, bytes) else input,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit code 1, one clear message holding every fragment, and no traceback anywhere."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 1, output
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in:\n{result.stderr}"


def sqlite_url(path: Path, name: str | None = None) -> str:
    """The URL of a SQLite queue file (absolute: four slashes)."""
    return f"sqlite:///{path}" + (f"?name={name}" if name else "")


def task(i: int) -> dict[str, Any]:
    return {"id": f"task-{i:05d}", "data": {"n": i}}


def write_entries(path: Path, entries: list[Any]) -> None:
    """Write entries in the format named by the suffix, one entry a line in every format.

    JSON: `[` on line 1, entry k on line k + 2. JSONL: entry k on line k + 1. YAML: `- <entry as
    JSON>` (YAML accepts JSON flow style), entry k on line k + 1. So the expected position of
    entry k is "index k" for JSON and "line k + 1" for JSONL and YAML.
    """
    lines = [json.dumps(entry) for entry in entries]
    if path.suffix == ".json":
        text = "[\n" + ",\n".join(lines) + "\n]\n"
    elif path.suffix == ".jsonl":
        text = "".join(line + "\n" for line in lines)
    elif path.suffix in (".yaml", ".yml"):
        text = "".join(f"- {line}\n" for line in lines)
    else:
        raise ValueError(path)
    path.write_text(text, encoding="utf-8")


def position(path: Path, k: int) -> str:
    """How an error names entry k of a file written by `write_entries`."""
    return f"index {k}" if path.suffix == ".json" else f"line {k + 1}"


# name -> (the bad entry, words its error must contain). Each is written after two good entries.
BAD_ENTRIES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "entry not an object": (["id", "x"], ("list", "not an object")),
    "entry a string": ("task-x", ("str", "not an object")),
    "missing id": ({"data": {"n": 1}}, ("no 'id'",)),
    "empty id": ({"id": "", "data": {}}, ("the id is empty",)),
    "id not a string": ({"id": 17, "data": {}}, ("must be a string", "int")),
    "id null": ({"id": None, "data": {}}, ("must be a string",)),
    "id too long": ({"id": "a" * 201, "data": {}}, ("201 characters", "200 bytes")),
    "id with slash": ({"id": "a/b", "data": {}}, ("'/'",)),
    "id with backslash": ({"id": "a\\b", "data": {}}, ("'\\\\'",)),
    "id with NUL": ({"id": "a\x00b", "data": {}}, ("control character",)),
    "id with newline": ({"id": "a\nb", "data": {}}, ("control character",)),
    "id with DEL": ({"id": "a\x7fb", "data": {}}, ("control character",)),
    "id with C1 control": ({"id": "a\x85b", "data": {}}, ("control character",)),
    "id dot": ({"id": ".", "data": {}}, ("starts with '.'",)),
    "id dot dot": ({"id": "..", "data": {}}, ("starts with '.'",)),
    "id hidden": ({"id": ".hidden", "data": {}}, ("starts with '.'",)),
    "data not an object": ({"id": "x", "data": [1, 2]}, ("data of task 'x'", "list")),
    "data a number": ({"id": "x", "data": 3}, ("data of task 'x'", "int")),
    "id and task_id": ({"id": "x", "task_id": "y"}, ("both 'id' and 'task_id'",)),
    "unknown field": ({"id": "x", "data": {}, "priority": 1}, ("unknown field", "priority")),
    "duplicate id": ({"id": "task-00000", "data": {}}, ("duplicate id 'task-00000'",)),
    "duplicate via task_id": ({"task_id": "task-00001"}, ("duplicate id 'task-00001'",)),
    "after repeats an id": (
        {"id": "x", "data": {}, "after": ["task-00000", "task-00001", "task-00000"]},
        ("the 'after' of task 'x' repeats 'task-00000'",),
    ),
}


# Whole files that are bad: (file name, content, words the error must contain).
BAD_FILES: list[tuple[str, bytes, tuple[str, ...]]] = [
    ("invalid.json", b'[{"id": "a"},\n {"id": "b",]', ("index 1", "invalid JSON")),
    ("unclosed.json", b'[{"id": "a"}', ("index 1", "invalid JSON")),
    ("garbage-after.json", b'[{"id": "a"}] tail', ("invalid JSON", "trailing garbage")),
    ("first-bad.json", b"[nope]", ("index 0", "invalid JSON")),
    ("object.json", b'{"id": "a"}', ("top level", "list", ".jsonl")),
    ("number.json", b"42", ("top level", "list")),
    ("padded-object.json", b" " * 5000 + b'{"id": "a"}', ("top level", "list")),
    ("empty.json", b"", ("empty",)),
    ("blank.json", b"  \n\n ", ("empty",)),
    ("utf8.json", b'[{"id": "a"}, {"id": "b", "data": {"s": "\xff"}}]', ("index 1", "UTF-8")),
    ("invalid.jsonl", b'{"id": "a"}\n{"id": "b"\n', ("line 2", "invalid JSON")),
    ("blank-lines.jsonl", b'{"id": "a"}\n\n\n{oops}\n', ("line 4", "invalid JSON")),
    ("utf8.jsonl", b'{"id": "a"}\n{"id": "b\xff"}\n', ("line 2", "not valid UTF-8")),
    ("invalid.yaml", b"- id: a\n- id: b\n  data: {x: [1\n", ("invalid YAML",)),
    ("tabs.yaml", b"- id: a\n\t- id: b\n", ("line 2", "invalid YAML")),
    ("mapping.yaml", b"id: a\ndata: {}\n", ("line 1", "top level must be a list")),
    ("empty.yaml", b"", ("empty",)),
    ("utf8.yaml", b"- id: a\n- id: b\n- id: \xfe\n", ("line 3", "not valid UTF-8")),
    ("two-docs.yaml", b"- id: a\n---\n- id: b\n", ("invalid YAML",)),
]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_directory(root: Path, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve `root` over HTTP (HTTPS with `tls`) on 127.0.0.1 and yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def self_signed_certificate(directory: Path) -> tuple[Path, Path] | None:
    """(certificate, key) for 127.0.0.1, made with the openssl command; None without it."""
    if shutil.which("openssl") is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key
