"""The minisaga benchmark (`make bench`, `python -m bench`).

It starts fresh services as subprocesses on free loopback ports, drives
`PlaceOrder` from a load generator in its own process (`bench.loadgen`), runs
a direct baseline (the same participants called in sequence by a plain
client, no orchestrator and no log), checks every saga against the
participants, measures 10,000 sagas in flight, and prints a Markdown table
plus a JSON file. See `python -m bench --help`.
"""
