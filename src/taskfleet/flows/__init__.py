"""Tasks that wait for other tasks: the check of a load's dependencies (`graph`), and what is
built on it (the flow text format, the coordinator for queues that keep no dependency state,
the pictures of a flow).

A task lists the ids it waits for (`"after": [...]`) and becomes runnable when all of them have
completed; a dependent reads their results from `worker_data.dependency_results`. Queues that
keep state (memory, SQLite, Redis; `Queue.tracks_dependencies`) release a waiting task
themselves, atomically, when its last dependency is acknowledged; for SQS and Pub/Sub a
coordinator does it from the completions on the event queue. A dependency that is
dead-lettered blocks its dependents (they wait, counted as blocked) until it is redriven.
"""
