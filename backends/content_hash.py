"""The content hash both backends tag data assets with (`content_sha256`): a new version is
registered only when the bytes change, and a downloaded copy is checked against it."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
