"""The throwaway PostgreSQL of the tests: bench/postgres.py, which the
benchmark shares (`python -m bench --store postgresql`)."""

from bench.postgres import (
    INSTALL_HINT,
    PostgresCluster,
    PostgresUnavailable,
    find_bin_dir,
    start_cluster,
)

__all__ = [
    "INSTALL_HINT",
    "PostgresCluster",
    "PostgresUnavailable",
    "find_bin_dir",
    "start_cluster",
]
