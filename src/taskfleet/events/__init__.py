"""Events: the one record of what happened to every task.

`schema` is the vocabulary and the envelope (the contract, documented in `docs/events.md`),
`sinks` write events (a JSONL file, an event queue, both), `reader` reads event files back for
the monitor and the report.
"""
