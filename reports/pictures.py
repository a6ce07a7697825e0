"""Pictures where people look: PNGs as Prefect image artifacts.

Prefect image artifacts hold a URL; a local backend has no web server for files, so small PNGs
travel inline as data URLs, which the Prefect UI renders like any image.
"""

from __future__ import annotations

import base64
from pathlib import Path

from prefect.artifacts import create_image_artifact

MAX_INLINE_BYTES = 1_500_000


def publish_image(path: Path, key: str, description: str) -> None:
    data = Path(path).read_bytes()
    if len(data) > MAX_INLINE_BYTES:
        return  # too big to inline; the file stays on disk and in MLflow
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    create_image_artifact(image_url=url, key=key, description=description)
