"""``ServiceSettings``: the one settings model of sam2-serve. It extends the engine's settings
with the serving ones; values come from the Serve config's application ``args`` and from the
environment (``SAM2_SERVE_<FIELD>``, and ``REDIS_URL``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from deployments.engine.config import EngineSettings


class ServiceSettings(EngineSettings):
    """Engine settings plus replicas, store, time budgets and capacity behaviour."""

    video_root: Path | None = Field(
        None,
        validation_alias=AliasChoices("video_root", "VIDEO_ROOT", "SAM2_SERVE_VIDEO_ROOT"),
        description="Folder of server-side videos sessions may be created from.",
    )
    api_keys: list[str] = Field(
        default_factory=list,
        description="API keys (JSON list in SAM2_SERVE_API_KEYS); none: no authentication.",
    )
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("redis_url", "REDIS_URL", "SAM2_SERVE_REDIS_URL"),
        description="Redis session store; none: the embedded store (a named Ray actor).",
    )
    max_upload_bytes: int = Field(
        16 * 2**30, ge=1, description="Largest upload; bigger ones get 413 while streaming."
    )
    min_replicas: int = Field(1, ge=1, description="SAM 2 replicas kept running.")
    max_replicas: int = Field(4, ge=1, description="Most SAM 2 replicas autoscaling starts.")
    spare_slots: int = Field(1, ge=0, description="Free session slots autoscaling keeps ready.")
    replica_num_gpus: float = Field(0.0, ge=0, description="GPU share per replica (0.33-0.5).")
    replica_num_cpus: float = Field(0.5, ge=0, description="CPUs reserved per replica.")
    ingress_num_cpus: float = Field(0.1, ge=0, description="CPUs reserved per ingress replica.")
    max_ongoing_requests: int = Field(32, ge=1, description="Concurrent requests per replica.")
    session_ttl_s: float = Field(1800, gt=0, description="Idle time after which a session expires.")
    request_timeout_s: float = Field(120, gt=0, description="Time budget of a request (504).")
    create_timeout_s: float = Field(900, gt=0, description="Time budget of a session upload.")
    propagate_timeout_s: float = Field(3600, gt=0, description="Time budget of a propagation.")
    export_timeout_s: float = Field(900, gt=0, description="Time budget of an export or /track.")
    expiry_check_s: float = Field(30, gt=0, description="How often expired sessions are removed.")
    retry_after_s: int = Field(10, ge=1, description="Retry-After sent with 503.")
    routing_stats_period_s: float = Field(
        1.0, gt=0, description="How often the router refreshes each replica's free slots."
    )

    @property
    def upload_dir(self) -> Path:
        """Uploads wait here (on the shared storage) until a replica ingests them."""
        return self.storage_root / ".uploads"

    @property
    def spool_dir(self) -> Path:
        """Exports wait here (on the shared storage) while the ingress streams them."""
        return self.storage_root / ".exports"
