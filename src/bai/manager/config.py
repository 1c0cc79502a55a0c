"""The manager's settings, parsed once by the caller and passed in."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ManagerConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BAI_MANAGER_", extra="ignore")

    data_dir: Path = Path(".data")
    database_url: str | None = None  # default: sqlite+aiosqlite:///<data_dir>/bai.sqlite3
    host: str = "127.0.0.1"
    port: int = 8091
    cluster_secret: str = ""
    #: an agent silent for this long is LOST and its sessions are ERROR
    agent_lost_after_s: float = 10.0
    #: on stop, leave live sessions running on their agents (their rows stay RUNNING) for the
    #: next start to take back, instead of destroying them
    keep_sessions: bool = False
    #: how long an execute call collects output before answering "continued"
    flush_timeout_s: float = 2.0
    stream_flush_s: float = 0.2
    #: allowed distance between a request's Date and the server clock
    max_clock_skew_s: float = 900.0
    rate_limit_window_s: int = 900
    default_resources: dict[str, Decimal] = Field(
        default_factory=lambda: {"cpu": Decimal(1), "mem": Decimal(1024**3)}
    )
    default_concurrency_limit: int = 30
    default_rate_limit: int = 10000
    #: wall-time limit per execution, seconds; None: none
    exec_timeout_s: float | None = None
    #: file transfers (POST /session/{id}/upload, download, GET .../files)
    upload_max_files: int = Field(default=100, ge=1)
    upload_max_file_bytes: int = Field(default=64 * 2**20, ge=1)
    upload_max_request_bytes: int = Field(default=256 * 2**20, ge=1)
    download_max_files: int = Field(default=100, ge=1)
    download_max_bytes: int = Field(default=256 * 2**20, ge=1)
    list_max_entries: int = Field(default=10000, ge=1)

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'bai.sqlite3'}"
