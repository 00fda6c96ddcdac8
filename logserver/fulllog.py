"""Full logs uploaded at the end of a job: streamed in (gzip or plain), size-
limited, hashed, kept gzip-compressed in the file store; streamed back out.
"""

import hashlib
import logging
import secrets
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from django.db import transaction
from django.utils import timezone

from logserver.conf import setting
from logserver.filestore import get_file_store
from logserver.models import FullLog
from prodmon.models import Attempt

logger = logging.getLogger(__name__)

READ_SIZE = 1024 * 1024
GZIP_WBITS = 16 + zlib.MAX_WBITS


class FullLogError(Exception):
    """The upload is refused: `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def _read_chunks(stream: BinaryIO) -> Iterator[bytes]:
    while True:
        data = stream.read(READ_SIZE)
        if not data:
            return
        yield data


def gunzip_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Inflate a gzip stream (several members allowed) piece by piece; no
    piece is larger than READ_SIZE, however well the input compresses."""
    inflater = zlib.decompressobj(GZIP_WBITS)
    in_member = False
    for raw in chunks:
        data = raw
        while True:
            if data:
                in_member = True
            try:
                out = inflater.decompress(data, READ_SIZE)
            except zlib.error as exc:
                raise FullLogError(f"body is not valid gzip: {exc}") from exc
            if out:
                yield out
            if inflater.eof:
                data = inflater.unused_data
                inflater = zlib.decompressobj(GZIP_WBITS)
                in_member = False
                if not data:
                    break
                continue
            data = inflater.unconsumed_tail
            if not data and len(out) < READ_SIZE:
                break
    if in_member:
        raise FullLogError("gzip body is truncated")


def full_log_store(
    *,
    attempt: Attempt,
    stream: BinaryIO,
    gzipped: bool,
    expected_sha256: str = "",
) -> FullLog:
    """Store (or replace) the attempt's full log. Raises FullLogError."""
    limit = int(setting("LOGSTORE_MAX_BYTES"))
    digest = hashlib.sha256()
    size = 0
    deflater = zlib.compressobj(6, zlib.DEFLATED, GZIP_WBITS)
    chunks = _read_chunks(stream)
    with tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024) as tmp:
        for data in gunzip_chunks(chunks) if gzipped else chunks:
            size += len(data)
            if size > limit:
                raise FullLogError(f"the log exceeds the limit of {limit} bytes", status=413)
            digest.update(data)
            tmp.write(deflater.compress(data))
        tmp.write(deflater.flush())
        if size == 0:
            raise FullLogError("empty body: send the log with a Content-Length")
        sha256 = digest.hexdigest()
        if expected_sha256 and expected_sha256.lower() != sha256:
            raise FullLogError(
                f"sha256 of the received log is {sha256}, not {expected_sha256}", status=422
            )
        stored_size = tmp.tell()
        tmp.seek(0)
        store = get_file_store()
        experiment = attempt.job.stage.campaign.experiment.name
        key = (
            f"{experiment}/{str(attempt.uid)[:2]}/{attempt.uid}/"
            f"{timezone.now():%Y%m%dT%H%M%S}-{secrets.token_hex(4)}.log.gz"
        )
        store.save(key, tmp)

    with transaction.atomic():
        Attempt.objects.select_for_update().filter(pk=attempt.pk).first()
        previous = FullLog.objects.filter(attempt=attempt).first()
        fields = {
            "backend": store.name,
            "storage_key": key,
            "size": size,
            "stored_size": stored_size,
            "sha256": sha256,
            "uploaded_at": timezone.now(),
        }
        if previous is None:
            full_log = FullLog.objects.create(attempt=attempt, **fields)
        else:
            old_backend, old_key = previous.backend, previous.storage_key
            for name, value in fields.items():
                setattr(previous, name, value)
            previous.save()
            full_log = previous
            transaction.on_commit(lambda: _delete_quietly(old_backend, old_key))
    return full_log


def _delete_quietly(backend: str, key: str) -> None:
    try:
        get_file_store(backend).delete(key)
    except Exception:  # noqa: BLE001 - an orphan object is harmless, a failed upload is not
        logger.exception("could not delete replaced full log %s:%s", backend, key)


def full_log_chunks(*, full_log: FullLog) -> Iterator[bytes]:
    """The uncompressed bytes of a stored full log, piece by piece."""
    fileobj = get_file_store(full_log.backend).open(full_log.storage_key)
    try:
        yield from gunzip_chunks(_read_chunks(fileobj))
    finally:
        fileobj.close()


def full_log_delete(*, full_log: FullLog) -> None:
    get_file_store(full_log.backend).delete(full_log.storage_key)
    full_log.delete()
