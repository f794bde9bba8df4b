"""Files in a Unity Catalog volume: plain file IO where /Volumes is mounted (on a cluster), else the Files API."""

from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path
from typing import Any

# The SDK's file transfers log each endpoint they try at INFO; a run polls files all the time.
logging.getLogger("databricks.sdk.mixins").setLevel(logging.WARNING)

VOLUME_PATH = re.compile(r"^/Volumes/([^/]+)/([^/]+)/([^/]+)(/[^\0]*)?$")


def volume_root(path: str) -> str | None:
    """/Volumes/<catalog>/<schema>/<volume> of a volume path, None for any other path."""
    match = VOLUME_PATH.match(path)
    if match is None or ".." in path.split("/"):
        return None
    return "/Volumes/" + "/".join(match.group(i) for i in (1, 2, 3))


class Volume:
    """Reads and writes files under /Volumes through `client.files` or, when `mounted`, the local file system."""

    def __init__(self, client: Any = None, mounted: bool = False) -> None:
        self.client = client
        self.mounted = mounted

    @classmethod
    def on_cluster(cls, path: str) -> Volume:
        """Plain file IO where the volume is mounted (Databricks clusters), else the Files API with the
        cluster's own credentials (the databricks-sdk default chain)."""
        root = volume_root(path)
        if root is not None and os.path.isdir(root):
            return cls(mounted=True)
        from databricks.sdk import WorkspaceClient

        return cls(WorkspaceClient())

    def read_bytes(self, path: str) -> bytes | None:
        """The file's content, None when it does not exist."""
        if self.mounted:
            try:
                return Path(path).read_bytes()
            except FileNotFoundError:
                return None
        from databricks.sdk.errors import NotFound

        try:
            return self.client.files.download(path).contents.read()
        except NotFound:
            return None

    def size(self, path: str) -> int | None:
        """The file's size in bytes, None when it does not exist."""
        if self.mounted:
            try:
                return Path(path).stat().st_size
            except FileNotFoundError:
                return None
        from databricks.sdk.errors import NotFound

        try:
            return int(self.client.files.get_metadata(path).content_length or 0)
        except NotFound:
            return None

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write the whole file (volumes take no appends), creating its folders."""
        if self.mounted:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(data)
            return
        self.client.files.upload(path, io.BytesIO(data), overwrite=True)

    def makedirs(self, path: str) -> None:
        if self.mounted:
            Path(path).mkdir(parents=True, exist_ok=True)
        else:
            self.client.files.create_directory(path)
