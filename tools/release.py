"""Release records, changelog agreement, release tags and the sibling compatibility matrix.

Releases are recorded in ``tools/releases.toml`` as ``(distribution, version, commit, date)``
and tagged ``<dist>-v<version>``. Each member keeps a Keep a Changelog ``CHANGELOG.md`` and the
root ``RELEASES.md`` holds one ``## <dist>-v<version>`` section per release, newest first.

The same file may list *history* entries, ``[[history]]`` tables of ``(distribution, version,
note[, date])``: CHANGELOG versions that document the line a member inherits (for example from
the reference project) but that this project never published. They need no record, commit or
RELEASES.md section, get no tag and never appear in the matrix; ``record`` refuses them.

*Known failures*, ``[[known-failure]]`` tables of ``(distribution, version, python, test,
reason)``, name a test of a recorded release that fails for a reason outside the released code
(for instance a test that a later Python breaks); the compatibility rows of that release on
those Pythons deselect it and say so. A record is never edited, so this is the only way to keep
such a release's rows meaningful.

Subcommands (all accept ``--root PATH``, default: the repository holding this file):

* ``check``: the records, the pyproject versions, the CHANGELOGs, RELEASES.md and ``uv.lock``
  agree.
* ``tag [<dist> <version> | --all-missing] [--dry-run] [--push]``: create the annotated
  ``<dist>-v<version>`` tag of the release named (default: the releases recorded at ``HEAD``;
  ``--all-missing``: every record lacking a tag); other missing tags are only reported.
* ``matrix [--json]``: every dependent x every sibling version its ranges admit.
* ``record <dist> <version> [--commit SHA] [--date YYYY-MM-DD]``: append a release record
  (refused for a history version, and for a commit that does not hold the whole release).

The module is importable (``load_workspace``, ``check``, ``compute_matrix``, ...) so the
noxfile can use the matrix without shelling out. Only the standard library and ``packaging``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from itertools import combinations, pairwise, product
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence

DEFAULT_ROOT = Path(__file__).resolve().parent.parent
RECORDS_FILE = "tools/releases.toml"
RELEASE_NOTES_FILE = "RELEASES.md"
CHANGELOG_FILE = "CHANGELOG.md"
LOCK_FILE = "uv.lock"
DEFAULT_MEMBERS = ("packages/*",)
RECORD_KEYS = ("distribution", "version", "commit", "date")
HISTORY_KEYS = ("distribution", "version", "date", "note")
HISTORY_REQUIRED_KEYS = ("distribution", "version", "note")
KNOWN_FAILURE_KEYS = ("distribution", "version", "python", "test", "reason")
TOP_LEVEL_KEYS = ("release", "history", "known-failure")

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_H2_RE = re.compile(r"^##(?!#)\s*(?P<title>.*?)\s*$")
_CHANGELOG_HEADING_RE = re.compile(r"^\[(?P<label>[^\]]+)\](?P<rest>.*)$")
_CHANGELOG_DATE_RE = re.compile(r"^\s*-\s*(?P<date>\S+)")
_LINK_DEF_RE = re.compile(r"^\[(?P<label>[^\]]+)\]:\s*(?P<target>\S+)")
_TAG_RE = re.compile(r"^(?P<dist>[A-Za-z0-9](?:[A-Za-z0-9._-]*?[A-Za-z0-9])?)-v(?P<version>\d\S*)$")
_FENCE_RE = re.compile(r"^\s*(```|~~~)")

Source = Literal["release", "workspace"]


# --------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One recorded release."""

    distribution: str
    version: str
    commit: str
    date: dt.date

    @property
    def key(self) -> str:
        """The canonical distribution name."""
        return canonicalize_name(self.distribution)

    @property
    def tag(self) -> str:
        """The release tag, ``<dist>-v<version>``."""
        return tag_name(self.distribution, self.version)

    @property
    def parsed_version(self) -> Version | None:
        """The version, or ``None`` when it is not valid PEP 440."""
        return parse_version(self.version)


@dataclass(frozen=True)
class HistoryEntry:
    """A CHANGELOG version documented but never published by this project (``[[history]]``).

    It has no commit and no tag: the version line is inherited (for instance from the reference
    project), so recording it as a release would be false.
    """

    distribution: str
    version: str
    note: str
    date: dt.date | None = None

    @property
    def key(self) -> str:
        """The canonical distribution name."""
        return canonicalize_name(self.distribution)

    @property
    def parsed_version(self) -> Version | None:
        """The version, or ``None`` when it is not valid PEP 440."""
        return parse_version(self.version)


@dataclass(frozen=True)
class KnownFailure:
    """A test of a recorded release that fails for a reason outside the released code.

    Records are never edited, and a release's tests are what its compatibility rows run. When
    one of them is wrong (it fails on a Python the release supports, while the code it tests
    works), a ``[[known-failure]]`` table names it with the Pythons it fails on and why; those
    rows deselect it and say so in their result. The workspace's tests are never excused.
    """

    distribution: str
    version: str
    python: str
    """A PEP 440 specifier of the Pythons it fails on, such as ``>=3.12``."""
    test: str
    """The pytest node id, relative to the repository root (a module path without ``::``
    leaves the whole module out, for one that cannot even be imported)."""
    reason: str

    @property
    def key(self) -> str:
        """The canonical distribution name."""
        return canonicalize_name(self.distribution)

    def applies(self, pin: Pin, python: str) -> bool:
        """Whether a row of the recorded release ``pin`` on ``python`` deselects the test."""
        return (
            pin.source == "release"
            and pin.key == self.key
            and pin.version == self.version
            and admits(SpecifierSet(self.python), python)
        )


@dataclass(frozen=True)
class ChangelogEntry:
    """A ``## [label] - date`` heading of a CHANGELOG."""

    label: str
    date: str | None
    line: int

    @property
    def unreleased(self) -> bool:
        """Whether this is the ``[Unreleased]`` section."""
        return self.label.strip().lower() == "unreleased"

    @property
    def version(self) -> Version | None:
        """The released version, or ``None`` (unreleased or not PEP 440)."""
        return None if self.unreleased else parse_version(self.label)


@dataclass(frozen=True)
class Changelog:
    """The structure of a Keep a Changelog file."""

    entries: tuple[ChangelogEntry, ...]
    links: Mapping[str, str]
    stray_headings: tuple[tuple[int, str], ...]
    unreleased_text: str = ""
    """The content of ``## [Unreleased]`` (link definitions and blank lines dropped)."""

    @property
    def has_unreleased_changes(self) -> bool:
        """Whether ``## [Unreleased]`` lists anything: what makes a development version due."""
        return bool(self.unreleased_text)

    @property
    def released(self) -> tuple[ChangelogEntry, ...]:
        """The entries other than ``[Unreleased]``, in file order."""
        return tuple(e for e in self.entries if not e.unreleased)

    def find(self, version: Version) -> ChangelogEntry | None:
        """The released entry for ``version``, if any."""
        return next((e for e in self.released if e.version == version), None)


@dataclass(frozen=True)
class ReleaseNote:
    """A ``## <dist>-v<version>`` section of RELEASES.md."""

    title: str
    distribution: str | None
    version: str | None
    line: int
    body: str

    @property
    def key(self) -> tuple[str, Version] | None:
        """``(canonical dist, version)``, or ``None`` when the heading is not a release tag."""
        if self.distribution is None or self.version is None:
            return None
        version = parse_version(self.version)
        return None if version is None else (canonicalize_name(self.distribution), version)


@dataclass(frozen=True)
class SiblingDependency:
    """A dependency of one workspace member on another."""

    sibling: str
    specifier: SpecifierSet
    requirement: str


@dataclass(frozen=True)
class Distribution:
    """A workspace member."""

    name: str
    version: str
    directory: str
    dependencies: tuple[str, ...]
    changelog: Changelog | None

    @property
    def key(self) -> str:
        """The canonical distribution name."""
        return canonicalize_name(self.name)

    @property
    def changelog_path(self) -> str:
        """The CHANGELOG path relative to the root."""
        return f"{self.directory}/{CHANGELOG_FILE}"

    @property
    def pyproject_path(self) -> str:
        """The pyproject path relative to the root."""
        return f"{self.directory}/pyproject.toml"


@dataclass(frozen=True)
class Workspace:
    """Everything the release tools read from a repository tree."""

    root: Path
    distributions: Mapping[str, Distribution]
    records: tuple[Record, ...]
    release_notes: tuple[ReleaseNote, ...]
    load_problems: tuple[str, ...]
    history: tuple[HistoryEntry, ...] = ()
    lock: str | None = None
    """The text of ``uv.lock``, or None when the tree has none."""
    known_failures: tuple[KnownFailure, ...] = ()

    def history_versions(self, distribution: str) -> set[Version]:
        """The (valid) history versions of ``distribution`` (any spelling)."""
        key = canonicalize_name(distribution)
        return {v for h in self.history if h.key == key and (v := h.parsed_version) is not None}


@dataclass(frozen=True)
class MatrixRow:
    """One (dependent, sibling version) combination of the compatibility matrix."""

    dependent: str
    dependent_version: str
    sibling: str
    sibling_version: str
    source: Source
    commit: str | None

    def as_json(self) -> dict[str, str | None]:
        """The JSON object of ``matrix --json``."""
        return {
            "dependent": self.dependent,
            "dependent_version": self.dependent_version,
            "sibling": self.sibling,
            "sibling_version": self.sibling_version,
            "source": self.source,
            "commit": self.commit,
        }


@dataclass(frozen=True)
class TagPlan:
    """What ``tag`` would do, given the existing tags."""

    create: tuple[Record, ...]
    present: tuple[Record, ...]
    conflicts: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def parse_version(text: str) -> Version | None:
    """Parse a PEP 440 version, ``None`` when invalid."""
    try:
        return Version(text)
    except InvalidVersion:
        return None


def tag_name(distribution: str, version: str) -> str:
    """The release tag of ``distribution`` at ``version``."""
    return f"{distribution}-v{version}"


def _as_table(value: object) -> dict[str, object] | None:
    return cast("dict[str, object]", value) if isinstance(value, dict) else None


def _as_list(value: object) -> list[object] | None:
    return cast("list[object]", value) if isinstance(value, list) else None


def parse_records(text: str, *, source: str = RECORDS_FILE) -> tuple[list[Record], list[str]]:
    """Parse the ``[[release]]`` tables of ``releases.toml``.

    Returns:
        The well-formed records and the structural problems of the whole file (``[[history]]``
        tables included; see :func:`parse_release_file`).
    """
    records, _, problems = parse_release_file(text, source=source)
    return records, problems


def parse_release_file(
    text: str, *, source: str = RECORDS_FILE
) -> tuple[list[Record], list[HistoryEntry], list[str]]:
    """Parse ``releases.toml``: ``[[release]]`` records and ``[[history]]`` entries.

    Returns:
        The well-formed records, the well-formed history entries and the structural problems
        of the others.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [], [], [f"{source}: invalid TOML: {exc}"]
    problems: list[str] = []
    unexpected = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unexpected:
        problems.append(f"{source}: unexpected top-level key(s) {', '.join(unexpected)}")
    records: list[Record] = []
    raw = _as_list(data.get("release", []))
    if raw is None:
        problems.append(f"{source}: `release` must be an array of tables ([[release]])")
    else:
        for index, item in enumerate(raw, start=1):
            record = _parse_record_table(item, f"{source}: release #{index}", problems)
            if record is not None:
                records.append(record)
    history: list[HistoryEntry] = []
    raw = _as_list(data.get("history", []))
    if raw is None:
        problems.append(f"{source}: `history` must be an array of tables ([[history]])")
    else:
        for index, item in enumerate(raw, start=1):
            entry = _parse_history_table(item, f"{source}: history #{index}", problems)
            if entry is not None:
                history.append(entry)
    return records, history, problems


def parse_known_failures(
    text: str, *, source: str = RECORDS_FILE
) -> tuple[list[KnownFailure], list[str]]:
    """Parse the ``[[known-failure]]`` tables of ``releases.toml``.

    Returns:
        The well-formed entries and the problems of the others (a TOML error is reported by
        :func:`parse_release_file`, not here).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return [], []
    problems: list[str] = []
    raw = _as_list(data.get("known-failure", []))
    if raw is None:
        return [], [f"{source}: `known-failure` must be an array of tables ([[known-failure]])"]
    entries: list[KnownFailure] = []
    for index, item in enumerate(raw, start=1):
        where = f"{source}: known-failure #{index}"
        table = _as_table(item)
        if table is None:
            problems.append(f"{where}: not a table")
            continue
        if not _table_keys(
            table, where, problems, required=KNOWN_FAILURE_KEYS, allowed=KNOWN_FAILURE_KEYS
        ):
            continue
        values = {k: table[k] for k in KNOWN_FAILURE_KEYS}
        wrong = [k for k, v in values.items() if not isinstance(v, str) or not v.strip()]
        if wrong:
            problems.append(f"{where}: {', '.join(wrong)} must be non-empty string(s)")
            continue
        try:
            SpecifierSet(str(values["python"]))
        except InvalidSpecifier:
            problems.append(f"{where}: python {values['python']!r} is not a PEP 440 specifier")
            continue
        entries.append(KnownFailure(**{k: str(v).strip() for k, v in values.items()}))
    return entries, problems


def _table_keys(
    table: dict[str, object],
    where: str,
    problems: list[str],
    *,
    required: Sequence[str],
    allowed: Sequence[str],
) -> bool:
    """Report missing and unexpected keys; whether all ``required`` keys are present."""
    missing = [k for k in required if k not in table]
    extra = sorted(set(table) - set(allowed))
    if missing:
        problems.append(f"{where}: missing key(s) {', '.join(missing)}")
    if extra:
        problems.append(f"{where}: unexpected key(s) {', '.join(extra)}")
    return not missing


def _parse_record_table(item: object, where: str, problems: list[str]) -> Record | None:
    table = _as_table(item)
    if table is None:
        problems.append(f"{where}: not a table")
        return None
    if not _table_keys(table, where, problems, required=RECORD_KEYS, allowed=RECORD_KEYS):
        return None
    strings = {k: table[k] for k in ("distribution", "version", "commit")}
    wrong = [k for k, v in strings.items() if not isinstance(v, str)]
    if wrong:
        problems.append(f"{where}: {', '.join(wrong)} must be string(s)")
        return None
    date = _parse_date(table["date"])
    if date is None:
        problems.append(f"{where}: date must be a TOML date or a YYYY-MM-DD string")
        return None
    return Record(
        distribution=str(strings["distribution"]),
        version=str(strings["version"]),
        commit=str(strings["commit"]),
        date=date,
    )


def _parse_history_table(item: object, where: str, problems: list[str]) -> HistoryEntry | None:
    table = _as_table(item)
    if table is None:
        problems.append(f"{where}: not a table")
        return None
    if not _table_keys(
        table, where, problems, required=HISTORY_REQUIRED_KEYS, allowed=HISTORY_KEYS
    ):
        return None
    strings = {k: table[k] for k in HISTORY_REQUIRED_KEYS}
    wrong = [k for k, v in strings.items() if not isinstance(v, str)]
    if wrong:
        problems.append(f"{where}: {', '.join(wrong)} must be string(s)")
        return None
    note = str(strings["note"]).strip()
    if not note:
        problems.append(f"{where}: note must say why this version is history, not a release")
        return None
    date: dt.date | None = None
    if "date" in table:
        date = _parse_date(table["date"])
        if date is None:
            problems.append(f"{where}: date must be a TOML date or a YYYY-MM-DD string")
            return None
    return HistoryEntry(
        distribution=str(strings["distribution"]),
        version=str(strings["version"]),
        note=note,
        date=date,
    )


def _parse_date(value: object) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return None
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None


def _headings(text: str) -> Iterable[tuple[int, str]]:
    """Yield ``(line number, title)`` of the level-2 headings outside fenced code."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE_RE.match(line):
            fenced = not fenced
            continue
        if not fenced and (match := _H2_RE.match(line)):
            yield number, match["title"]


def parse_changelog(text: str) -> Changelog:
    """Parse the ``## [label] - date`` headings and link definitions of a CHANGELOG."""
    entries: list[ChangelogEntry] = []
    stray: list[tuple[int, str]] = []
    for number, title in _headings(text):
        match = _CHANGELOG_HEADING_RE.match(title)
        if match is None:
            stray.append((number, title))
            continue
        date_match = _CHANGELOG_DATE_RE.match(match["rest"])
        entries.append(
            ChangelogEntry(
                label=match["label"].strip(),
                date=date_match["date"] if date_match else None,
                line=number,
            )
        )
    links: dict[str, str] = {}
    lines = text.splitlines()
    for line in lines:
        if link := _LINK_DEF_RE.match(line):
            links[link["label"].strip()] = link["target"]
    return Changelog(
        entries=tuple(entries),
        links=links,
        stray_headings=tuple(stray),
        unreleased_text=_unreleased_text(lines, entries),
    )


def _unreleased_text(lines: Sequence[str], entries: Sequence[ChangelogEntry]) -> str:
    """The body of the first ``## [Unreleased]`` section, without link definitions."""
    for index, entry in enumerate(entries):
        if not entry.unreleased:
            continue
        end = entries[index + 1].line - 1 if index + 1 < len(entries) else len(lines)
        body = [
            line
            for line in lines[entry.line : end]
            if line.strip() and not _LINK_DEF_RE.match(line) and not _H2_RE.match(line)
        ]
        return "\n".join(body).strip()
    return ""


def parse_release_notes(text: str) -> list[ReleaseNote]:
    """Parse the ``## <dist>-v<version>`` sections of RELEASES.md."""
    lines = text.splitlines()
    headings = list(_headings(text))
    notes: list[ReleaseNote] = []
    for index, (number, title) in enumerate(headings):
        end = headings[index + 1][0] - 1 if index + 1 < len(headings) else len(lines)
        body = "\n".join(lines[number:end]).strip()
        match = _TAG_RE.match(title)
        notes.append(
            ReleaseNote(
                title=title,
                distribution=match["dist"] if match else None,
                version=match["version"] if match else None,
                line=number,
                body=body,
            )
        )
    return notes


def parse_lock_versions(text: str) -> tuple[dict[str, str | None], list[str]]:
    """The workspace members' versions recorded in a ``uv.lock``.

    A member is a ``[[package]]`` whose ``source`` is the workspace itself (``editable`` or
    ``virtual``, a path inside the repository); when the lock lists ``[manifest] members``, only
    those names count.

    Returns:
        Canonical name -> the locked version (None when the entry has none), and problems
        (invalid TOML).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return {}, [f"{LOCK_FILE}: invalid TOML: {exc}"]
    manifest = _as_table(data.get("manifest")) or {}
    listed = _as_list(manifest.get("members"))
    members = {canonicalize_name(str(m)) for m in listed} if listed is not None else None
    versions: dict[str, str | None] = {}
    for item in _as_list(data.get("package")) or []:
        package = _as_table(item) or {}
        source = _as_table(package.get("source")) or {}
        name = package.get("name")
        if not isinstance(name, str) or not ({"editable", "virtual"} & set(source)):
            continue
        key = canonicalize_name(name)
        if members is None or key in members:
            version = package.get("version")
            versions[key] = version if isinstance(version, str) else None
    return versions, []


def lock_problems(
    text: str, distributions: Iterable[Distribution], *, where: str = LOCK_FILE
) -> list[str]:
    """Where ``uv.lock`` (its ``text``) disagrees with the members' pyproject versions.

    ``uv lock --check`` fails on exactly these (among other things): after a version bump, `uv
    lock` (or any `uv run`) rewrites the member's entry, and that change belongs in the same
    commit as the bump.
    """
    locked, problems = parse_lock_versions(text)
    if problems:
        return [p.replace(LOCK_FILE, where, 1) for p in problems]
    for dist in distributions:
        if dist.key not in locked:
            problems.append(
                f"{where}: no entry for workspace member {dist.name}; run `uv lock` and commit"
                f" {LOCK_FILE}"
            )
            continue
        version = locked[dist.key]
        parsed = parse_version(version) if version is not None else None
        if parsed is None or parsed != parse_version(dist.version):
            problems.append(
                f"{where}: locks {dist.name} {version or '(no version)'}, but"
                f" {dist.pyproject_path} has version {dist.version}; run `uv lock` and commit"
                f" {LOCK_FILE} with the version change"
            )
    return problems


# --------------------------------------------------------------------------------------------
# Loading a tree
# --------------------------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, object]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def _member_patterns(root: Path) -> tuple[list[str], list[str]]:
    path = root / "pyproject.toml"
    if not path.is_file():
        return list(DEFAULT_MEMBERS), []
    tool = _as_table(_read_toml(path).get("tool")) or {}
    uv = _as_table(tool.get("uv")) or {}
    workspace = _as_table(uv.get("workspace")) or {}
    members = _as_list(workspace.get("members")) or list(DEFAULT_MEMBERS)
    exclude = _as_list(workspace.get("exclude")) or []
    return [str(m) for m in members], [str(e) for e in exclude]


def _load_distribution(root: Path, directory: Path, problems: list[str]) -> Distribution | None:
    rel = directory.relative_to(root).as_posix()
    try:
        data = _read_toml(directory / "pyproject.toml")
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{rel}/pyproject.toml: invalid TOML: {exc}")
        return None
    project = _as_table(data.get("project")) or {}
    name, version = project.get("name"), project.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        problems.append(f"{rel}/pyproject.toml: [project] needs a static `name` and `version`")
        return None
    raw_deps = _as_list(project.get("dependencies")) or []
    changelog_path = directory / CHANGELOG_FILE
    changelog = (
        parse_changelog(changelog_path.read_text(encoding="utf-8"))
        if changelog_path.is_file()
        else None
    )
    return Distribution(
        name=name,
        version=version,
        directory=rel,
        dependencies=tuple(str(d) for d in raw_deps),
        changelog=changelog,
    )


def load_workspace(root: Path) -> Workspace:
    """Read the members, the release records and RELEASES.md under ``root``."""
    problems: list[str] = []
    members, exclude = _member_patterns(root)
    excluded = {p.resolve() for pattern in exclude for p in root.glob(pattern)}
    directories = sorted(
        {
            p.resolve()
            for pattern in members
            for p in root.glob(pattern)
            if (p / "pyproject.toml").is_file() and p.resolve() not in excluded
        }
    )
    distributions: dict[str, Distribution] = {}
    resolved_root = root.resolve()
    for directory in directories:
        dist = _load_distribution(resolved_root, directory, problems)
        if dist is None:
            continue
        if dist.key in distributions:
            problems.append(f"{dist.pyproject_path}: distribution {dist.name} defined twice")
            continue
        distributions[dist.key] = dist
    records_path = root / RECORDS_FILE
    records: list[Record] = []
    history: list[HistoryEntry] = []
    known_failures: list[KnownFailure] = []
    if records_path.is_file():
        text = records_path.read_text(encoding="utf-8")
        records, history, record_problems = parse_release_file(text)
        problems.extend(record_problems)
        known_failures, failure_problems = parse_known_failures(text)
        problems.extend(failure_problems)
    else:
        problems.append(f"{RECORDS_FILE}: missing")
    notes_path = root / RELEASE_NOTES_FILE
    notes = (
        parse_release_notes(notes_path.read_text(encoding="utf-8")) if notes_path.is_file() else []
    )
    lock_path = root / LOCK_FILE
    return Workspace(
        root=root,
        distributions=dict(sorted(distributions.items())),
        records=tuple(records),
        release_notes=tuple(notes),
        load_problems=tuple(problems),
        history=tuple(history),
        lock=lock_path.read_text(encoding="utf-8") if lock_path.is_file() else None,
        known_failures=tuple(known_failures),
    )


# --------------------------------------------------------------------------------------------
# Pure computations
# --------------------------------------------------------------------------------------------


def sibling_dependencies(
    dist: Distribution, siblings: Collection[str]
) -> tuple[list[SiblingDependency], list[str]]:
    """The direct dependencies of ``dist`` on other members (canonical names in ``siblings``).

    Requirements naming the same sibling more than once are intersected.

    Returns:
        The sibling dependencies, sorted by sibling, and problems (unparsable requirements).
    """
    found: dict[str, SiblingDependency] = {}
    problems: list[str] = []
    for text in dist.dependencies:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            problems.append(f"{dist.pyproject_path}: invalid dependency {text!r}: {exc}")
            continue
        sibling = canonicalize_name(requirement.name)
        if sibling not in siblings or sibling == dist.key:
            continue
        if sibling in found:
            previous = found[sibling]
            found[sibling] = SiblingDependency(
                sibling=sibling,
                specifier=previous.specifier & requirement.specifier,
                requirement=f"{previous.requirement}; {text}",
            )
        else:
            found[sibling] = SiblingDependency(sibling, requirement.specifier, text)
    return [found[k] for k in sorted(found)], problems


def admits(specifier: SpecifierSet, version: str) -> bool:
    """Whether ``specifier`` admits ``version`` (pre-releases included when in range)."""
    parsed = parse_version(version)
    return parsed is not None and specifier.contains(parsed, prereleases=True)


def compute_matrix(
    distributions: Mapping[str, Distribution],
    records: Sequence[Record],
    history: Iterable[HistoryEntry] = (),
) -> list[MatrixRow]:
    """The compatibility matrix.

    For each dependent and each direct sibling dependency: every recorded release of the
    sibling the dependent's range admits, then the sibling's workspace version if admitted.
    Rows are ordered by dependent, sibling, then ascending version. A version listed in
    ``history`` never appears (there is nothing to build), even where ``check`` would object
    to a record or workspace version equal to it.
    """
    excluded = {(h.key, v) for h in history if (v := h.parsed_version) is not None}
    rows: list[MatrixRow] = []
    for dependent in sorted(distributions.values(), key=lambda d: d.key):
        deps, _ = sibling_dependencies(dependent, distributions.keys())
        for dep in deps:
            sibling = distributions[dep.sibling]
            candidates: list[tuple[Version, int, MatrixRow]] = []
            for record in records:
                version = record.parsed_version
                if record.key != sibling.key or version is None:
                    continue
                if (sibling.key, version) in excluded:
                    continue
                if admits(dep.specifier, record.version):
                    row = MatrixRow(
                        dependent.name,
                        dependent.version,
                        sibling.name,
                        record.version,
                        "release",
                        record.commit,
                    )
                    candidates.append((version, 0, row))
            workspace_version = parse_version(sibling.version)
            if (
                workspace_version is not None
                and (sibling.key, workspace_version) not in excluded
                and admits(dep.specifier, sibling.version)
            ):
                row = MatrixRow(
                    dependent.name,
                    dependent.version,
                    sibling.name,
                    sibling.version,
                    "workspace",
                    None,
                )
                candidates.append((workspace_version, 1, row))
            candidates.sort(key=lambda c: (c[0], c[1]))
            rows.extend(c[2] for c in candidates)
    return rows


@dataclass(frozen=True)
class Pin:
    """One distribution at one version: a recorded release (built from its commit) or the tree."""

    distribution: str
    version: str
    source: Source
    commit: str | None = None

    @property
    def key(self) -> str:
        """The canonical distribution name."""
        return canonicalize_name(self.distribution)

    def label(self) -> str:
        """``taquba 0.8.0`` for a release, ``taquba 0.8.2.dev0 (workspace)`` for the tree."""
        suffix = "" if self.source == "release" else " (workspace)"
        return f"{self.distribution} {self.version}{suffix}"

    def as_json(self) -> dict[str, str | None]:
        """The JSON object of a pin."""
        return {
            "distribution": self.distribution,
            "version": self.version,
            "source": self.source,
            "commit": self.commit,
        }


Resolution = Literal["locked", "highest", "lowest-direct"]


@dataclass(frozen=True)
class CompatRow:
    """One run of a dependent's tests: the dependent, its siblings, a resolution, a Python.

    ``locked`` installs third-party dependencies at the versions of the workspace's ``uv.lock``
    (so only the siblings vary); ``highest`` at the newest versions the ranges admit, ignoring
    the lock; ``lowest-direct`` at the floors every distribution of the row declares.
    """

    dependent: Pin
    siblings: tuple[Pin, ...]
    resolution: Resolution
    python: str
    deselect: tuple[str, ...] = ()
    """Pytest node ids the row leaves out: the dependent release's known failures."""

    def as_json(self) -> dict[str, object]:
        """The JSON object of ``compat --json``."""
        return {
            "dependent": self.dependent.as_json(),
            "siblings": [s.as_json() for s in self.siblings],
            "resolution": self.resolution,
            "python": self.python,
            "deselect": list(self.deselect),
        }


COMPAT_PYTHONS = ("3.11", "3.13")
"""The Pythons of the full compatibility set: the oldest and the newest supported."""


def members_at_commit(ws: Workspace, commit: str) -> dict[str, Distribution]:
    """The members (as the workspace names them) as their pyprojects read at ``commit``.

    A member without a pyproject at that commit is left out.
    """
    found: dict[str, Distribution] = {}
    for member in ws.distributions.values():
        text = show_file(ws.root, commit, member.pyproject_path)
        if text is None:
            continue
        project = _as_table(tomllib.loads(text).get("project")) or {}
        version = project.get("version")
        deps = _as_list(project.get("dependencies")) or []
        if isinstance(version, str):
            found[member.key] = Distribution(
                member.name, version, member.directory, tuple(str(d) for d in deps), None
            )
    return found


def _sibling_candidates(
    ws_dists: Mapping[str, Distribution],
    records: Sequence[Record],
    excluded: Collection[tuple[str, Version]],
    dep: SiblingDependency,
) -> list[Pin]:
    """The versions of a sibling a range admits, ascending: recorded releases, then the tree.

    The workspace version is a candidate only when no record has it (a recorded version is
    built from its commit).
    """
    sibling = ws_dists[dep.sibling]
    found: list[tuple[Version, Pin]] = []
    for record in records:
        version = record.parsed_version
        if record.key != sibling.key or version is None or (sibling.key, version) in excluded:
            continue
        if admits(dep.specifier, record.version):
            found.append((version, Pin(sibling.name, record.version, "release", record.commit)))
    workspace = parse_version(sibling.version)
    if (
        workspace is not None
        and (sibling.key, workspace) not in excluded
        and all(v != workspace for v, _ in found)
        and admits(dep.specifier, sibling.version)
    ):
        found.append((workspace, Pin(sibling.name, sibling.version, "workspace")))
    found.sort(key=lambda item: item[0])
    return [pin for _, pin in found]


def _pin_distribution(
    pin: Pin,
    ws_dists: Mapping[str, Distribution],
    at_commit: Mapping[str, Mapping[str, Distribution]],
) -> Distribution | None:
    if pin.source == "workspace":
        return ws_dists.get(pin.key)
    return at_commit.get(cast("str", pin.commit), {}).get(pin.key)


def _consistent(
    pins: Sequence[Pin],
    ws_dists: Mapping[str, Distribution],
    at_commit: Mapping[str, Mapping[str, Distribution]],
) -> bool:
    """Whether every pin's own sibling ranges admit the other pins (the set is installable)."""
    by_key = {p.key: p for p in pins}
    for pin in pins:
        dist = _pin_distribution(pin, ws_dists, at_commit)
        if dist is None:
            continue
        deps, _ = sibling_dependencies(dist, ws_dists.keys())
        for dep in deps:
            other = by_key.get(dep.sibling)
            if other is not None and not admits(dep.specifier, other.version):
                return False
    return True


def _pairwise_cover(axes: Sequence[Sequence[Pin]]) -> list[tuple[Pin, ...]]:
    """Combinations covering every pair of values of every two axes (all of them for <= 2 axes).

    Greedy: walk the full product in order and keep a combination when it covers a pair no kept
    one does. With one axis, every value.
    """
    everything = list(product(*axes))
    if len(axes) <= 2:
        return everything
    covered: set[tuple[int, Pin, int, Pin]] = set()
    kept: list[tuple[Pin, ...]] = []
    for combo in everything:
        pairs = {(i, combo[i], j, combo[j]) for i, j in combinations(range(len(combo)), 2)}
        if pairs - covered:
            kept.append(combo)
            covered |= pairs
    return kept


def compute_compat(
    distributions: Mapping[str, Distribution],
    records: Sequence[Record],
    history: Iterable[HistoryEntry] = (),
    at_commit: Mapping[str, Mapping[str, Distribution]] | None = None,
    *,
    subset: bool = False,
    pythons: Sequence[str] = COMPAT_PYTHONS,
    known_failures: Sequence[KnownFailure] = (),
) -> list[CompatRow]:
    """The rows of the compatibility set, derived from the records and the sibling ranges.

    Full set (``subset=False``), on every Python of ``pythons``:

    - ``locked`` rows: each dependent, at its workspace version and at each of its recorded
      releases (with the ranges of that release's pyproject, from ``at_commit``: commit ->
      members there), against every combination of the sibling versions those ranges admit
      (recorded releases, and the workspace version when no record has it), keeping only
      combinations whose members' own ranges admit each other. The combination of the
      workspace dependent with workspace siblings only is left out: the ``tests`` sessions run
      it from the lock.
    - ``highest`` and ``lowest-direct`` rows: every distribution at its workspace version, with
      workspace siblings.

    Subset (``subset=True``): each dependent at its workspace version against the oldest and
    the newest admitted recorded release of each sibling (the workspace version for a sibling
    with no admitted record), every pair of siblings covered, on ``pythons[0]``; then one
    ``highest`` row on ``pythons[-1]`` and one ``lowest-direct`` row on ``pythons[0]``, for the
    dependent with the most siblings (the widest set of third-party dependencies).

    A row of a dependent's recorded release deselects the ``known_failures`` of that release
    on the row's Python.
    """
    at_commit = at_commit or {}
    excluded = {(h.key, v) for h in history if (v := h.parsed_version) is not None}
    keys = list(distributions)
    rows: list[CompatRow] = []
    widest: tuple[int, Distribution] | None = None
    for dependent in sorted(distributions.values(), key=lambda d: d.key):
        versions: list[tuple[Pin, Distribution]] = [
            (Pin(dependent.name, dependent.version, "workspace"), dependent)
        ]
        if not subset:
            own = sorted(
                (r for r in records if r.key == dependent.key and r.parsed_version is not None),
                key=lambda r: cast("Version", r.parsed_version),
            )
            for record in own:
                if (dependent.key, record.parsed_version) in excluded:
                    continue
                there = at_commit.get(record.commit, {}).get(dependent.key)
                if there is not None:
                    pin = Pin(dependent.name, record.version, "release", record.commit)
                    versions.append((pin, there))
        for pin, dist in versions:
            deps, _ = sibling_dependencies(dist, keys)
            if not deps:
                continue
            if pin.source == "workspace" and (widest is None or len(deps) > widest[0]):
                widest = (len(deps), dependent)
            axes = [_sibling_candidates(distributions, records, excluded, d) for d in deps]
            if subset:
                axes = [_extremes(axis) for axis in axes]
                combos = _pairwise_cover(axes)
            else:
                combos = list(product(*axes))
            for combo in combos:
                if not combo or (
                    pin.source == "workspace" and all(s.source == "workspace" for s in combo)
                ):
                    continue
                if (
                    subset
                    and pin.source == "workspace"
                    and all(_is_workspace_release(s, distributions) for s in combo)
                ):
                    # The tests sessions already run this combination: a release whose version
                    # is the workspace's has the workspace's code (`check` refuses a change to
                    # a member's src since its newest release without an Unreleased entry).
                    continue
                if not _consistent([pin, *combo], distributions, at_commit):
                    continue
                rows.extend(
                    CompatRow(
                        pin,
                        tuple(combo),
                        "locked",
                        python,
                        tuple(k.test for k in known_failures if k.applies(pin, python)),
                    )
                    for python in (pythons[:1] if subset else pythons)
                )
    resolutions: list[tuple[Distribution, Resolution, str]] = []
    if subset:
        if widest is not None:
            resolutions = [
                (widest[1], "highest", pythons[-1]),
                (widest[1], "lowest-direct", pythons[0]),
            ]
    else:
        resolutions = [
            (dist, resolution, python)
            for dist in sorted(distributions.values(), key=lambda d: d.key)
            for resolution in cast("tuple[Resolution, ...]", ("highest", "lowest-direct"))
            for python in pythons
        ]
    for dist, resolution, python in resolutions:
        deps, _ = sibling_dependencies(dist, keys)
        siblings = tuple(
            Pin(distributions[d.sibling].name, distributions[d.sibling].version, "workspace")
            for d in deps
        )
        rows.append(
            CompatRow(Pin(dist.name, dist.version, "workspace"), siblings, resolution, python)
        )
    return rows


def _is_workspace_release(pin: Pin, distributions: Mapping[str, Distribution]) -> bool:
    """Whether ``pin`` is the workspace tree, or the recorded release the tree still is."""
    if pin.source == "workspace":
        return True
    member = distributions.get(pin.key)
    return member is not None and member.version == pin.version


def _extremes(axis: Sequence[Pin]) -> list[Pin]:
    """The oldest and the newest recorded release of an axis; the axis itself if none."""
    released = [p for p in axis if p.source == "release"]
    if not released:
        return list(axis)
    return list(dict.fromkeys([released[0], released[-1]]))


def load_compat(ws: Workspace, *, subset: bool = False) -> list[CompatRow]:
    """:func:`compute_compat` for a repository: reads the members at every recorded commit."""
    at_commit = {commit: members_at_commit(ws, commit) for commit in {r.commit for r in ws.records}}
    return compute_compat(
        ws.distributions,
        ws.records,
        ws.history,
        at_commit,
        subset=subset,
        known_failures=ws.known_failures,
    )


def newest_records(records: Iterable[Record]) -> dict[str, Record]:
    """The highest-versioned record of each distribution (canonical name -> record)."""
    newest: dict[str, Record] = {}
    for record in records:
        version = record.parsed_version
        if version is None:
            continue
        current = newest.get(record.key)
        if current is None or version > cast("Version", current.parsed_version):
            newest[record.key] = record
    return newest


def _check_records(ws: Workspace) -> list[str]:
    problems: list[str] = []
    seen: dict[tuple[str, Version], int] = {}
    for index, record in enumerate(ws.records, start=1):
        where = f"{RECORDS_FILE}: release #{index} ({record.distribution} {record.version})"
        if not _SHA_RE.match(record.commit):
            problems.append(f"{where}: commit {record.commit!r} is not a 40-hex lowercase SHA")
        version = record.parsed_version
        if version is None:
            problems.append(f"{where}: version is not PEP 440")
            continue
        if str(version) != record.version:
            problems.append(f"{where}: write the version in normal form, {version}")
        if version.is_devrelease:
            problems.append(f"{where}: a development version is never released")
        key = (record.key, version)
        if key in seen:
            problems.append(f"{where}: duplicate of release #{seen[key]}")
        else:
            seen[key] = index
        dist = ws.distributions.get(record.key)
        if dist is None:
            problems.append(f"{where}: no workspace member named {record.distribution}")
            continue
        if record.distribution != dist.name:
            problems.append(f"{where}: spell the distribution as in its pyproject, {dist.name}")
        if dist.changelog is not None:
            entry = dist.changelog.find(version)
            if entry is None:
                problems.append(
                    f"{dist.changelog_path}: no `## [{record.version}]` section"
                    f" for recorded release {record.tag}"
                )
            elif entry.date is not None and entry.date != record.date.isoformat():
                problems.append(
                    f"{dist.changelog_path}:{entry.line}: date {entry.date} disagrees with"
                    f" the record of {record.tag} ({record.date.isoformat()})"
                )
        if not any(note.key == key for note in ws.release_notes):
            problems.append(
                f"{RELEASE_NOTES_FILE}: no `## {record.tag}` section for recorded release"
            )
    return problems


def _check_known_failures(ws: Workspace) -> list[str]:
    """A known failure names a recorded release and a test of that release's own tests."""
    problems: list[str] = []
    recorded = {(r.key, r.version) for r in ws.records}
    for index, failure in enumerate(ws.known_failures, start=1):
        where = f"{RECORDS_FILE}: known-failure #{index} ({failure.distribution} {failure.version})"
        if (failure.key, failure.version) not in recorded:
            problems.append(
                f"{where}: not a recorded release (the workspace's tests are never excused)"
            )
        dist = ws.distributions.get(failure.key)
        prefix = f"{dist.directory if dist else 'packages/' + failure.distribution}/tests/"
        if not failure.test.startswith(prefix):
            problems.append(f"{where}: test must be a node id under {prefix}")
    return problems


def pending_releases(ws: Workspace) -> list[tuple[str, str]]:
    """Releases prepared but not recorded yet, as ``(distribution, version)``.

    A record names the commit holding the release, so it can only land in a later commit. Until
    then the CHANGELOG's top released entry equals the pyproject version and has no record:
    ``check`` accepts that entry (and its RELEASES.md section) as pending. A history version is
    never pending.
    """
    recorded = {(r.key, r.parsed_version) for r in ws.records}
    recorded |= {(h.key, h.parsed_version) for h in ws.history}
    pending: list[tuple[str, str]] = []
    for dist in ws.distributions.values():
        version = parse_version(dist.version)
        released = dist.changelog.released if dist.changelog else ()
        if (
            version is not None
            and released
            and released[0].version == version
            and (dist.key, version) not in recorded
        ):
            pending.append((dist.name, dist.version))
    return pending


def _check_changelog(
    dist: Distribution,
    recorded: Collection[Version],
    pending: Version | None,
    history: Collection[Version] = (),
) -> list[str]:
    changelog = dist.changelog
    path = dist.changelog_path
    if changelog is None:
        return [f"{path}: missing"]
    problems = [
        f"{path}:{line}: heading `## {title}` is not `## [<version>] - <date>` or `## [Unreleased]`"
        for line, title in changelog.stray_headings
    ]
    unreleased = [e for e in changelog.entries if e.unreleased]
    if unreleased and changelog.entries[0] is not unreleased[0]:
        problems.append(f"{path}:{unreleased[0].line}: `## [Unreleased]` must come first")
    if len(unreleased) > 1:
        problems.append(f"{path}:{unreleased[1].line}: more than one `## [Unreleased]`")
    previous: ChangelogEntry | None = None
    for entry in changelog.released:
        version = entry.version
        if version is None:
            problems.append(f"{path}:{entry.line}: `[{entry.label}]` is not a PEP 440 version")
            continue
        is_history = version in history
        # A history entry may be undated (its line was not released here); a date it carries
        # must still be a date.
        if (entry.date is None and not is_history) or (
            entry.date is not None and _parse_date(entry.date) is None
        ):
            problems.append(f"{path}:{entry.line}: `[{entry.label}]` needs a ` - YYYY-MM-DD` date")
        if version not in recorded and version != pending and not is_history:
            problems.append(
                f"{path}:{entry.line}: [{entry.label}] has no release record in {RECORDS_FILE}"
            )
        if previous is not None and not cast("Version", previous.version) > version:
            problems.append(
                f"{path}:{entry.line}: versions must descend: [{entry.label}] follows"
                f" [{previous.label}]"
            )
        previous = entry
        if is_history and version not in recorded:
            continue  # no tag to link to: any link definition (or none) is fine
        link = changelog.links.get(entry.label)
        tag = tag_name(dist.name, entry.label)
        if link is not None and tag not in link:
            problems.append(f"{path}: link for [{entry.label}] should point at tag {tag}")
    return problems


def next_development_version(version: str) -> str:
    """The development version that follows release ``version``: the next patch, ``.dev0``."""
    parsed = Version(version)
    major, minor, patch = (*parsed.release, 0, 0)[:3]
    return f"{major}.{minor}.{patch + 1}.dev0"


def _check_development_version(
    dist: Distribution, version: Version, latest: Record | None, pending: Version | None
) -> list[str]:
    """Unreleased changes carry a development version; no unreleased change, the release's.

    A non-empty ``## [Unreleased]`` needs a ``.devN`` of a version above the newest record (the
    next patch, ``.dev0``, unless the change is breaking); an empty one needs the newest
    recorded release itself, or a release prepared and waiting for its record.
    """
    if dist.changelog is None:
        return []
    latest_version = latest.parsed_version if latest is not None else None
    where = f"{dist.pyproject_path}: version {dist.version}"
    if dist.changelog.has_unreleased_changes:
        base = Version(version.base_version)
        if not version.is_devrelease:
            hint = (
                f" (the next one is {next_development_version(latest.version)})"
                if latest is not None
                else ""
            )
            return [
                f"{where}: {dist.changelog_path} lists unreleased changes, so the version must"
                f" be a development version `X.Y.Z.devN`{hint}; set the release version only"
                " in the release commit, which empties `## [Unreleased]`"
            ]
        if latest_version is not None and not base > latest_version:
            return [
                f"{where}: a development version must lead to a version above the newest"
                f" recorded release {latest.version if latest else ''}"
                f" (e.g. {next_development_version(latest.version) if latest else ''})"
            ]
        return []
    if version.is_devrelease:
        return [
            f"{where}: a development version, but `## [Unreleased]` in {dist.changelog_path}"
            " is empty; list the unreleased changes, or go back to the newest release's version"
        ]
    if latest_version is not None and version != latest_version and version != pending:
        return [
            f"{where}: `## [Unreleased]` in {dist.changelog_path} is empty, so the version"
            f" must be the newest recorded release {latest.version if latest else ''} (or a"
            " release prepared in this commit: a dated CHANGELOG entry and a RELEASES.md"
            " section for it)"
        ]
    return []


def _check_unlogged_source_changes(dist: Distribution, root: Path, latest: Record) -> list[str]:
    """A member whose shipped code changed since its newest release must say so.

    Compares ``<member>/src`` in the working tree with the newest recorded release's commit:
    a difference with an empty ``## [Unreleased]`` is a change nobody logged (and whose build
    would carry the released version number). Skipped when the tree is not a git repository
    or lacks that commit (a shallow clone, an sdist).
    """
    if dist.changelog is None or dist.changelog.has_unreleased_changes:
        return []
    source = f"{dist.directory}/src"
    try:
        _git(root, "cat-file", "-e", f"{latest.commit}^{{commit}}")
        changed = _git(root, "diff", "--name-only", latest.commit, "--", source).split()
    except GitError:
        return []
    if not changed:
        return []
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return [
        f"{dist.changelog_path}: `## [Unreleased]` is empty, but {source} changed since"
        f" {latest.tag} (commit {latest.commit[:12]}): {shown}; describe the change under"
        f" `## [Unreleased]` and set a development version (the next one is"
        f" {next_development_version(latest.version)})"
    ]


def _check_distribution(
    dist: Distribution, ws: Workspace, newest: Mapping[str, Record]
) -> list[str]:
    problems: list[str] = []
    version = parse_version(dist.version)
    if version is None:
        return [f"{dist.pyproject_path}: version {dist.version!r} is not PEP 440"]
    recorded = {r.parsed_version for r in ws.records if r.key == dist.key}
    pending = version if (dist.name, dist.version) in pending_releases(ws) else None
    problems.extend(
        _check_changelog(
            dist, {v for v in recorded if v is not None}, pending, ws.history_versions(dist.key)
        )
    )
    latest = newest.get(dist.key)
    if latest is not None:
        latest_version = cast("Version", latest.parsed_version)
        if version < latest_version:
            problems.append(
                f"{dist.pyproject_path}: version {dist.version} is lower than the newest"
                f" recorded release {latest.version}"
            )
        if version == latest_version and dist.changelog is not None:
            released = dist.changelog.released
            top = released[0].label if released else None
            if top != latest.version:
                problems.append(
                    f"{dist.changelog_path}: top released entry is "
                    f"{f'[{top}]' if top else 'missing'}, expected [{latest.version}]"
                    f" (pyproject version {dist.version} is the newest recorded release)"
                )
    problems.extend(_check_development_version(dist, version, latest, pending))
    if latest is not None and pending is None:
        problems.extend(_check_unlogged_source_changes(dist, ws.root, latest))
    deps, dep_problems = sibling_dependencies(dist, ws.distributions.keys())
    problems.extend(dep_problems)
    for dep in deps:
        sibling = ws.distributions[dep.sibling]
        if not admits(dep.specifier, sibling.version):
            problems.append(
                f"{dist.pyproject_path}: `{dep.requirement}` does not admit the workspace"
                f" version of {sibling.name} ({sibling.version})"
            )
    return problems


def _check_release_notes(ws: Workspace) -> list[str]:
    problems: list[str] = []
    by_key = {(r.key, v): r for r in ws.records if (v := r.parsed_version) is not None}
    pending = {
        (canonicalize_name(d), v)
        for d, text in pending_releases(ws)
        if (v := parse_version(text)) is not None
    }
    history = {(h.key, v) for h in ws.history if (v := h.parsed_version) is not None}
    seen: set[tuple[str, Version]] = set()
    ordered: list[tuple[ReleaseNote, Record]] = []
    for note in ws.release_notes:
        where = f"{RELEASE_NOTES_FILE}:{note.line}"
        key = note.key
        if key is None:
            problems.append(f"{where}: heading `## {note.title}` is not `## <dist>-v<version>`")
            continue
        if key in seen:
            problems.append(f"{where}: duplicate section `## {note.title}`")
            continue
        seen.add(key)
        record = by_key.get(key)
        if record is None and key in history:
            problems.append(
                f"{where}: `## {note.title}` is a history entry in {RECORDS_FILE}, never"
                " released by this project: history versions get no RELEASES.md section"
            )
            continue
        if record is None and key in pending:
            if not note.body:
                problems.append(f"{where}: `## {note.title}` has no release notes")
            continue
        if record is None:
            problems.append(f"{where}: `## {note.title}` has no release record in {RECORDS_FILE}")
            continue
        if note.title != record.tag:
            problems.append(f"{where}: heading should read `## {record.tag}`")
        if not note.body:
            problems.append(f"{where}: `## {note.title}` has no release notes")
        ordered.append((note, record))
    for (note_a, rec_a), (note_b, rec_b) in pairwise(ordered):
        later_first = rec_a.date > rec_b.date or (
            rec_a.date == rec_b.date
            and (
                rec_a.key != rec_b.key
                or cast("Version", rec_a.parsed_version) > cast("Version", rec_b.parsed_version)
            )
        )
        if not later_first:
            problems.append(
                f"{RELEASE_NOTES_FILE}:{note_b.line}: newest first: `## {note_b.title}`"
                f" ({rec_b.date}) must come before `## {note_a.title}` ({rec_a.date})"
            )
    return problems


def _check_history(ws: Workspace) -> list[str]:
    problems: list[str] = []
    seen: dict[tuple[str, Version], int] = {}
    recorded = {
        (r.key, v): index
        for index, r in enumerate(ws.records, start=1)
        if (v := r.parsed_version) is not None
    }
    for index, entry in enumerate(ws.history, start=1):
        where = f"{RECORDS_FILE}: history #{index} ({entry.distribution} {entry.version})"
        version = entry.parsed_version
        if version is None:
            problems.append(f"{where}: version is not PEP 440")
            continue
        if str(version) != entry.version:
            problems.append(f"{where}: write the version in normal form, {version}")
        key = (entry.key, version)
        if key in seen:
            problems.append(f"{where}: duplicate of history #{seen[key]}")
        else:
            seen[key] = index
        if key in recorded:
            problems.append(
                f"{where}: also recorded as release #{recorded[key]}; a version is either a"
                " release or history, not both"
            )
        dist = ws.distributions.get(entry.key)
        if dist is None:
            problems.append(f"{where}: no workspace member named {entry.distribution}")
            continue
        if entry.distribution != dist.name:
            problems.append(f"{where}: spell the distribution as in its pyproject, {dist.name}")
        lower = sorted(
            (r for r in ws.records if r.key == dist.key and r.parsed_version is not None),
            key=lambda r: cast("Version", r.parsed_version),
        )
        lower = [r for r in lower if cast("Version", r.parsed_version) < version]
        if lower:
            problems.append(
                f"{where}: a history version must be lower than every recorded release of"
                f" {dist.name}, but {', '.join(r.tag for r in lower)} is recorded"
            )
        workspace_version = parse_version(dist.version)
        if workspace_version is not None and version >= workspace_version:
            problems.append(
                f"{where}: a history version must be lower than the workspace version of"
                f" {dist.name} ({dist.version}), which is what this project releases next"
            )
        if dist.changelog is None:
            continue
        changelog_entry = dist.changelog.find(version)
        if changelog_entry is None:
            problems.append(
                f"{dist.changelog_path}: no `## [{entry.version}]` section for history entry"
                f" {dist.name} {entry.version}"
            )
        elif entry.date is not None and changelog_entry.date != entry.date.isoformat():
            problems.append(
                f"{dist.changelog_path}:{changelog_entry.line}: date"
                f" {changelog_entry.date or '(none)'} disagrees with history entry"
                f" {dist.name} {entry.version} ({entry.date.isoformat()})"
            )
    return problems


def check(ws: Workspace) -> list[str]:
    """Every disagreement between records, pyproject versions, CHANGELOGs and RELEASES.md.

    Rules: each record names a member, has a 40-hex commit and a normal-form PEP 440 version,
    and is unique; its version has a CHANGELOG section (same date) and a RELEASES.md section.
    A member's version is never lower than its newest record; when equal, the CHANGELOG's top
    released entry is that version. CHANGELOG versions descend and each has a record;
    RELEASES.md sections each have a record, are newest first and are not empty. Each sibling
    range admits the sibling's workspace version. A release prepared but not yet recorded (see
    :func:`pending_releases`) is exempt from "each has a record".

    History entries (``[[history]]``) are CHANGELOG versions this project never published: they
    need no record and may be undated, their link definitions are not checked, and they must
    not have a RELEASES.md section. Each is a normal-form PEP 440 version of a member, unique,
    not also recorded, lower than every recorded release and than the workspace version (so
    lower than a pending release), with a CHANGELOG section (dated the same when it has a date).

    When the tree has a ``uv.lock``, it must lock every member at its pyproject version (see
    :func:`lock_problems`).
    """
    newest = newest_records(ws.records)
    problems = [
        *ws.load_problems,
        *_check_records(ws),
        *_check_history(ws),
        *_check_known_failures(ws),
    ]
    for dist in ws.distributions.values():
        problems.extend(_check_distribution(dist, ws, newest))
    problems.extend(_check_release_notes(ws))
    if ws.lock is not None:
        problems.extend(lock_problems(ws.lock, ws.distributions.values()))
    return problems


def plan_tags(records: Iterable[Record], existing: Mapping[str, str]) -> TagPlan:
    """Decide which tags to create, given ``existing`` (tag name -> peeled commit SHA)."""
    create: list[Record] = []
    present: list[Record] = []
    conflicts: list[str] = []
    for record in records:
        commit = existing.get(record.tag)
        if commit is None:
            create.append(record)
        elif commit == record.commit:
            present.append(record)
        else:
            conflicts.append(
                f"tag {record.tag} points at {commit}, but the record says {record.commit}"
            )
    return TagPlan(tuple(create), tuple(present), tuple(conflicts))


def render_record(record: Record) -> str:
    """The ``[[release]]`` table of ``record``."""
    return (
        "[[release]]\n"
        f"distribution = {json.dumps(record.distribution)}\n"
        f"version = {json.dumps(record.version)}\n"
        f"commit = {json.dumps(record.commit)}\n"
        f"date = {record.date.isoformat()}\n"
    )


def append_record(text: str, record: Record) -> str:
    """``text`` (a releases.toml) with ``record`` appended, one blank line between tables."""
    head = text.rstrip()
    return f"{head}\n\n{render_record(record)}" if head else render_record(record)


def validate_new_record(ws: Workspace, distribution: str, version: str) -> list[str]:
    """Problems that forbid recording ``distribution`` ``version``."""
    dist = ws.distributions.get(canonicalize_name(distribution))
    if dist is None:
        known = ", ".join(d.name for d in ws.distributions.values())
        return [f"no workspace member named {distribution} (members: {known})"]
    parsed = parse_version(version)
    if parsed is None:
        return [f"version {version!r} is not PEP 440"]
    problems: list[str] = []
    if parsed.is_devrelease:
        problems.append(
            f"{version} is a development version; release (and record) {parsed.base_version}"
        )
    if version != dist.version:
        problems.append(
            f"{dist.pyproject_path} has version {dist.version}; bump it before recording {version}"
        )
    for entry in ws.history:
        if entry.key != dist.key or entry.parsed_version is None:
            continue
        if entry.parsed_version == parsed:
            problems.append(
                f"{dist.name} {version} is listed as history in {RECORDS_FILE} ({entry.note});"
                " a history version was never published here and cannot be recorded"
            )
        elif entry.parsed_version > parsed:
            problems.append(
                f"{dist.name} {version} is older than history entry {entry.version}; history"
                " versions must be lower than every release"
            )
    for record in ws.records:
        if record.key != dist.key or record.parsed_version is None:
            continue
        if record.parsed_version == parsed:
            problems.append(f"{record.tag} is already recorded (commit {record.commit})")
        elif record.parsed_version > parsed:
            problems.append(f"{record.tag} is already recorded and is newer than {version}")
    return problems


# --------------------------------------------------------------------------------------------
# git
# --------------------------------------------------------------------------------------------


class GitError(RuntimeError):
    """A git command failed."""


def _git(root: Path, *args: str, stdin: str | None = None) -> str:
    try:
        completed = subprocess.run(
            ["git", "-C", str(root), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise GitError("git is not installed") from exc
    if completed.returncode != 0:
        message = completed.stderr.strip() or completed.stdout.strip()
        raise GitError(f"git {' '.join(args)}: {message}")
    return completed.stdout


def existing_tags(root: Path) -> dict[str, str]:
    """Tag name -> the commit it points at (annotated tags peeled)."""
    out = _git(
        root,
        "for-each-ref",
        "refs/tags",
        "--format=%(refname:strip=2) %(objectname) %(*objectname)",
    )
    tags: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            tags[parts[0]] = parts[2] if len(parts) > 2 else parts[1]
    return tags


def resolve_commit(root: Path, revision: str) -> str:
    """The full SHA of the commit ``revision`` names."""
    return _git(root, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").strip()


def has_commit(root: Path, sha: str) -> bool:
    """Whether the repository holds commit ``sha``."""
    try:
        _git(root, "cat-file", "-e", f"{sha}^{{commit}}")
    except GitError:
        return False
    return True


def tag_message(record: Record, notes: Iterable[ReleaseNote]) -> str:
    """The annotation of ``record``'s tag: a title line and its RELEASES.md notes."""
    title = f"{record.distribution} {record.version}"
    body = next((n.body for n in notes if n.title == record.tag), "")
    return f"{title}\n\n{body}\n" if body else f"{title}\n"


def show_file(root: Path, commit: str, path: str) -> str | None:
    """The text of ``path`` at ``commit``, or None when the commit has no such file."""
    try:
        return _git(root, "show", f"{commit}:{path}")
    except GitError:
        return None


def release_commit_problems(ws: Workspace, record: Record) -> list[str]:
    """Why ``record``'s commit is not the release it claims to be (empty: it is).

    The commit is what the release workflow builds, so it must hold the whole release: the
    member's pyproject at the version, its CHANGELOG's top released entry for the version, a
    non-empty RELEASES.md section, and (when the commit has a ``uv.lock``) a lock that agrees
    with every member's pyproject version there, as ``uv lock --check`` would.
    """
    root, sha, tag = ws.root, record.commit, record.tag
    dist = ws.distributions.get(record.key)
    if dist is None:
        return [f"{tag}: no workspace member named {record.distribution}"]
    at = f"{tag} (commit {sha[:12]})"
    problems: list[str] = []
    members: list[Distribution] = []
    for member in ws.distributions.values():
        text = show_file(root, sha, member.pyproject_path)
        if text is None:
            if member.key == dist.key:
                problems.append(f"{at}: has no {member.pyproject_path}")
            continue
        try:
            project = _as_table(tomllib.loads(text).get("project")) or {}
        except tomllib.TOMLDecodeError:
            problems.append(f"{at}: {member.pyproject_path} is not valid TOML")
            continue
        version = project.get("version")
        if not isinstance(version, str):
            problems.append(f"{at}: {member.pyproject_path} has no static version")
            continue
        members.append(
            Distribution(member.name, version, member.directory, member.dependencies, None)
        )
        if member.key == dist.key and parse_version(version) != record.parsed_version:
            problems.append(
                f"{at}: {member.pyproject_path} has version {version}, not {record.version}"
            )
    changelog_text = show_file(root, sha, dist.changelog_path)
    released = parse_changelog(changelog_text).released if changelog_text is not None else ()
    top = released[0] if released else None
    if top is None or top.version != record.parsed_version or top.date is None:
        found = f"`## [{top.label}]{f' - {top.date}' if top.date else ''}`" if top else "none"
        problems.append(
            f"{at}: the top released entry of {dist.changelog_path} is {found}, not a dated"
            f" `## [{record.version}] - YYYY-MM-DD`"
        )
    notes_text = show_file(root, sha, RELEASE_NOTES_FILE) or ""
    note = next((n for n in parse_release_notes(notes_text) if n.title == tag), None)
    if note is None or not note.body:
        problems.append(f"{at}: {RELEASE_NOTES_FILE} has no non-empty `## {tag}` section")
    lock_text = show_file(root, sha, LOCK_FILE)
    if lock_text is not None:
        problems.extend(lock_problems(lock_text, members, where=f"{at}: {LOCK_FILE}"))
    return problems


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _report(problems: Sequence[str], what: str) -> None:
    _err(f"release.py {what}: {len(problems)} problem(s):")
    for problem in problems:
        _err(f"  - {problem}")


def cmd_check(root: Path) -> int:
    """Run ``check``."""
    ws = load_workspace(root)
    problems = check(ws)
    if problems:
        _report(problems, "check")
        return 1
    pending = [tag_name(d, v) for d, v in pending_releases(ws)]
    waiting = f", pending record: {', '.join(pending)}" if pending else ""
    count = len(ws.history)
    history = f", {count} history {'entry' if count == 1 else 'entries'}" if count else ""
    print(
        f"release.py check: ok ({len(ws.distributions)} distributions,"
        f" {len(ws.records)} recorded releases{history}{waiting})"
    )
    return 0


def select_records(
    ws: Workspace, head: str, release: tuple[str, str] | None, *, all_missing: bool
) -> tuple[list[Record], list[str]]:
    """The records ``tag`` works on, and why it cannot (a named release without a record).

    ``release`` (distribution, version) names one; ``all_missing`` takes every record (those
    already tagged are reported as present); otherwise the records whose commit is ``head``.
    """
    if release is not None:
        distribution, version = release
        parsed = parse_version(version)
        key = canonicalize_name(distribution)
        found = [r for r in ws.records if r.key == key and r.parsed_version == parsed]
        if not found:
            return [], [
                f"no record of {distribution} {version} in {RECORDS_FILE}; record the release"
                " first (`release.py record`)"
            ]
        return found, []
    if all_missing:
        return list(ws.records), []
    return [r for r in ws.records if r.commit == head], []


def cmd_tag(
    root: Path,
    *,
    dry_run: bool,
    push: bool,
    release: tuple[str, str] | None = None,
    all_missing: bool = False,
) -> int:
    """Run ``tag``: tag the named release, the records of ``HEAD``, or (``--all-missing``) all."""
    ws = load_workspace(root)
    problems = check(ws)
    if problems:
        _report(problems, "tag (fix `check` first)")
        return 1
    try:
        head = resolve_commit(root, "HEAD")
        existing = existing_tags(root)
    except GitError as exc:
        _err(f"release.py tag: {exc}")
        return 1
    selected, refusals = select_records(ws, head, release, all_missing=all_missing)
    plan = plan_tags(selected, existing)
    refusals += plan.conflicts
    for record in plan.create:
        if not has_commit(root, record.commit):
            refusals.append(f"commit {record.commit} of {record.tag} is not in this repository")
        else:
            refusals += release_commit_problems(ws, record)
    if refusals:
        _report(refusals, "tag (refusing; no tag created)")
        return 1
    prefix = "would " if dry_run else ""
    if release is None and not all_missing and not selected:
        print(f"no release record names HEAD ({head[:12]}); nothing to tag")
    try:
        for record in plan.present:
            print(f"exists   {record.tag} -> {record.commit}")
        for record in plan.create:
            if not dry_run:
                _git(
                    root,
                    "tag",
                    "--annotate",
                    "--cleanup=whitespace",
                    "--file=-",
                    record.tag,
                    record.commit,
                    stdin=tag_message(record, ws.release_notes),
                )
            print(f"{prefix}create {record.tag} -> {record.commit}")
        tags = [r.tag for r in (*plan.present, *plan.create)]
        if push and tags:
            if not dry_run:
                _git(root, "push", "origin", *(f"refs/tags/{t}" for t in tags))
            print(f"{prefix}push {len(tags)} tag(s) to origin")
    except GitError as exc:
        _err(f"release.py tag: {exc}")
        return 1
    chosen = {r.tag for r in selected}
    untagged = [r.tag for r in ws.records if r.tag not in existing and r.tag not in chosen]
    if untagged:
        print(
            f"not tagged: {len(untagged)} recorded release(s) have no tag here and were not"
            f" asked for: {', '.join(untagged)}"
        )
        print(
            "  (tag one with `release.py tag <dist> <version>`, all of them with"
            " `release.py tag --all-missing`)"
        )
    print(f"release.py tag: {prefix}create {len(plan.create)}, {len(plan.present)} already present")
    return 0


def format_table(rows: Sequence[MatrixRow]) -> str:
    """The human matrix: an aligned table."""
    header = ("DEPENDENT", "VERSION", "SIBLING", "SIBLING VERSION", "SOURCE", "COMMIT")
    body = [
        (
            r.dependent,
            r.dependent_version,
            r.sibling,
            r.sibling_version,
            r.source,
            r.commit[:12] if r.commit else "-",
        )
        for r in rows
    ]
    widths = [max(len(cells[i]) for cells in (header, *body)) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        for cells in (header, *body)
    )


def cmd_matrix(root: Path, *, as_json: bool) -> int:
    """Run ``matrix``."""
    ws = load_workspace(root)
    rows = compute_matrix(ws.distributions, ws.records, ws.history)
    if as_json:
        print(json.dumps([r.as_json() for r in rows], indent=2))
    else:
        print(format_table(rows))
    return 0


def cmd_record(root: Path, distribution: str, version: str, commit: str, date: dt.date) -> int:
    """Run ``record``."""
    ws = load_workspace(root)
    problems = validate_new_record(ws, distribution, version)
    if problems:
        _report(problems, "record")
        return 1
    try:
        sha = resolve_commit(root, commit)
    except GitError as exc:
        _err(f"release.py record: cannot resolve commit {commit!r}: {exc}")
        return 1
    dist = ws.distributions[canonicalize_name(distribution)]
    record = Record(distribution=dist.name, version=version, commit=sha, date=date)
    problems = release_commit_problems(ws, record)
    if problems:
        _report(problems, f"record (commit {sha[:12]} does not hold the release; nothing written)")
        return 1
    path = root / RECORDS_FILE
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    new = append_record(old, record)
    _, _, parse_problems = parse_release_file(new)
    if parse_problems:
        _report(parse_problems, "record (releases.toml is malformed; nothing written)")
        return 1
    path.write_text(new, encoding="utf-8")
    print(f"recorded {record.tag} at {sha} ({date.isoformat()}) in {RECORDS_FILE}")
    remaining = check(load_workspace(root))
    if remaining:
        print(f"note: `release.py check` still reports {len(remaining)} problem(s):")
        for problem in remaining:
            print(f"  - {problem}")
    return 0


def _date_arg(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; ``--root`` is accepted before or after the subcommand."""
    parser = argparse.ArgumentParser(
        prog="release.py", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help="repository root (default: %(default)s)"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=argparse.SUPPRESS, help="repository root")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", parents=[common], help="records, versions, CHANGELOGs, RELEASES.md")
    tag = sub.add_parser(
        "tag",
        parents=[common],
        help="create the <dist>-v<version> tag of a recorded release",
        description="Tag the release named (DIST VERSION); without one, the releases recorded"
        " at HEAD's commit; with --all-missing, every recorded release that has no tag.",
    )
    tag.add_argument("distribution", nargs="?", help="the release's distribution")
    tag.add_argument("version", nargs="?", help="the release's version")
    tag.add_argument(
        "--all-missing", action="store_true", help="tag every recorded release lacking a tag"
    )
    tag.add_argument("--dry-run", action="store_true", help="print what would be done")
    tag.add_argument("--push", action="store_true", help="git push origin the tags worked on")
    matrix = sub.add_parser("matrix", parents=[common], help="sibling compatibility matrix")
    matrix.add_argument("--json", action="store_true", help="print a JSON list of rows")
    record = sub.add_parser("record", parents=[common], help="append a release record")
    record.add_argument("distribution")
    record.add_argument("version")
    record.add_argument("--commit", default="HEAD", help="commit to record (default: HEAD)")
    record.add_argument(
        "--date",
        type=_date_arg,
        default=None,
        help="release date, YYYY-MM-DD (default: today, UTC)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    root = Path(args.root)
    command = str(args.command)
    if command == "check":
        return cmd_check(root)
    if command == "tag":
        named = cast("str | None", args.distribution), cast("str | None", args.version)
        if (named[0] is None) != (named[1] is None):
            _err("release.py tag: name a release as DIST VERSION (both), or neither")
            return 2
        release = (named[0], named[1]) if named[0] is not None and named[1] is not None else None
        if release is not None and args.all_missing:
            _err("release.py tag: name a release or pass --all-missing, not both")
            return 2
        return cmd_tag(
            root,
            dry_run=bool(args.dry_run),
            push=bool(args.push),
            release=release,
            all_missing=bool(args.all_missing),
        )
    if command == "matrix":
        return cmd_matrix(root, as_json=bool(args.json))
    date = cast("dt.date | None", args.date) or dt.datetime.now(dt.UTC).date()
    return cmd_record(root, str(args.distribution), str(args.version), str(args.commit), date)


if __name__ == "__main__":
    sys.exit(main())
