"""Tables. The in-memory registries are the source of truth for live objects;
these rows make them durable (restart, accounting history)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class KeypairRow(Base):
    __tablename__ = "keypairs"

    access_key: Mapped[str] = mapped_column(String(20), primary_key=True)
    secret_key: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[str] = mapped_column(String(64))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    concurrency_limit: Mapped[int] = mapped_column(Integer)
    rate_limit: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resource_policy: Mapped[str] = mapped_column(String(64), default="default")


class ResourcePolicyRow(Base):
    """A keypair resource policy (Backend.AI's keypair_resource_policies, plus our per-session
    limits). NULL: no limit, or for pids, scratch and output the agent's default."""

    __tablename__ = "resource_policies"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    total_resource_slots: Mapped[dict[str, Any]] = mapped_column(JSON)
    max_session_slots: Mapped[dict[str, Any]] = mapped_column(JSON)
    max_pids: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_scratch_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    exec_timeout_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    idle_timeout_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_session_lifetime_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_output_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SessionRow(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    access_key: Mapped[str] = mapped_column(String(20), index=True)
    image: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(16))
    tag: Mapped[str | None] = mapped_column(String(256), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    status_info: Mapped[str | None] = mapped_column(Text, nullable=True)
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    requested_slots: Mapped[dict[str, Any]] = mapped_column(JSON)
    occupied_slots: Mapped[dict[str, Any]] = mapped_column(JSON)
    environ: Mapped[dict[str, Any]] = mapped_column(JSON)
    num_queries: Mapped[int] = mapped_column(Integer, default=0)
    last_stat: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    terminated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AgentRow(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rpc_url: Mapped[str] = mapped_column(String(256))
    backend: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    capacity: Mapped[dict[str, Any]] = mapped_column(JSON)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
