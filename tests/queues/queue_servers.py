"""Real queue servers for tests and benchmarks, on free loopback ports, stopped by the caller.

Shared by the pytest fixtures (tests/queues/conftest.py) and by the scripts in benchmarks/, so
both run against the same kind of server: a real `redis-server` process, and moto's server in
a process of its own (`python queue_servers.py moto`: in a thread of the test process it
competed with the tests for the interpreter lock), reached over HTTP through boto3's
`endpoint_url` like a real SQS endpoint (its S3 and EC2 serve the cloud storage and pool tests
too), Google's own Pub/Sub emulator (a Java process), and a Cloud Storage emulator in a thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MOTO_ENV = {
    # Fake credentials: boto3's default chain must find some, and must never find real ones.
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class ServerUnavailable(RuntimeError):
    """The server's program or library is not installed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def redis_server(*options: str) -> Iterator[str]:
    """A throwaway redis-server on 127.0.0.1 without persistence; yields `redis://host:port`.

    `options` are more redis-server arguments (`"--requirepass", PASSWORD`)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerUnavailable("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="taskfleet-redis-") as workdir:
        process = subprocess.Popen(
            [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", workdir,
                "--loglevel", "warning",
                *options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            _wait_for_port(port, process)
            yield f"redis://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class RestartableRedis:
    """A redis-server that persists every write (`--appendonly yes --appendfsync always`) and
    can be killed with SIGKILL and started again on the same port with the same data: a crash
    and restart of the service, as a worker sees it. Use as a context manager."""

    def __init__(self, workdir: Path, *options: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerUnavailable("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self._argv = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--dir", str(workdir),
            "--loglevel", "warning",
            *options,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it has loaded its data (it answers PING)."""
        import redis

        self.process = subprocess.Popen(
            self._argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _wait_for_port(self.port, self.process)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing flushed beyond what each write already synced."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RestartableRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class PausableProxy:
    """A loopback TCP proxy in front of a server, in a thread of this process; `pause()` cuts
    every connection and refuses new ones (the service is unreachable), `resume()` listens
    again on the same port. `url_of(url)` rewrites a server's URL to go through the proxy."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="proxy", daemon=True)

    def url_of(self, url: str) -> str:
        return url.replace(f":{self.target[1]}", f":{self.port}", 1)

    def __enter__(self) -> PausableProxy:
        self.resume()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pause()

    def resume(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(128)
            listener.setblocking(False)
            self._listener = listener
            self._selector.register(listener, selectors.EVENT_READ)

    def pause(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._selector.unregister(self._listener)
                self._listener.close()
                self._listener = None
            for sock in list(self._pairs):
                self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        other = self._pairs.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self._pairs.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            with contextlib.suppress(OSError):  # a reset, as when a host goes away
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                ready = self._selector.select(0.005) if self._selector.get_map() else []
                for key, _ in ready:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        self._accept(sock)
                    elif sock in self._pairs:
                        self._forward(sock)
            if not ready:
                time.sleep(0.001)

    def _accept(self, listener: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError):
            client, _ = listener.accept()
            try:
                upstream = socket.create_connection(self.target, 2)
            except OSError:
                client.close()
                return
            for s in (client, upstream):
                s.setblocking(False)
                self._selector.register(s, selectors.EVENT_READ)
            self._pairs[client], self._pairs[upstream] = upstream, client

    def _forward(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        other = self._pairs[sock]
        other.setblocking(True)
        try:
            other.sendall(data)
        except OSError:
            self._drop(sock)
        else:
            other.setblocking(False)


@contextlib.contextmanager
def moto_server(*, in_process: bool = False) -> Iterator[str]:
    """moto's server on 127.0.0.1 with fake credentials in the environment; yields the endpoint.

    It runs in a process of its own, which ends when this context ends or when the test
    process dies (it watches its stdin); `in_process` runs it in a thread of this process
    instead, for a benchmark that counts the requests moto receives."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise ServerUnavailable(
            "moto[server] is not installed (pip install 'moto[server]')"
        ) from exc
    saved = {k: os.environ.get(k) for k in MOTO_ENV}
    os.environ.update(MOTO_ENV)
    try:
        if in_process:
            server = _start_moto_thread()
            host, port = server.get_host_and_port()
            try:
                yield f"http://{host}:{port}"
            finally:
                server.stop()
        else:
            with _moto_process() as port:
                yield f"http://127.0.0.1:{port}"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _start_moto_thread() -> Any:
    """moto's `ThreadedMotoServer`, with the fixes below, started on a free port."""
    from moto.server import ThreadedMotoServer

    _speed_up_moto_clock()
    _fix_moto_delete_race()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    return server


@contextlib.contextmanager
def _moto_process() -> Iterator[int]:
    """Run `python queue_servers.py moto`; yields the port it prints once it listens."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "moto"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        if not line.isdigit():
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"moto's server did not start: {line} {err[-2000:]}")
        yield int(line)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _serve_moto_until_stdin_closes() -> None:
    """The moto process: serve, print the port, stop when the parent closes stdin or dies."""
    server = _start_moto_thread()
    _, port = server.get_host_and_port()
    print(port, flush=True)
    sys.stdin.buffer.read()
    server.stop()


def _speed_up_moto_clock() -> None:
    """moto's SQS scans every message of a queue on every call (several times per sent
    message), reading the clock through a datetime round trip each time, so a queue of
    thousands of messages takes seconds per call. The same clock without the datetime makes it
    usable for 10,000 tasks; the values, and so the behaviour, are unchanged."""
    import moto.sqs.models as sqs_models

    sqs_models.unix_time_millis = lambda: time.time() * 1000.0  # type: ignore[assignment]


def _fix_moto_delete_race() -> None:
    """moto's SQS deletes a message by rebuilding the queue's message list without taking the
    lock that sending takes, so two deletes at once (two workers acking) or a send during a
    delete undo each other: deleted messages come back, sent ones vanish. Real SQS has no such
    race. Taking the queue's own lock around a delete makes moto behave."""
    import moto.sqs.models as sqs_models

    original = sqs_models.Queue.delete_message
    if getattr(original, "_taskfleet_locked", False):
        return

    def delete_message(self: sqs_models.Queue, receipt_handle: str) -> None:
        with self._messages_lock:
            original(self, receipt_handle)

    delete_message._taskfleet_locked = True  # type: ignore[attr-defined]
    sqs_models.Queue.delete_message = delete_message  # type: ignore[method-assign]


def _wait_for_port(
    port: int,
    process: subprocess.Popen[bytes],
    timeout: float = 10,
    log_path: Path | None = None,
) -> None:
    program = Path(str(process.args[0] if isinstance(process.args, list) else process.args)).name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            if log_path is not None:
                err = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{program} exited with {process.returncode}: {err}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{program} did not listen on port {port} within {timeout} s")


PUBSUB_EMULATOR_SCRIPT = Path(
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
)


def _pubsub_emulator_command(port: int, workdir: str) -> list[str]:
    """Google's Pub/Sub emulator: its own start script (as the Cloud SDK's Debian package
    installs it), else `gcloud beta emulators pubsub start`."""
    gcloud = shutil.which("gcloud")
    script = PUBSUB_EMULATOR_SCRIPT
    if gcloud is not None:
        script = Path(gcloud).resolve().parents[1] / "platform/pubsub-emulator/bin" / script.name
    if script.exists() and shutil.which("java"):
        return [str(script), "--host=127.0.0.1", f"--port={port}"]
    if gcloud is not None and shutil.which("java"):
        return [
            gcloud, "beta", "emulators", "pubsub", "start",
            f"--host-port=127.0.0.1:{port}", f"--data-dir={workdir}", "--quiet",
        ]  # fmt: skip
    raise ServerUnavailable(
        "Google's Pub/Sub emulator or Java is not installed (apt-get install "
        "google-cloud-cli-pubsub-emulator default-jre-headless)"
    )


@contextlib.contextmanager
def pubsub_emulator() -> Iterator[str]:
    """Google's Pub/Sub emulator on 127.0.0.1; yields `HOST:PORT` (the `endpoint=` option of a
    pubsub:// URL). It runs in its own process group, stopped as a whole."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="taskfleet-pubsub-") as workdir:
        log_path = Path(workdir) / "emulator.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                _pubsub_emulator_command(port, workdir),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_for_port(port, process, timeout=60, log_path=log_path)
            yield f"127.0.0.1:{port}"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextlib.contextmanager
def gcs_emulator() -> Iterator[str]:
    """A Google Cloud Storage emulator (`gcp-storage-emulator`, in memory) in a thread of this
    process; yields its `http://127.0.0.1:PORT`, the value of `STORAGE_EMULATOR_HOST` (or the
    `endpoint_url` option of gcsfs) that reaches it."""
    try:
        from gcp_storage_emulator.server import create_server
    except ImportError as exc:
        raise ServerUnavailable(
            "gcp-storage-emulator is not installed (pip install gcp-storage-emulator)"
        ) from exc
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


if __name__ == "__main__":
    if sys.argv[1:] == ["moto"]:
        os.environ.update(MOTO_ENV)
        _serve_moto_until_stdin_closes()
    else:
        sys.exit("usage: python queue_servers.py moto")
