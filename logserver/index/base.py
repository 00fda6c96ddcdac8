"""The log index interface. Two backends implement it: logserver.index.database
(PostgreSQL full-text search, SQLite FTS5) and logserver.index.elasticsearch.

Lines are cut and numbered by logserver.indexing; a backend only stores and
searches them. Every write is idempotent per (attempt, line number), so a
re-indexed range never duplicates a line.
"""

import abc
import datetime as dt
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field


class LogIndexError(Exception):
    """The index backend refused or failed a write or a query."""


@dataclass(frozen=True)
class AttemptLabels:
    """What every indexed line of one attempt carries besides its text."""

    attempt_id: int
    attempt_uid: str
    experiment_id: int
    experiment: str
    campaign: str
    stage: str
    job: str
    host: str = ""
    site: str = ""
    exit_code: int | None = None
    outcome: str = "unknown"  # ECS event.outcome: success, failure or unknown


@dataclass(frozen=True)
class IndexLine:
    line_no: int
    offset: int
    text: str
    timestamp: dt.datetime
    level: int


_QUOTED = re.compile(r'"([^"]*)"')


@dataclass(frozen=True)
class ParsedQuery:
    """Free text as searched: every word and every "quoted phrase" must match."""

    words: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "ParsedQuery":
        phrases = tuple(p.strip() for p in _QUOTED.findall(text) if p.strip())
        rest = _QUOTED.sub(" ", text).replace('"', " ")
        words = tuple(w for w in rest.split() if w)
        return cls(words=words, phrases=phrases)

    @property
    def is_empty(self) -> bool:
        return not self.words and not self.phrases

    @property
    def terms(self) -> tuple[str, ...]:
        """What to highlight in a hit."""
        return self.phrases + self.words


@dataclass(frozen=True)
class SearchQuery:
    text: str
    # Always given: the experiments the caller may read. Never empty-means-all.
    experiment_ids: frozenset[int]
    campaign: str = ""
    stage: str = ""
    site: str = ""
    node: str = ""
    exit_code: int | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    # An extra restriction from another selector (e.g. triage's error classes).
    attempt_ids: Collection[int] | None = None
    limit: int = 50
    offset: int = 0

    @property
    def parsed(self) -> ParsedQuery:
        return ParsedQuery.parse(self.text)


@dataclass(frozen=True)
class SearchHit:
    attempt_uid: str
    line_no: int
    offset: int
    text: str
    timestamp: dt.datetime
    level: int


@dataclass(frozen=True)
class SearchPage:
    hits: list[SearchHit] = field(default_factory=list)
    has_more: bool = False


class LogIndex(abc.ABC):
    name: str = ""

    @abc.abstractmethod
    def index_lines(self, labels: AttemptLabels, lines: Sequence[IndexLine]) -> None:
        """Add or overwrite these lines of one attempt."""

    @abc.abstractmethod
    def delete_lines_from(self, labels: AttemptLabels, line_no: int) -> None:
        """Remove the attempt's lines numbered line_no and above (a rewind)."""

    @abc.abstractmethod
    def delete_attempts(self, labels: Sequence[AttemptLabels]) -> None:
        """Remove every line of these attempts (retention)."""

    def attempt_ended(self, labels: AttemptLabels) -> None:  # noqa: B027 - optional hook
        """The attempt ended after some of its lines were indexed: backends
        that copy the exit code onto each line update them here."""

    @abc.abstractmethod
    def search(self, query: SearchQuery) -> SearchPage:
        """Hits newest first, scoped to query.experiment_ids."""

    @abc.abstractmethod
    def ping(self) -> str:
        """Raise LogIndexError when the index cannot answer; else say what answered."""

    def refresh(self) -> None:  # noqa: B027 - optional hook
        """Make everything written so far searchable (Elasticsearch refresh)."""
