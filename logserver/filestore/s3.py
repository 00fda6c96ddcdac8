"""Full logs in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, dCache).

Settings: LOGSTORE_S3_BUCKET, LOGSTORE_S3_ENDPOINT_URL (for anything but AWS),
LOGSTORE_S3_REGION, LOGSTORE_S3_PREFIX, LOGSTORE_S3_ADDRESSING_STYLE (path by
default: dCache and most on-site stores need it). Credentials come the usual
boto3 way (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, or a role),
never from prodmon settings.
"""

from typing import BinaryIO

from logserver.filestore.base import FileStore, FileStoreError


class S3Store(FileStore):
    name = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str = "",
        region: str = "",
        prefix: str = "",
        addressing_style: str = "path",
        client=None,
    ):
        if not bucket:
            raise FileStoreError("LOGSTORE_BACKEND=s3 needs LOGSTORE_S3_BUCKET")
        self.bucket = bucket
        self.prefix = prefix
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url or None,
                region_name=region or None,
                config=Config(
                    s3={"addressing_style": addressing_style}, retries={"mode": "standard"}
                ),
            )
        self.client = client

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def save(self, key: str, fileobj: BinaryIO) -> None:
        # upload_fileobj streams in multipart parts: no size limit from memory.
        self.client.upload_fileobj(fileobj, self.bucket, self._key(key))

    def open(self, key: str) -> BinaryIO:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from exc
            raise
        return response["Body"]

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise
        return True
