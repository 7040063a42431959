"""Real processes sharing one SQLite queue file.

Four processes race to drain 20,000 tasks; when nobody dies, every task is received exactly
once. A process that dies holding leases loses them when they expire, and the tasks come back.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from taskfleet.queues.sqlite import SQLiteQueue
from taskfleet.tasks import Task

TOTAL = 20_000

# One draining process: wait for the start signal, then receive and ack until the queue is
# empty. Leases (300 s) cannot expire during the test, so an empty receive means done.
DRAIN = """
import os, sys, time
from pathlib import Path
from taskfleet.queues.sqlite import SQLiteQueue

db, out, go, batch = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
queue = SQLiteQueue(db)
while not go.exists():
    time.sleep(0.002)
received = []
while messages := queue.receive(batch, lease_seconds=300):
    received.extend(m.task_id for m in messages)
    queue.ack(messages)
queue.close()
out.write_text("\\n".join(received))
"""


def test_four_processes_receive_every_task_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    with SQLiteQueue(db) as queue:
        assert queue.send(Task(f"t{i:05d}", {"i": i}) for i in range(TOTAL)).inserted == TOTAL
    go = tmp_path / "go"
    outputs = [tmp_path / f"worker{n}.txt" for n in range(4)]
    workers = [
        subprocess.Popen([sys.executable, "-c", DRAIN, str(db), str(out), str(go), str(batch)])
        for out, batch in zip(outputs, (7, 25, 50, 100), strict=True)
    ]
    time.sleep(0.3)  # let all four open the file before any starts
    go.touch()
    for worker in workers:
        assert worker.wait(timeout=240) == 0
    received = [line for out in outputs for line in out.read_text().split("\n") if line]
    assert len(received) == TOTAL, f"{len(received) - len(set(received))} duplicates"
    assert set(received) == {f"t{i:05d}" for i in range(TOTAL)}
    assert sum(1 for out in outputs if out.read_text()) >= 2, "no race took place"
    with SQLiteQueue(db) as queue:
        stats = queue.stats()
    assert (stats.completed, stats.remaining, stats.dead) == (TOTAL, 0, 0)


# A process that leases tasks and dies without a word (no ack, no release).
DIE = """
import os, sys, time
from taskfleet.queues.sqlite import SQLiteQueue

queue = SQLiteQueue(sys.argv[1])
leased_at = time.time()
messages = queue.receive(5, lease_seconds=float(sys.argv[2]))
print(leased_at, ",".join(m.task_id for m in messages), flush=True)
os._exit(1)
"""


def test_leases_of_a_dead_process_expire_and_the_tasks_come_back(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    with SQLiteQueue(db) as queue:
        queue.send(Task(f"t{i}", {}) for i in range(8))
    lease = 2.0
    died = subprocess.run(
        [sys.executable, "-c", DIE, str(db), str(lease)], capture_output=True, text=True, timeout=60
    )
    assert died.returncode == 1
    leased_at, ids = died.stdout.split()
    lost = ids.split(",")
    assert len(lost) == 5
    with SQLiteQueue(db) as queue:
        now = queue.receive(10, lease_seconds=300)
        assert {m.task_id for m in now}.isdisjoint(lost)  # still leased by the dead process
        assert len(now) == 3
        time.sleep(max(0.0, float(leased_at) + lease + 0.1 - time.time()))
        back = queue.receive(10, lease_seconds=300)
        assert sorted(m.task_id for m in back) == sorted(lost)
        assert {m.attempt for m in back} == {2}
