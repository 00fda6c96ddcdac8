"""The full-log file store, chosen by LOGSTORE_BACKEND=filesystem|s3."""

from django.core.exceptions import ImproperlyConfigured

from logserver.conf import logstore_root, setting
from logserver.filestore.base import FileStore, FileStoreError

__all__ = ["FileStore", "FileStoreError", "get_file_store"]


def get_file_store(name: str | None = None) -> FileStore:
    """The configured store, or the one named (a full log remembers where it went)."""
    name = name or setting("LOGSTORE_BACKEND")
    if name == "filesystem":
        from logserver.filestore.filesystem import FilesystemStore

        return FilesystemStore(logstore_root())
    if name == "s3":
        from logserver.filestore.s3 import S3Store

        return S3Store(
            bucket=setting("LOGSTORE_S3_BUCKET"),
            endpoint_url=setting("LOGSTORE_S3_ENDPOINT_URL"),
            region=setting("LOGSTORE_S3_REGION"),
            prefix=setting("LOGSTORE_S3_PREFIX"),
            addressing_style=setting("LOGSTORE_S3_ADDRESSING_STYLE"),
        )
    raise ImproperlyConfigured(f"LOGSTORE_BACKEND must be filesystem or s3, not {name!r}")
