"""Error lines to templates: parameterize, then cluster with drain3.

Pure Python, no Django: triage's classifier and the Loghub benchmark
(bench/loghub_ga.py) run exactly this code with exactly this configuration.

Two steps:

1. `parameterize(line)` replaces the variable parts of a message (dates, UUIDs,
   URLs, paths, IPs, host names, hex, run/subrun/event numbers, numbers with or
   without units) with typed placeholders such as ``<PATH>`` and collapses runs
   of one placeholder (a variable-length list) into one.
2. `ErrorTemplateMiner` (a drain3 TemplateMiner) groups the parameterized lines.
   Its Drain differs from stock Drain in two ways:

   - Two different plain words at the same position never fall into one
     template on their own ("cannot open" and "cannot read" are two errors).
     Numbers, identifiers and placeholders still generalize as usual.
   - Sibling clusters - templates identical except for one plain word - are
     merged once at least `SIBLING_MERGE_AT` of them exist (or
     `SIBLING_MERGE_AT_KEY_VALUE` for a ``key=word`` token, which usually names
     a setting rather than a free value). That word was a variable after all,
     such as a user name. Merges are recorded in `Drain.merged_into` and
     persisted with the rest of the state.

`cluster_key(cluster_id)` of a merged cluster is its surviving sibling's id,
so callers map *class* ids, not raw Drain ids, to error classes.
"""

from __future__ import annotations

import base64
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass

import jsonpickle
from cachetools import LRUCache
from drain3 import TemplateMiner
from drain3.drain import Drain, LogCluster
from drain3.template_miner_config import TemplateMinerConfig

# --- parameterization -----------------------------------------------------------

# Lines longer than this are cut before masking and clustering: a template
# is about the shape of a message, and the cut keeps the regexes linear.
MAX_LINE_CHARS = 2000

_TLDS = (
    "com|org|net|edu|gov|mil|int|info|io|ch|uk|de|fr|it|nl|es|pt|pl|cz|se|no|fi|dk|be|at|"
    "ru|cn|jp|kr|tw|in|br|ca|au|local|localdomain|lan|internal|cluster"
)
_MONTH = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
_DAY = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
_UNIT = (
    r"(?:[kKMGTPE]i?B|[kKMGTPE]?bytes?|B|b|ms|us|ns|s|sec|secs|seconds?|mins?|minutes?|"
    r"h|hours?|days?|[kKMG]?Hz|%)"
)

# Order matters: the wider shapes (a URL, a date) go before the narrower ones
# (a path, a number) so that a date is not parameterized as three numbers.
MASKS: tuple[tuple[str, str], ...] = (
    ("UUID", r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
    ("URL", r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,15}://[^\s\"'<>()\[\]]+"),
    (
        "DATE",
        r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
        r"(?: [A-Z]{3,4}\b)?",
    ),
    (
        "DATE",
        rf"\b\d{{1,2}}-(?:{_MONTH})-\d{{4}} \d{{2}}:\d{{2}}:\d{{2}}(?:\.\d+)?(?: [A-Z]{{3,4}}\b)?",
    ),
    (
        "DATE",
        rf"\b(?:(?:{_DAY}),? )?(?:{_MONTH}) +\d{{1,2}},? (?:\d{{4}} )?\d{{2}}:\d{{2}}:\d{{2}}"
        rf"(?:\.\d+)?(?: [A-Z]{{3,4}}\b)?(?: \d{{4}}\b)?",
    ),
    ("DATE", r"\b\d{4}[-/.]\d{2}[-/.]\d{2}(?:[-T ]\d{2}[.:]\d{2}[.:]\d{2}(?:[.,]\d+)?)?\b"),
    ("DATE", r"\b\d{2}/\d{2}/\d{2,4}\b"),
    ("TIME", r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b"),
    (
        "IP",
        r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?![\w.])"
        r"|(?<![\w:])(?:[0-9a-fA-F]{1,4}:){2,7}:?[0-9a-fA-F]{1,4}(?![\w:])",
    ),
    ("PATH", r"(?<![\w/.~<>-])(?:~|\.{1,2})?(?:/[\w.+@%=,~:#-]+){2,}/?"),
    ("HOST", rf"\b[a-zA-Z0-9](?:[\w-]*[a-zA-Z0-9])?(?:\.[\w-]+)*\.(?:{_TLDS})\b(?!\.\w)"),
    ("HEX", r"\b0[xX][0-9a-fA-F]+\b"),
    ("HEX", r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"),
    (
        "ID",
        r"(?i)(?P<keep>\b(?:run|subrun|event|evt|lumi|lumiblock|luminosityblock|job|attempt|"
        r"pid|task|block|node)(?:[ :=#]|\s*no\.?\s*|\s*number\s*)\s*)\d+\b",
    ),
    ("NUM", rf"(?<![\w.<>-])[-+]?\d+(?:[.,]\d+)*(?:[eE][-+]?\d+)?(?:\s?{_UNIT})?(?![\w<])(?!\.\d)"),
)

# A mask may keep a leading context group named "keep" (the word "run" in "run 1234").
_COMPILED_MASKS = tuple(
    (re.compile(pattern), rf"\g<keep><{name}>" if "(?P<keep>" in pattern else f"<{name}>")
    for name, pattern in MASKS
)
PLACEHOLDER = re.compile(r"<[A-Z]+>")
# A run of one placeholder, separated by spaces, commas or backslash-escaped
# spaces: a list whose length varies from message to message.
_PLACEHOLDER_RUN = re.compile(r"(<[A-Z]+>)(?:(?:\\?\s+|\s*,\s*)\1)+")


def parameterize(line: str) -> str:
    """Replace the variable parts of one log line with typed placeholders."""
    text = line[:MAX_LINE_CHARS].strip()
    for regex, replacement in _COMPILED_MASKS:
        text = regex.sub(replacement, text)
    return _PLACEHOLDER_RUN.sub(r"\1", text)


# --- clustering -----------------------------------------------------------------

DRAIN_SIM_TH = 0.4
DRAIN_DEPTH = 4
DRAIN_MAX_CHILDREN = 100
SIBLING_MERGE_AT = 3
SIBLING_MERGE_AT_KEY_VALUE = 4
# A merge must leave at least this many literal tokens in the template, so
# "normal", "warning" and "critical" never become one "<*>" class.
SIBLING_MIN_LITERALS = 3

PARAM = "<*>"
# A plain word: letters (dots, underscores, apostrophes and dashes inside),
# optionally wrapped in punctuation - "timeout", "'sparkExecutor'", "(usable)",
# "org.apache.Foo".
_WORD = re.compile(r"^[^\w<]*[A-Za-z][A-Za-z_'.$-]*[^\w<>]*$")
# key=word, as in "user=root" or "mode=READ".
_KEY_WORD = re.compile(r"^[A-Za-z_][\w.-]*=[A-Za-z][A-Za-z_.-]*[^\w<>]*$")


_HAS_DIGIT = re.compile(r"\d")


def is_word(token: str) -> bool:
    return bool(_WORD.match(token)) or bool(_KEY_WORD.match(token))


def _is_literal(token: str) -> bool:
    return token != PARAM and not PLACEHOLDER.search(token)


class WordAwareDrain(Drain):
    """Drain that keeps different words apart and merges word-sibling clusters."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # cluster id -> the id it was merged into (a union-find parent).
        self.merged_into: dict[int, int] = {}
        self.last_merged: list[int] = []
        self._siblings: dict[tuple, set[int]] | None = None
        self._keys_of: dict[int, list[tuple]] = {}

    # jsonpickle stores __dict__; the sibling index is derived, so leave it out.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_siblings"] = None
        state["_keys_of"] = {}
        state["last_merged"] = []
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__.setdefault("merged_into", {})
        self.last_merged = []
        self._siblings = None
        self._keys_of = {}

    def get_seq_distance(self, seq1, seq2, include_params: bool):
        if len(seq1) == 0:
            return 1.0, 0
        similar = 0
        params = 0
        for template_token, token in zip(seq1, seq2, strict=True):
            if template_token == self.param_str:
                params += 1
                continue
            if template_token == token:
                similar += 1
            elif is_word(template_token) or is_word(token):
                return 0.0, params
        if include_params:
            similar += params
        return similar / len(seq1), params

    # -- sibling merging --

    def class_id(self, cluster_id: int) -> int:
        root = cluster_id
        while root in self.merged_into:
            root = self.merged_into[root]
        while cluster_id != root:  # path compression
            parent = self.merged_into[cluster_id]
            self.merged_into[cluster_id] = root
            cluster_id = parent
        return root

    @staticmethod
    def _sibling_keys(tokens: tuple) -> list[tuple[tuple, str]]:
        """(key, kind) for each position that may hold a variable word.

        The key is the template with that position cut out and every
        non-literal token blurred to "<*>", so two siblings match whatever
        each has generalized so far. kind: "w" (a word), "kv" (key=word) or
        "param" (the position already generalized).
        """
        blurred = tuple(t if _is_literal(t) and not _HAS_DIGIT.search(t) else PARAM for t in tokens)
        keys = []
        for i, token in enumerate(tokens):
            if i == 0:
                continue
            if token == PARAM or PLACEHOLDER.fullmatch(token):
                kind = "param"
            elif _KEY_WORD.match(token):
                kind = "kv"
            elif _WORD.match(token):
                kind = "w"
            else:
                continue
            rest = blurred[:i] + blurred[i + 1 :]
            if sum(t != PARAM for t in rest) < SIBLING_MIN_LITERALS:
                continue
            keys.append(((len(tokens), i, rest), kind))
        return keys

    def _sibling_index(self) -> dict[tuple, dict[int, str]]:
        if self._siblings is None:
            self._siblings = defaultdict(dict)
            self._keys_of = {}
            for cluster in list(self.id_to_cluster.values()):
                keys = self._sibling_keys(cluster.log_template_tokens)
                self._keys_of[cluster.cluster_id] = [key for key, _ in keys]
                for key, kind in keys:
                    self._siblings[key][cluster.cluster_id] = kind
        return self._siblings

    def _index_cluster(self, cluster: LogCluster) -> list[int]:
        """(Re)index a new or changed cluster; returns the class ids merged away."""
        index = self._sibling_index()
        for old_key in self._keys_of.pop(cluster.cluster_id, ()):
            index[old_key].pop(cluster.cluster_id, None)
        keys = self._sibling_keys(cluster.log_template_tokens)
        self._keys_of[cluster.cluster_id] = [key for key, _ in keys]
        merged: list[int] = []
        for key, kind in keys:
            members = index[key]
            members[cluster.cluster_id] = kind
            kinds = set(members.values())
            if "param" in kinds:
                # One sibling already takes any value there: the rest are that template.
                threshold = 2
            elif kinds == {"kv"}:
                threshold = SIBLING_MERGE_AT_KEY_VALUE
            else:
                threshold = SIBLING_MERGE_AT
            if len(members) < threshold:
                continue
            roots = sorted({self.class_id(m) for m in members})
            for other in roots[1:]:
                self.merged_into[other] = roots[0]
                merged.append(other)
        return merged

    def add_log_message(self, content: str):
        cluster, change_type = super().add_log_message(content)
        self.last_merged = []
        if change_type != "none":
            self.last_merged = self._index_cluster(cluster)
        return cluster, change_type


class ErrorTemplateMiner(TemplateMiner):
    """TemplateMiner whose state also carries WordAwareDrain's merges."""

    def __init__(self, persistence_handler=None, config: TemplateMinerConfig | None = None):
        config = config or miner_config()
        super().__init__(persistence_handler=None, config=config)
        self.drain = WordAwareDrain(
            sim_th=config.drain_sim_th,
            depth=config.drain_depth,
            max_children=config.drain_max_children,
            max_clusters=config.drain_max_clusters,
            extra_delimiters=config.drain_extra_delimiters,
            profiler=self.profiler,
            param_str=config.mask_prefix + "*" + config.mask_suffix,
            parametrize_numeric_tokens=config.parametrize_numeric_tokens,
        )
        self.persistence_handler = persistence_handler
        if persistence_handler is not None:
            self.load_state()

    def load_state(self):
        state = self.persistence_handler.load_state()
        if state is None:
            return
        if self.config.snapshot_compress_state:
            state = zlib.decompress(base64.b64decode(state))
        loaded = jsonpickle.loads(state, keys=True)
        if self.config.drain_max_clusters:
            cache = LRUCache(maxsize=self.config.drain_max_clusters)
            cache.update(loaded.id_to_cluster)
            loaded.id_to_cluster = cache
        self.drain.id_to_cluster = loaded.id_to_cluster
        self.drain.clusters_counter = loaded.clusters_counter
        self.drain.root_node = loaded.root_node
        self.drain.merged_into = dict(getattr(loaded, "merged_into", {}) or {})
        self.drain._siblings = None

    def add_line(self, line: str) -> ClusterResult:
        """Parameterize and cluster one error line."""
        result = self.add_log_message(parameterize(line))
        cluster_id = result["cluster_id"]
        class_id = self.drain.class_id(cluster_id)
        return ClusterResult(
            cluster_id=cluster_id,
            class_id=class_id,
            template=self.drain.id_to_cluster[class_id].get_template()
            if class_id in self.drain.id_to_cluster
            else result["template_mined"],
            change_type=result["change_type"],
            merged=tuple(getattr(self.drain, "last_merged", ())),
        )


@dataclass(frozen=True)
class ClusterResult:
    cluster_id: int  # the Drain cluster the line joined
    class_id: int  # the cluster that stands for its merged siblings (often the same)
    template: str
    change_type: str
    merged: tuple[int, ...] = ()  # class ids merged into others by this line


def miner_config() -> TemplateMinerConfig:
    config = TemplateMinerConfig()
    config.drain_sim_th = DRAIN_SIM_TH
    config.drain_depth = DRAIN_DEPTH
    config.drain_max_children = DRAIN_MAX_CHILDREN
    config.drain_max_clusters = None
    config.parametrize_numeric_tokens = True
    config.snapshot_compress_state = True
    # State is saved on every change (see TemplateMiner.get_snapshot_reason);
    # a periodic save would only refresh Drain's own counters, which we do not use.
    config.snapshot_interval_minutes = 10**9
    config.masking_instructions = []  # parameterize() does the masking
    return config


def describe_configuration() -> str:
    return (
        f"parameterize: {len(MASKS)} masks ({', '.join(sorted({n for n, _ in MASKS}))}), "
        f"lines cut at {MAX_LINE_CHARS} chars, placeholder runs collapsed; "
        f"drain3 sim_th={DRAIN_SIM_TH} depth={DRAIN_DEPTH} max_children={DRAIN_MAX_CHILDREN}; "
        f"word-aware similarity; sibling merge at {SIBLING_MERGE_AT} "
        f"(key=word: {SIBLING_MERGE_AT_KEY_VALUE}), min {SIBLING_MIN_LITERALS} literals"
    )
