"""Settings: one pydantic model per layer, read from the Serve config's application ``args``
or the environment (``SAM2_SERVE_<FIELD>``, ``REDIS_URL``). ``EngineSettings`` is what the SAM 2
session engine needs; ``ServiceSettings`` extends it with replicas, store, time budgets and
capacity. ``DetectorSettings`` is what the SAM 3 concept detector needs. Torch-free, so the
ingress reads them without loading the model's libraries."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# What torch.compile covers (``deployments.engine.compilation``).
CompileMode = Literal["none", "encoder", "full"]


class EngineSettings(BaseSettings):
    """Everything the SAM 2 session engine needs to load a model and hold sessions."""

    model_config = SettingsConfigDict(env_prefix="SAM2_SERVE_", extra="forbid")

    model: str = Field("sam2.1_hiera_tiny", description="Name from the model registry.")
    custom_config: str | None = Field(
        None,
        description="For model 'custom': a sam2 config name (configs/sam2.1/...) or a YAML path.",
    )
    checkpoint: Path | None = Field(
        None, description="Checkpoint file; default: checkpoint_dir / the registry's file name."
    )
    checkpoint_dir: Path = Field(Path("checkpoints"), description="Where checkpoints are kept.")
    weights: Literal["checkpoint", "random"] = Field(
        "checkpoint",
        description="'random' builds the model without a checkpoint: tests and offline dev only.",
    )
    seed: int = Field(0, description="Torch seed for random weights, so runs are repeatable.")
    device: str = Field(
        "auto", description="'auto' (cuda when available, else cpu), 'cpu', 'cuda:N'."
    )
    image_size: int | None = Field(
        None, ge=64, description="Override the model's input size (multiple of 16); tests use 256."
    )
    torch_threads: int | None = Field(None, ge=1, description="torch.set_num_threads; None: keep.")
    max_sessions: int = Field(3, ge=1, description="Sessions sharing one loaded model.")
    max_objects: int = Field(16, ge=1, le=255, description="Objects per session.")
    concept_match_iou: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Text prompts and re-detection: a detected instance whose mask IoU with an "
        "object's mask on the frame is at least this is that object (not added again).",
    )
    storage_root: Path = Field(
        Path(tempfile.gettempdir()) / "sam2-serve" / "sessions",
        description="Session directories (index, masks, uploads); a shared volume on a cluster.",
    )
    frame_buffer_mb: int = Field(
        256,
        ge=1,
        description="Decoded frames a session holds for the model's walk (read-ahead forward, "
        "GOP segments backward); frame-space reads get a quarter as much.",
    )
    max_video_frames: int = Field(
        108_000, ge=1, description="Most frames a session may hold (an hour at 30 fps)."
    )
    max_video_seconds: float = Field(
        4 * 3600, gt=0, description="Longest video (after start/end) a session may hold."
    )
    offload_state_to_cpu: bool = Field(
        False, description="Keep SAM 2 memories in host memory (saves GPU memory, a bit slower)."
    )
    compile: CompileMode = Field(
        "none",
        description="torch.compile through sam2's own switches: 'encoder' the image encoder "
        "(compile_image_encoder), 'full' every per-frame step (sam2's vos_optimized). It "
        "compiles during the engine's warm-up, so replicas start slower, not the first click.",
    )
    compute_dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto",
        description="'auto': bfloat16 on CUDA and on CPUs with native bf16 (AVX512_BF16, AMX), "
        "float32 on other CPUs, where torch emulates bf16 about 10x slower.",
    )
    feature_cache_mb: int = Field(
        256,
        ge=0,
        description="Image features a session keeps of the frames it computed last, on the "
        "model's device, so a click on a recently propagated frame skips the image encoder; "
        "least recently used evicted past this (the last frame always kept, as SAM 2 does). "
        "A frame at 1024 takes 16 MiB in float32, 10 MiB under bfloat16 autocast.",
    )
    retention_mb: float = Field(
        256,
        ge=0,
        description="SAM 2 outputs of propagated frames a session keeps beyond its protected "
        "window (16 frames around each prompt and each propagation's end), most recent "
        "first. An operation that needs a dropped one is approximated and reported "
        "exact=false. A frame and object at 1024 take 1.25 MiB in float32, 0.75 MiB in bfloat16.",
    )
    max_encoder_batch: int = Field(
        3,
        ge=1,
        description="Most frames the image encoder runs in one batch for sessions of a replica "
        "propagating at once (their next frames); 1 turns batching off.",
    )
    overlay_alpha: float = Field(
        0.45,
        gt=0,
        le=1,
        description="Opacity of an object's colour over the frame, where the service draws masks "
        "(the overlay route, MP4 exports) and on the annotation page (served to it).",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint for videos named by s3:// URLs (SeaweedFS, MinIO, "
        "...); none: AWS S3 of s3_region.",
    )
    s3_region: str = Field("us-east-1", description="Region the S3 requests are signed for.")
    # Secrets come from the environment only (Kubernetes secrets): the aliases are the
    # variables' names, so the config's args cannot set them, and dumps leave them out.
    s3_access_key_id: SecretStr | None = Field(
        None, validation_alias="SAM2_SERVE_S3_ACCESS_KEY_ID", exclude=True
    )
    s3_secret_access_key: SecretStr | None = Field(
        None, validation_alias="SAM2_SERVE_S3_SECRET_ACCESS_KEY", exclude=True
    )
    s3_buckets: list[str] = Field(
        default_factory=list,
        description="Buckets sessions may be created from (s3://bucket/key), the counterpart "
        "of video_root; empty: none.",
    )
    s3_block_kb: int = Field(
        1024, ge=4, description="Size of one range read from the object store."
    )
    s3_cache_mb: int = Field(
        32,
        ge=0,
        description="Blocks of video objects an engine keeps, shared by every reader of an "
        "object (least recently used evicted): reopening it or seeking back into a GOP reads "
        "nothing again.",
    )
    mask_store: Literal["sqlite", "postgres"] = Field(
        "sqlite",
        description="Where new sessions keep their masks: 'sqlite', a file in the session "
        "directory; 'postgres', one table of the database_url's database, which every replica "
        "reaches. A session directory that holds a masks.sqlite keeps reading it.",
    )
    # A secret (it may carry the password): from the environment only, as the S3 keys.
    database_url: SecretStr | None = Field(
        None, validation_alias="SAM2_SERVE_DATABASE_URL", exclude=True
    )
    database_pool_size: int = Field(
        4,
        ge=1,
        description="Most connections a replica process holds to the mask database (one is "
        "kept open; idle ones close after a minute): replicas x this within the server's "
        "max_connections.",
    )

    @model_validator(mode="after")
    def _postgres_has_a_database(self) -> EngineSettings:
        if self.mask_store == "postgres" and self.database_url is None:
            raise ValueError("mask_store 'postgres' needs SAM2_SERVE_DATABASE_URL")
        return self


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
    redis_retries: int = Field(
        8,
        ge=0,
        description="Times a Redis call is retried on a fresh connection after a dropped one "
        "(a restarted Redis), before the request fails with 503.",
    )
    redis_retry_base_s: float = Field(
        0.05, gt=0, description="First wait between Redis retries; it doubles at each retry."
    )
    redis_retry_cap_s: float = Field(1.0, gt=0, description="Longest wait between Redis retries.")
    max_upload_bytes: int = Field(
        16 * 2**30, ge=1, description="Largest upload; bigger ones get 413 while streaming."
    )
    max_image_bytes: int = Field(
        32 * 2**20,
        ge=1,
        description="Largest image for /api/v1/image/segment (multipart, or base64 in JSON).",
    )
    max_json_bytes: int = Field(
        4 * 2**20,
        ge=1,
        description="Largest JSON body (prompts, propagation requests, server-side videos), "
        "refused before it is parsed; a base64 image may add 4/3 of max_image_bytes to it.",
    )
    masks_page_size: int = Field(
        500, ge=1, description="Frames per page of GET .../masks when the client names no limit."
    )
    masks_page_max: int = Field(
        2000,
        ge=1,
        le=2000,
        description="Most frames a client may ask for per page of GET .../masks. 2000, the "
        "schema's maximum, is also this setting's: a deployment may lower it.",
    )
    review_score_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Review and timelines: a score below it flags the frame, when the client "
        "names no score_threshold.",
    )
    review_iou_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Review and timelines: an IoU with the previous frame below it is an area "
        "jump, when the client names no iou_threshold.",
    )
    min_replicas: int = Field(1, ge=1, description="SAM 2 replicas kept running.")
    max_replicas: int = Field(4, ge=1, description="Most SAM 2 replicas autoscaling starts.")
    spare_slots: int = Field(1, ge=0, description="Free session slots autoscaling keeps ready.")
    upscale_delay_s: float = Field(
        0, ge=0, description="How long autoscaling waits before it adds replicas."
    )
    downscale_delay_s: float = Field(
        120,
        ge=0,
        description="How long autoscaling waits before it stops replicas (their sessions are "
        "rebuilt elsewhere on next use).",
    )
    replica_num_gpus: float = Field(0.0, ge=0, description="GPU share per replica (0.33-0.5).")
    replica_num_cpus: float = Field(0.5, ge=0, description="CPUs reserved per replica.")
    replica_malloc_arena_max: int = Field(
        2,
        ge=0,
        description="glibc's MALLOC_ARENA_MAX in SAM 2 replicas; 0 keeps glibc's default (8 "
        "arenas per core). A session's memory is allocated on several threads (model, decoders, "
        "prefetch, Ray's), and freed pages spread over many arenas stay partly untrimmed; with 2 "
        "a replica's RSS returns to its baseline after 100 sessions (docs/benchmarks.md).",
    )
    ingress_num_cpus: float = Field(0.1, ge=0, description="CPUs reserved per ingress replica.")
    max_ongoing_requests: int = Field(32, ge=1, description="Concurrent requests per replica.")
    session_ttl_s: float = Field(1800, gt=0, description="Idle time after which a session expires.")
    request_timeout_s: float = Field(120, gt=0, description="Time budget of a request (504).")
    create_timeout_s: float = Field(900, gt=0, description="Time budget of a session upload.")
    propagate_timeout_s: float = Field(3600, gt=0, description="Time budget of a propagation.")
    export_timeout_s: float = Field(900, gt=0, description="Time budget of an export or /track.")
    expiry_check_s: float = Field(30, gt=0, description="How often expired sessions are removed.")
    lease_s: float = Field(
        30,
        gt=0,
        description="How long a propagation's lease outlives its last frame: renewed while frames "
        "flow, it lapses this long after they stop (an ingress that died mid-stream).",
    )
    reconcile_s: float = Field(
        20,
        gt=0,
        description="How often each replica frees the sessions the store gives it no longer "
        "(record gone: deleted; another owner: forgotten); one it took on less than this long "
        "ago is left alone.",
    )
    journal_timeout_s: float = Field(
        10,
        gt=0,
        description="How long a replica waits for the store to take a prompt-log entry, the "
        "session's lock held; past it the store counts as down and the request fails (503).",
    )
    settle_poll_s: float = Field(
        0.2,
        gt=0,
        description="How often a replica asked to free a session whose creation is under way "
        "looks whether the creation has ended.",
    )
    retry_after_s: int = Field(10, ge=1, description="Retry-After sent with 503.")
    routing_stats_period_s: float = Field(
        1.0, gt=0, description="How often the router refreshes each replica's free slots."
    )
    routing_stats_timeout_s: float = Field(
        10,
        gt=0,
        description="How long a replica's routing stats report may take before Serve gives up "
        "on that report (the router keeps the last one).",
    )
    placement_grace_s: float = Field(
        3.0,
        gt=0,
        description="How long the router counts a session it placed against its replica while "
        "the replica's stats do not show it yet; a few routing_stats_period_s.",
    )
    # The concept detector (SAM 3) deployment: off unless ``detector`` is set.
    detector: DetectorSettings | None = Field(
        None,
        description="The SAM 3 concept detector's settings (DetectorSettings); set, the app "
        "runs a ConceptDetector deployment for text prompts. None: no detector, and text "
        "prompts answer 409 detector_unavailable.",
    )
    detector_num_gpus: float = Field(0.0, ge=0, description="GPU share per detector replica.")
    detector_num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per detector replica.")
    detector_min_replicas: int = Field(1, ge=1, description="Detector replicas kept running.")
    detector_max_replicas: int = Field(
        1, ge=1, description="Most detector replicas autoscaling starts; min == max: fixed."
    )
    detector_target_requests: float = Field(
        2,
        gt=0,
        description="Detections in flight per detector replica that autoscaling aims at.",
    )
    detector_timeout_s: float = Field(
        60, gt=0, description="Time budget of one detection (a frame, a text)."
    )

    @model_validator(mode="after")
    def _page_within_its_max(self) -> ServiceSettings:
        if self.masks_page_size > self.masks_page_max:
            raise ValueError("masks_page_size must not exceed masks_page_max")
        return self

    @property
    def upload_dir(self) -> Path:
        """Uploads wait here (on the shared storage) until a replica moves them into a session."""
        return self.storage_root / ".uploads"

    @property
    def spool_dir(self) -> Path:
        """Exports wait here (on the shared storage) while the ingress streams them."""
        return self.storage_root / ".exports"


class DetectorSettings(BaseSettings):
    """Everything the SAM 3 concept detector (``deployments.detector``) needs to load its model
    and answer text prompts. Read from the environment as ``SAM2_SERVE_DETECTOR_<FIELD>``;
    ``SAM2_SERVE_WEIGHTS=random`` covers the detector too."""

    model_config = SettingsConfigDict(
        env_prefix="SAM2_SERVE_DETECTOR_", extra="forbid", populate_by_name=True
    )

    checkpoint_dir: Path = Field(
        Path("checkpoints") / "sam3",
        description="A transformers checkpoint directory (config.json, model.safetensors, the "
        "tokenizer's files, preprocessor_config.json), as huggingface_hub.snapshot_download "
        "writes it for facebook/sam3.",
    )
    weights: Literal["checkpoint", "random"] = Field(
        "checkpoint",
        validation_alias=AliasChoices("SAM2_SERVE_DETECTOR_WEIGHTS", "SAM2_SERVE_WEIGHTS"),
        description="'random' builds SAM 3 without a checkpoint, with a tokenizer trained on a "
        "fixed word list: tests and offline dev only.",
    )
    random_architecture: Literal["small", "full"] = Field(
        "small",
        description="For random weights: 'small' (2-layer, 64-wide; tests) or 'full' "
        "(facebook/sam3's size: real speed and memory, meaningless masks).",
    )
    seed: int = Field(0, description="Torch seed for random weights, so runs are repeatable.")
    image_size: int | None = Field(
        None,
        ge=56,
        description="Input size of a random-weights model (a multiple of 14); default 224 "
        "small, 1008 full. A checkpoint keeps its own (1008).",
    )
    device: str = Field(
        "auto", description="'auto' (cuda when available, else cpu), 'cpu', 'cuda:N'."
    )
    compute_dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto", description="Weights and activations: 'auto' is bfloat16 on CUDA, float32 else."
    )
    torch_threads: int | None = Field(None, ge=1, description="torch.set_num_threads; None: keep.")
    score_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="An instance is kept when its score (query probability times presence "
        "probability, as in Meta's SAM 3) is above this, unless a request names its own.",
    )
    max_text_chars: int = Field(
        200,
        ge=1,
        description="Longest text prompt in characters (checked before tokenizing); the model's "
        "own limit is its text context (32 tokens with start and end for SAM 3).",
    )
    max_exemplar_boxes: int = Field(
        16, ge=0, description="Most exemplar boxes a text prompt may carry."
    )


# ``ServiceSettings.detector`` names DetectorSettings, defined after it.
ServiceSettings.model_rebuild()
