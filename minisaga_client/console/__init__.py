"""`minisaga console`: a web console of sagas, on the orchestrator's public gRPC API.

    pip install 'minisaga[console]'
    minisaga console --listen 127.0.0.1:7080 --orchestrator 127.0.0.1:7001

The saga list (filters, paging, counts per status), one saga's timeline,
attempts, compensation and its definition's graph with the path it took, live
by server-sent events, and Resume/Cancel with a confirmation unless
`--read-only`. The pages are written on the server (`pages`); the one script
and style sheet are package data (`static/`), so the wheel needs no build step
and the browser fetches nothing from elsewhere. docs/console.md tells more.
"""

from minisaga_client.console.app import (
    RunningConsole,
    Settings,
    is_loopback,
    make_app,
    serve,
    start,
)

__all__ = ["RunningConsole", "Settings", "is_loopback", "make_app", "serve", "start"]
