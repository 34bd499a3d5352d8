"""``ObjectLocation``: an ``s3://bucket/key`` URL, parsed where both sides need it (the ingress
refuses a bad one before any replica sees it; the engine reads the object). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from deployments.protocol.errors import InvalidRequestError

SCHEME = "s3"


@dataclass(frozen=True)
class ObjectLocation:
    """An object in an S3-compatible store: ``s3://bucket/key``."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str) -> ObjectLocation:
        """InvalidRequestError for another scheme or a URL without a bucket or key."""
        parts = urlsplit(url)
        if parts.scheme != SCHEME:
            raise InvalidRequestError(
                f"video_url must be an s3:// URL, not {parts.scheme or 'a bare path'}",
                scheme=parts.scheme,
            )
        key = parts.path.lstrip("/")
        if not parts.netloc or not key or parts.query or parts.fragment:
            raise InvalidRequestError("video_url must be s3://bucket/key")
        return cls(parts.netloc, key)

    @staticmethod
    def is_url(text: str) -> bool:
        """Whether ``text`` names an object rather than a file."""
        return text.startswith(f"{SCHEME}://")

    @property
    def url(self) -> str:
        return f"{SCHEME}://{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.url
