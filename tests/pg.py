"""The throwaway PostgreSQL of the tests: service_kit/pg_cluster.py, which the
benchmark shares (`python -m bench --store postgresql`)."""

from service_kit.pg_cluster import (
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
