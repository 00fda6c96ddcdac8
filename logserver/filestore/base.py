"""Where full logs are kept: a small interface, one module per backend."""

import abc
from typing import BinaryIO


class FileStoreError(Exception):
    """The store could not save, open or delete an object."""


class FileStore(abc.ABC):
    name: str = ""

    @abc.abstractmethod
    def save(self, key: str, fileobj: BinaryIO) -> None:
        """Store the readable file's bytes under `key`, replacing any object there."""

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable binary file of the object (raises FileNotFoundError)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...
