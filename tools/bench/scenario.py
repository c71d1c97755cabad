"""The plan of a benchmark: a scenario file (TOML, every key optional) overridden by flags.

Relative paths are read from the current directory (run from the repository root). Example::

    name = "concurrency_digits"
    model = "digits"
    model_repository = "examples/models"
    serve = true
    concurrency = [1, 16, 64, 256]
    duration = 10
    echo = true
    limit = true

    [[servers]]
    label = "batching-on"
    server_args = ["--models=digits"]

    [[servers]]
    label = "batching-off"
    batching = false
    server_args = ["--models=digits"]
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tensorgate.server.flags import add_settings_flags, settings_from_flags
from tensorgate.server.settings import Settings
from tensorgate.tools.bench.limit import DEFAULT_BATCH_SIZES
from tensorgate.tools.bench.summary import YARDSTICKS

RESULTS_DIR = Path("benchmarks/results")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Strict):
    """One configuration of the server under test, started by the benchmark."""

    label: str = Field("server", pattern=r"^[A-Za-z0-9_.-]+$")
    server_args: list[str] = Field(default_factory=list, description="flags of tensorgate serve")
    batching: bool = Field(True, description="false: a repository copy with dynamic batching off")

    def settings(self, repository: Path | None = None) -> Settings:
        """The Settings a ``tensorgate serve`` with these flags would have: its flags, then
        ``TENSORGATE_*`` variables, then the defaults (the server's own parser reads them)."""
        parser = argparse.ArgumentParser(add_help=False)
        add_settings_flags(parser)
        known, _ = parser.parse_known_args(list(self.server_args))
        if repository is not None:
            return settings_from_flags(known, model_repository=repository)
        return settings_from_flags(known)

    @property
    def grpc_core(self) -> str:
        """The gRPC core it serves on."""
        return self.settings().grpc_core


class Scenario(_Strict):
    """Everything one ``tensorgate bench`` invocation does."""

    name: str | None = Field(None, description="names the results; default: the model")
    model: str
    version: str = ""
    model_repository: Path | None = None
    serve: bool = Field(False, description="start each of `servers` and measure it")
    servers: list[ServerConfig] = Field(default_factory=lambda: [ServerConfig()])
    targets: list[str] = Field(default_factory=list, description="a running server's host:port")
    server_pids: list[int] = Field(default_factory=list, description="its processes, for CPU")
    concurrency: list[int] = Field(default_factory=list, description="closed loop, in flight")
    rates: list[float] = Field(default_factory=list, description="open loop, requests/s")
    duration: float = Field(5.0, gt=0, description="measured seconds per run")
    warmup: float = Field(1.0, ge=0, description="unmeasured seconds before each run")
    echo: bool = Field(False, description="also measure the echo server: the floor")
    thin: bool = Field(
        False, description="also measure the thin servers (grpcio threads and grpc.aio)"
    )
    limit: bool = Field(False, description="also measure in-process ONNX Runtime: the ceiling")
    limit_batches: list[int] = Field(default_factory=lambda: list(DEFAULT_BATCH_SIZES))
    limit_seconds: float = Field(2.0, gt=0, description="per batch size")
    processes: int = Field(1, ge=1, description="load generator processes")
    channels: int = Field(1, ge=1, description="gRPC connections per generator process")
    timeout: float = Field(30.0, gt=0, description="deadline of each request, seconds")
    max_in_flight: int = Field(4096, ge=1, description="open loop: cap on waiting requests")
    repeat_ratio: float = Field(0.0, ge=0, le=1, description="share of requests repeated")
    repeat_pool: int = Field(0, ge=0, description="distinct repeated requests")
    out: Path | None = Field(None, description="JSON path; default benchmarks/results/<name>.json")

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.serve and self.targets:
            raise ValueError("give either serve or targets, not both")
        if (self.serve or self.limit) and self.model_repository is None:
            raise ValueError("serve and limit need model_repository")
        if self.echo and not (self.serve or self.targets or self.model_repository):
            raise ValueError("echo needs a server or model_repository to read the inputs from")
        if self.thin and self.model_repository is None:
            raise ValueError("thin needs model_repository: it serves the model itself")
        if not (self.serve or self.targets or self.echo or self.thin or self.limit):
            raise ValueError("nothing to measure: give serve, targets, echo, thin or limit")
        loaded = self.serve or self.targets or self.echo or self.thin
        if loaded and not (self.concurrency or self.rates):
            raise ValueError("give concurrency levels or rates to run the load at")
        if any(c < 1 for c in self.concurrency) or any(r <= 0 for r in self.rates):
            raise ValueError("concurrency levels must be >= 1 and rates > 0")
        if len({s.label for s in self.servers}) != len(self.servers):
            raise ValueError("server labels must differ")
        if any(s.label in YARDSTICKS for s in self.servers):
            raise ValueError(f"{', '.join(YARDSTICKS)} are the yardsticks' labels")
        if self.repeat_ratio > 0 and self.repeat_pool == 0:
            raise ValueError("repeat_ratio needs repeat_pool > 0")
        return self

    @property
    def title(self) -> str:
        return self.name or self.model

    @property
    def out_path(self) -> Path:
        return self.out or RESULTS_DIR / f"{self.title}.json"


def load_scenario(
    path: Path | None,
    overrides: dict[str, Any],
    server_args: list[str] | None = None,
    batching: bool | None = None,
) -> Scenario:
    """The scenario file's keys (if a file is given), then the flags that were given (None: not
    given); ``server_args`` are added to, and ``batching`` set on, every server configuration."""
    document: dict[str, Any] = {}
    if path is not None:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
        document.setdefault("name", path.stem)
    document.update({k: v for k, v in overrides.items() if v is not None})
    servers = document.setdefault("servers", [{}])
    for server in servers:
        server["server_args"] = [*server.get("server_args", []), *(server_args or [])]
        if batching is not None:
            server["batching"] = batching
    return Scenario.model_validate(document)
