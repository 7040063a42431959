"""The instance pool: start, scale, replace and stop the machines that drain a queue.

`job` reads the job file, `providers/` start and list machines (one module per provider),
`choice` picks the cheapest instance type per task slot, `plan` says what a pool will cost,
`startup_script` is what each machine runs, and `manager` is the loop that keeps the pool
sized to the remaining work. Nothing here imports a cloud SDK until a provider is opened.
"""
