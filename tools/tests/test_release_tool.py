"""Tests of ``tools/release.py`` against the real tree and small fake workspaces."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import release
from release import MatrixRow

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).resolve().parents[2]

SHA_070 = "7" * 40
SHA_080 = "8" * 40
SHA_081 = "81" * 20
SHA_090 = "9" * 40


# --------------------------------------------------------------------------------------------
# A fake workspace written into tmp_path
# --------------------------------------------------------------------------------------------


@dataclass
class FakeDist:
    name: str
    version: str
    deps: list[str] = field(default_factory=lambda: list[str]())
    # CHANGELOG released entries, in file order: (version, date)
    released: list[tuple[str, str]] = field(default_factory=lambda: list[tuple[str, str]]())
    # The body of `## [Unreleased]` (empty: nothing unreleased)
    unreleased: str = ""


@dataclass
class FakeRecord:
    distribution: str
    version: str
    commit: str
    date: str


@dataclass
class FakeHistory:
    distribution: str
    version: str
    note: str = "documents the line inherited from the reference; not published by this project"
    date: str | None = None


@dataclass
class FakeRepo:
    root: Path
    dists: dict[str, FakeDist] = field(default_factory=lambda: dict[str, FakeDist]())
    records: list[FakeRecord] = field(default_factory=lambda: list[FakeRecord]())
    # RELEASES.md sections in file order: (heading, body)
    notes: list[tuple[str, str]] = field(default_factory=lambda: list[tuple[str, str]]())
    history: list[FakeHistory] = field(default_factory=lambda: list[FakeHistory]())
    # Write a uv.lock locking each member at its version, or at the version given here.
    locked: bool = False
    lock_versions: dict[str, str] = field(default_factory=lambda: dict[str, str]())
    # More tables for releases.toml (known failures), written between history and records.
    extra_tables: str = ""

    def add(self, dist: FakeDist) -> None:
        self.dists[dist.name] = dist

    def prepare(self, dist: str, version: str, date: str) -> None:
        """What a release commit adds: the CHANGELOG entry and the RELEASES.md section."""
        self.dists[dist].released.insert(0, (version, date))
        self.notes.insert(0, (f"{dist}-v{version}", f"### Added\n\n- {dist} {version}."))

    def release(self, dist: str, version: str, commit: str, date: str) -> None:
        """Record a consistent release: record, CHANGELOG entry and RELEASES.md section."""
        self.records.append(FakeRecord(dist, version, commit, date))
        self.prepare(dist, version, date)

    def lock_text(self) -> str:
        members = sorted([*self.dists, "workspace"])
        packages = "".join(
            f'\n[[package]]\nname = "{d.name}"\n'
            f'version = "{self.lock_versions.get(d.name, d.version)}"\n'
            f'source = {{ editable = "packages/{d.name}" }}\n'
            for d in self.dists.values()
        )
        return (
            'version = 1\nrevision = 3\nrequires-python = ">=3.11"\n\n[manifest]\n'
            f"members = {json.dumps(members)}\n{packages}"
            '\n[[package]]\nname = "workspace"\nversion = "0"\nsource = { virtual = "." }\n'
            '\n[[package]]\nname = "croniter"\nversion = "6.0.0"\n'
            'source = { registry = "https://pypi.org/simple" }\n'
        )

    def write(self) -> Path:
        (self.root / "tools").mkdir(parents=True, exist_ok=True)
        (self.root / "pyproject.toml").write_text(
            '[tool.uv.workspace]\nmembers = ["packages/*"]\n', encoding="utf-8"
        )
        for dist in self.dists.values():
            directory = self.root / "packages" / dist.name
            directory.mkdir(parents=True, exist_ok=True)
            deps = ", ".join(json.dumps(d) for d in dist.deps)
            (directory / "pyproject.toml").write_text(
                f'[project]\nname = "{dist.name}"\nversion = "{dist.version}"\n'
                f"dependencies = [{deps}]\n",
                encoding="utf-8",
            )
            # An empty date writes an undated heading, `## [x.y.z]`.
            entries = "".join(
                f"## [{v}]{f' - {d}' if d else ''}\n\n### Added\n\n- Things.\n\n"
                for v, d in dist.released
            )
            unreleased = f"{dist.unreleased}\n\n" if dist.unreleased else ""
            (directory / "CHANGELOG.md").write_text(
                f"# Changelog: {dist.name}\n\n## [Unreleased]\n\n{unreleased}{entries}",
                encoding="utf-8",
            )
        history = "".join(
            f'\n[[history]]\ndistribution = "{h.distribution}"\nversion = "{h.version}"\n'
            + (f"date = {h.date}\n" if h.date else "")
            + f"note = {json.dumps(h.note)}\n"
            for h in self.history
        )
        records = "".join(
            f'\n[[release]]\ndistribution = "{r.distribution}"\nversion = "{r.version}"\n'
            f'commit = "{r.commit}"\ndate = {r.date}\n'
            for r in self.records
        )
        (self.root / "tools" / "releases.toml").write_text(
            f"# release records\n{history}{self.extra_tables}{records}", encoding="utf-8"
        )
        sections = "".join(f"## {h}\n\n{b}\n\n" for h, b in self.notes)
        (self.root / "RELEASES.md").write_text(f"# Releases\n\nIntro.\n\n{sections}", "utf-8")
        if self.locked:
            (self.root / "uv.lock").write_text(self.lock_text(), encoding="utf-8")
        return self.root


def good_repo(root: Path) -> FakeRepo:
    """taquba 0.8.0 (released 0.7.0 and 0.8.0), taquba-cron 0.4.0 needing taquba 0.8.x."""
    repo = FakeRepo(root)
    repo.add(FakeDist("taquba", "0.8.0"))
    repo.add(FakeDist("taquba-cron", "0.4.0", deps=["taquba>=0.8,<0.9", "croniter>=2"]))
    repo.release("taquba", "0.7.0", SHA_070, "2026-10-01")
    repo.release("taquba", "0.8.0", SHA_080, "2026-11-27")
    return repo


def history_repo(root: Path) -> FakeRepo:
    """Like :func:`good_repo`, but taquba 0.7.0 is history: CHANGELOG entry only, no release."""
    repo = FakeRepo(root)
    repo.add(FakeDist("taquba", "0.8.0"))
    repo.add(FakeDist("taquba-cron", "0.4.0", deps=["taquba>=0.7,<0.9", "croniter>=2"]))
    repo.dists["taquba"].released.append(("0.7.0", "2026-10-01"))
    repo.history.append(FakeHistory("taquba", "0.7.0", date="2026-10-01"))
    repo.release("taquba", "0.8.0", SHA_080, "2026-11-27")
    return repo


def problems_of(root: Path) -> list[str]:
    return release.check(release.load_workspace(root))


def cron_rows(root: Path) -> list[MatrixRow]:
    ws = release.load_workspace(root)
    return [
        r for r in release.compute_matrix(ws.distributions, ws.records) if r.sibling == "taquba"
    ]


# --------------------------------------------------------------------------------------------
# The real repository
# --------------------------------------------------------------------------------------------


def test_real_repo_passes_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert release.main(["check", "--root", str(REPO)]) == 0
    assert "release.py check: ok" in capsys.readouterr().out


def test_real_repo_matrix_has_cron_on_workspace_taquba(capsys: pytest.CaptureFixture[str]) -> None:
    ws = release.load_workspace(REPO)
    taquba = ws.distributions["taquba"].version  # whatever the workspace holds now
    cron = ws.distributions["taquba-cron"].version
    rows = release.compute_matrix(ws.distributions, ws.records)
    assert MatrixRow("taquba-cron", cron, "taquba", taquba, "workspace", None) in rows
    assert release.main(["matrix", "--json", "--root", str(REPO)]) == 0
    assert {
        "dependent": "taquba-cron",
        "dependent_version": cron,
        "sibling": "taquba",
        "sibling_version": taquba,
        "source": "workspace",
        "commit": None,
    } in json.loads(capsys.readouterr().out)


def test_real_repo_records_file_parses_cleanly() -> None:
    text = (REPO / "tools" / "releases.toml").read_text(encoding="utf-8")
    _, problems = release.parse_records(text)
    assert problems == []


# --------------------------------------------------------------------------------------------
# matrix
# --------------------------------------------------------------------------------------------


def test_matrix_excludes_recorded_releases_outside_the_range(tmp_path: Path) -> None:
    repo = FakeRepo(tmp_path)
    repo.add(FakeDist("taquba", "0.9.0"))
    repo.add(FakeDist("taquba-cron", "0.4.0", deps=["taquba>=0.8,<0.9"]))
    repo.release("taquba", "0.7.0", SHA_070, "2026-10-01")
    repo.release("taquba", "0.8.0", SHA_080, "2026-11-27")
    repo.release("taquba", "0.8.1", SHA_081, "2026-12-01")
    repo.release("taquba", "0.9.0", SHA_090, "2027-01-10")
    rows = cron_rows(repo.write())
    assert rows == [
        MatrixRow("taquba-cron", "0.4.0", "taquba", "0.8.0", "release", SHA_080),
        MatrixRow("taquba-cron", "0.4.0", "taquba", "0.8.1", "release", SHA_081),
    ]


def test_matrix_adds_the_workspace_version_when_admitted(tmp_path: Path) -> None:
    repo = good_repo(tmp_path)
    repo.dists["taquba"].version = "0.8.1"
    rows = cron_rows(repo.write())
    assert [(r.sibling_version, r.source, r.commit) for r in rows] == [
        ("0.8.0", "release", SHA_080),
        ("0.8.1", "workspace", None),
    ]


def test_matrix_lists_a_released_workspace_version_from_both_sources(tmp_path: Path) -> None:
    rows = cron_rows(good_repo(tmp_path).write())
    assert [(r.sibling_version, r.source) for r in rows] == [
        ("0.8.0", "release"),
        ("0.8.0", "workspace"),
    ]


def test_matrix_covers_direct_siblings_only(tmp_path: Path) -> None:
    repo = good_repo(tmp_path)
    repo.add(FakeDist("taquba-workflow", "0.6.0", deps=["taquba>=0.8,<0.9"]))
    repo.add(FakeDist("taquba-bulk", "0.2.0", deps=["taquba-workflow>=0.6,<0.7"]))
    ws = release.load_workspace(repo.write())
    pairs = {(r.dependent, r.sibling) for r in release.compute_matrix(ws.distributions, ws.records)}
    assert pairs == {
        ("taquba-bulk", "taquba-workflow"),
        ("taquba-cron", "taquba"),
        ("taquba-workflow", "taquba"),
    }


def test_matrix_json_rows_have_the_documented_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = good_repo(tmp_path).write()
    assert release.main(["matrix", "--json", "--root", str(root)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [
        {
            "dependent": "taquba-cron",
            "dependent_version": "0.4.0",
            "sibling": "taquba",
            "sibling_version": "0.8.0",
            "source": "release",
            "commit": SHA_080,
        },
        {
            "dependent": "taquba-cron",
            "dependent_version": "0.4.0",
            "sibling": "taquba",
            "sibling_version": "0.8.0",
            "source": "workspace",
            "commit": None,
        },
    ]


def test_matrix_table_is_aligned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = good_repo(tmp_path).write()
    assert release.main(["--root", str(root), "matrix"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = ["DEPENDENT", "VERSION", "SIBLING", "SIBLING", "VERSION", "SOURCE", "COMMIT"]
    assert lines[0].split() == header
    column = lines[0].index("SOURCE")
    assert [line[column:].split()[0] for line in lines[1:]] == ["release", "workspace"]
    assert SHA_080[:12] in lines[1]


# --------------------------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------------------------


def test_check_passes_a_consistent_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = good_repo(tmp_path).write()
    assert problems_of(root) == []
    assert release.main(["check", "--root", str(root)]) == 0
    assert capsys.readouterr().out.strip() == (
        "release.py check: ok (2 distributions, 2 recorded releases)"
    )


def test_check_allows_a_version_bumped_past_its_newest_record(tmp_path: Path) -> None:
    repo = good_repo(tmp_path)
    repo.dists["taquba"].version = "0.8.1.dev0"
    repo.dists["taquba"].unreleased = "### Fixed\n\n- A thing."
    assert problems_of(repo.write()) == []


# --------------------------------------------------------------------------------------------
# development versions
# --------------------------------------------------------------------------------------------

UNRELEASED = "### Fixed\n\n- A thing."


@pytest.mark.parametrize("version", ["0.8.1.dev0", "0.8.1.dev3", "0.9.0.dev0", "1.0.0rc1.dev0"])
def test_check_accepts_a_development_version_above_the_newest_release(
    tmp_path: Path, version: str
) -> None:
    repo = good_repo(tmp_path)
    repo.locked = True
    repo.dists["taquba"].version = version
    repo.dists["taquba"].unreleased = UNRELEASED
    # `taquba>=0.8,<0.9` admits a dev release of 0.8.x, not of 0.9.0 (PEP 440 `<`).
    if not version.startswith("0.8"):
        repo.dists["taquba-cron"].deps = ["taquba>=0.8,<2"]
    assert problems_of(repo.write()) == []


def test_check_wants_a_development_version_for_unreleased_changes(tmp_path: Path) -> None:
    repo = good_repo(tmp_path)
    repo.dists["taquba"].unreleased = UNRELEASED  # still at the released 0.8.0
    assert problems_of(repo.write()) == [
        "packages/taquba/pyproject.toml: version 0.8.0: packages/taquba/CHANGELOG.md lists"
        " unreleased changes, so the version must be a development version `X.Y.Z.devN` (the"
        " next one is 0.8.1.dev0); set the release version only in the release commit, which"
        " empties `## [Unreleased]`"
    ]


def test_check_wants_unreleased_changes_for_a_final_version_past_the_release(
    tmp_path: Path,
) -> None:
    repo = good_repo(tmp_path)
    repo.dists["taquba"].version = "0.8.1"  # bumped, but no release prepared or changes listed
    assert problems_of(repo.write()) == [
        "packages/taquba/pyproject.toml: version 0.8.1: `## [Unreleased]` in"
        " packages/taquba/CHANGELOG.md is empty, so the version must be the newest recorded"
        " release 0.8.0 (or a release prepared in this commit: a dated CHANGELOG entry and a"
        " RELEASES.md section for it)"
    ]


@pytest.mark.parametrize("version", ["0.8.0.dev0", "0.7.9.dev1"])
def test_check_refuses_a_development_version_not_above_the_newest_release(
    tmp_path: Path, version: str
) -> None:
    repo = good_repo(tmp_path)
    repo.dists["taquba"].version = version
    repo.dists["taquba"].unreleased = UNRELEASED
    problems = problems_of(repo.write())
    assert any(
        "must lead to a version above the newest recorded release 0.8.0" in p for p in problems
    )


def test_check_refuses_a_development_version_without_unreleased_changes(tmp_path: Path) -> None:
    repo = good_repo(tmp_path)
    repo.dists["taquba"].version = "0.8.1.dev0"
    assert problems_of(repo.write()) == [
        "packages/taquba/pyproject.toml: version 0.8.1.dev0: a development version, but"
        " `## [Unreleased]` in packages/taquba/CHANGELOG.md is empty; list the unreleased"
        " changes, or go back to the newest release's version"
    ]


def test_check_ignores_link_definitions_when_judging_unreleased(tmp_path: Path) -> None:
    repo = good_repo(tmp_path)
    root = repo.write()
    changelog = root / "packages" / "taquba" / "CHANGELOG.md"
    changelog.write_text(
        changelog.read_text(encoding="utf-8")
        + "[Unreleased]: https://example.org/compare/taquba-v0.8.0...HEAD\n"
        + "[0.8.0]: https://example.org/releases/tag/taquba-v0.8.0\n",
        encoding="utf-8",
    )
    assert problems_of(root) == []


def test_a_release_commit_moves_from_the_development_version_to_the_release(
    tmp_path: Path,
) -> None:
    repo = good_repo(tmp_path)
    repo.dists["taquba"].version = "0.8.1.dev0"
    repo.dists["taquba"].unreleased = UNRELEASED
    assert problems_of(repo.write()) == []
    # The release commit: version 0.8.1, the Unreleased entries moved into a dated section.
    repo.dists["taquba"].version = "0.8.1"
    repo.dists["taquba"].unreleased = ""
    repo.prepare("taquba", "0.8.1", "2026-12-01")
    assert problems_of(repo.write()) == []
    # The record, then the next development version once a change lands.
    repo.records.append(FakeRecord("taquba", "0.8.1", SHA_081, "2026-12-01"))
    assert problems_of(repo.write()) == []
    repo.dists["taquba"].unreleased = UNRELEASED
    assert problems_of(repo.write())  # 0.8.1 with unreleased changes
    repo.dists["taquba"].version = release.next_development_version("0.8.1")
    assert problems_of(repo.write()) == []


def test_next_development_version_is_the_next_patch() -> None:
    assert release.next_development_version("0.8.1") == "0.8.2.dev0"
    assert release.next_development_version("1.0") == "1.0.1.dev0"


def test_record_refuses_a_development_version(tmp_path: Path) -> None:
    repo = good_repo(tmp_path)
    repo.dists["taquba"].version = "0.8.1.dev0"
    repo.dists["taquba"].unreleased = UNRELEASED
    ws = release.load_workspace(repo.write())
    assert release.validate_new_record(ws, "taquba", "0.8.1.dev0") == [
        "0.8.1.dev0 is a development version; release (and record) 0.8.1"
    ]


def test_check_accepts_a_release_waiting_for_its_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The record names the commit holding the release, so it lands in a later commit.
    repo = good_repo(tmp_path)
    repo.dists["taquba-cron"].released = [("0.4.0", "2026-11-28")]
    repo.notes.insert(0, ("taquba-cron-v0.4.0", "### Added\n\n- Cron."))
    root = repo.write()
    assert problems_of(root) == []
    assert release.main(["check", "--root", str(root)]) == 0
    assert capsys.readouterr().out.strip() == (
        "release.py check: ok (2 distributions, 2 recorded releases,"
        " pending record: taquba-cron-v0.4.0)"
    )


def _drop_changelog_entry(repo: FakeRepo) -> None:
    repo.dists["taquba"].released = [e for e in repo.dists["taquba"].released if e[0] != "0.8.0"]


def _drop_release_notes(repo: FakeRepo) -> None:
    repo.notes = [n for n in repo.notes if n[0] != "taquba-v0.8.0"]


def _unrecorded_changelog_entry(repo: FakeRepo) -> None:
    # Not the pyproject version (0.4.0), so not a release waiting for its record.
    repo.dists["taquba-cron"].released = [("0.3.0", "2026-11-27")]


def _unrecorded_release_notes(repo: FakeRepo) -> None:
    repo.notes.insert(0, ("taquba-cron-v0.4.0", "### Added\n\n- Cron."))


def _pyproject_below_record(repo: FakeRepo) -> None:
    repo.dists["taquba"].version = "0.7.5"
    repo.dists["taquba-cron"].deps = ["taquba>=0.7,<0.9"]


def _changelog_top_not_current(repo: FakeRepo) -> None:
    repo.dists["taquba"].released = [("0.7.0", "2026-10-01"), ("0.8.0", "2026-11-27")]


def _changelog_not_descending(repo: FakeRepo) -> None:
    repo.release("taquba", "0.8.1", SHA_081, "2026-12-01")
    repo.dists["taquba"].version = "0.8.1"
    released = repo.dists["taquba"].released
    released[1], released[2] = released[2], released[1]


def _changelog_date_disagrees(repo: FakeRepo) -> None:
    repo.dists["taquba"].released[0] = ("0.8.0", "2026-11-28")


def _bad_commit(repo: FakeRepo) -> None:
    repo.records[0].commit = "abc123"


def _duplicate_record(repo: FakeRepo) -> None:
    repo.records.append(FakeRecord("taquba", "0.8.0", SHA_081, "2026-11-27"))


def _unknown_distribution(repo: FakeRepo) -> None:
    repo.records.append(FakeRecord("taquba-nope", "0.1.0", SHA_081, "2026-11-27"))


def _release_notes_oldest_first(repo: FakeRepo) -> None:
    repo.notes.reverse()


def _empty_release_notes(repo: FakeRepo) -> None:
    repo.notes[0] = (repo.notes[0][0], "")


def _range_misses_workspace(repo: FakeRepo) -> None:
    repo.dists["taquba-cron"].deps = ["taquba>=0.9,<0.10"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            _drop_changelog_entry,
            "packages/taquba/CHANGELOG.md: no `## [0.8.0]` section"
            " for recorded release taquba-v0.8.0",
            id="record-without-changelog",
        ),
        pytest.param(
            _drop_release_notes,
            "RELEASES.md: no `## taquba-v0.8.0` section for recorded release",
            id="record-without-release-notes",
        ),
        pytest.param(
            _unrecorded_changelog_entry,
            "packages/taquba-cron/CHANGELOG.md:5: [0.3.0] has no release record",
            id="changelog-without-record",
        ),
        pytest.param(
            _unrecorded_release_notes,
            "`## taquba-cron-v0.4.0` has no release record",
            id="release-notes-without-record",
        ),
        pytest.param(
            _pyproject_below_record,
            "packages/taquba/pyproject.toml: version 0.7.5 is lower than the newest recorded"
            " release 0.8.0",
            id="pyproject-below-record",
        ),
        pytest.param(
            _changelog_top_not_current,
            "top released entry is [0.7.0], expected [0.8.0]",
            id="changelog-top-not-current",
        ),
        pytest.param(
            _changelog_not_descending,
            "versions must descend: [0.8.0] follows [0.7.0]",
            id="changelog-not-descending",
        ),
        pytest.param(
            _changelog_date_disagrees,
            "date 2026-11-28 disagrees with the record of taquba-v0.8.0 (2026-11-27)",
            id="changelog-date",
        ),
        pytest.param(_bad_commit, "is not a 40-hex lowercase SHA", id="bad-commit"),
        pytest.param(_duplicate_record, "duplicate of release #2", id="duplicate-record"),
        pytest.param(
            _unknown_distribution, "no workspace member named taquba-nope", id="unknown-dist"
        ),
        pytest.param(_release_notes_oldest_first, "newest first", id="release-notes-order"),
        pytest.param(_empty_release_notes, "has no release notes", id="empty-release-notes"),
        pytest.param(
            _range_misses_workspace,
            "`taquba>=0.9,<0.10` does not admit the workspace version of taquba (0.8.0)",
            id="range-misses-workspace",
        ),
    ],
)
def test_check_reports_disagreement(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mutate: Callable[[FakeRepo], None],
    expected: str,
) -> None:
    repo = good_repo(tmp_path)
    mutate(repo)
    root = repo.write()
    problems = problems_of(root)
    assert any(expected in p for p in problems), problems
    assert release.main(["check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "problem(s):" in err
    assert expected in err


def test_check_flags_headings_outside_the_changelog_format(tmp_path: Path) -> None:
    root = good_repo(tmp_path).write()
    path = root / "packages" / "taquba" / "CHANGELOG.md"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("## [0.8.0]", "## 0.9.0 - 2027-01-01\n\n## [0.8.0]"), "utf-8")
    assert problems_of(root) == [
        "packages/taquba/CHANGELOG.md:5: heading `## 0.9.0 - 2027-01-01` is not"
        " `## [<version>] - <date>` or `## [Unreleased]`"
    ]


def test_check_flags_a_missing_records_file(tmp_path: Path) -> None:
    root = good_repo(tmp_path).write()
    (root / "tools" / "releases.toml").unlink()
    assert "tools/releases.toml: missing" in problems_of(root)


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------


def test_parse_records_reports_structural_problems() -> None:
    text = """
[[release]]
distribution = "taquba"
version = "0.8.0"
commit = "%s"
date = "2026-11-27"

[[release]]
distribution = "taquba"
version = "0.8.1"
date = 2026-12-01T10:00:00Z
colour = "blue"
""" % ("8" * 40)
    records, problems = release.parse_records(text)
    assert records == [release.Record("taquba", "0.8.0", "8" * 40, dt.date(2026, 11, 27))]
    assert problems == [
        "tools/releases.toml: release #2: missing key(s) commit",
        "tools/releases.toml: release #2: unexpected key(s) colour",
    ]


def test_parse_changelog_reads_headings_dates_and_links() -> None:
    changelog = release.parse_changelog(
        "# Changelog\n\n## [Unreleased]\n\n## [0.8.0] - 2026-11-27\n\n### Added\n\n"
        "```\n## [9.9.9] - in a code block\n```\n\n## [0.7.0] - 2026-10-01 [YANKED]\n\n"
        "[0.8.0]: https://example.invalid/releases/tag/taquba-v0.8.0\n"
    )
    assert [(e.label, e.date, e.line) for e in changelog.entries] == [
        ("Unreleased", None, 3),
        ("0.8.0", "2026-11-27", 5),
        ("0.7.0", "2026-10-01", 13),
    ]
    assert changelog.links == {"0.8.0": "https://example.invalid/releases/tag/taquba-v0.8.0"}


def test_parse_release_notes_splits_dist_and_version() -> None:
    notes = release.parse_release_notes(
        "# Releases\n\n## taquba-webhooks-v0.3.0\n\n### Fixed\n\n- A.\n\n## taquba-v0.8.0\n\nB.\n"
    )
    assert [(n.distribution, n.version, n.body) for n in notes] == [
        ("taquba-webhooks", "0.3.0", "### Fixed\n\n- A."),
        ("taquba", "0.8.0", "B."),
    ]


# --------------------------------------------------------------------------------------------
# git-backed commands: tag and record
# --------------------------------------------------------------------------------------------


@pytest.fixture
def clean_git_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GIT_") and name not in {"GIT_SSL_CAINFO"}:
            monkeypatch.delenv(name)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "test@example.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "test@example.invalid")


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def git_init(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q")
    git(root, "config", "commit.gpgSign", "false")
    git(root, "config", "tag.gpgSign", "false")


def commit_all(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", message)
    return git(root, "rev-parse", "HEAD")


@pytest.fixture
def tagged_repo(tmp_path: Path, clean_git_env: None) -> FakeRepo:
    """A git repository whose records point at its two real commits."""
    root = tmp_path / "repo"
    git_init(root)
    repo = good_repo(root)
    repo.records.clear()
    repo.notes.clear()
    repo.dists["taquba"].released.clear()
    repo.dists["taquba"].version = "0.7.0"
    repo.dists["taquba-cron"].deps = ["taquba>=0.7,<0.9"]
    repo.locked = True
    repo.prepare("taquba", "0.7.0", "2026-10-01")
    repo.write()
    first = commit_all(root, "taquba 0.7.0")
    repo.dists["taquba"].version = "0.8.0"
    repo.prepare("taquba", "0.8.0", "2026-11-27")
    repo.write()
    second = commit_all(root, "taquba 0.8.0")
    repo.records += [
        FakeRecord("taquba", "0.7.0", first, "2026-10-01"),
        FakeRecord("taquba", "0.8.0", second, "2026-11-27"),
    ]
    repo.write()
    return repo


def peeled(root: Path, tag: str) -> str:
    return git(root, "rev-parse", f"refs/tags/{tag}^{{commit}}")


def test_tag_all_missing_creates_annotated_tags_at_the_recorded_commits(
    tagged_repo: FakeRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tagged_repo.root
    assert release.main(["tag", "--all-missing", "--root", str(root)]) == 0
    for record in tagged_repo.records:
        tag = f"{record.distribution}-v{record.version}"
        assert git(root, "cat-file", "-t", f"refs/tags/{tag}") == "tag"
        assert peeled(root, tag) == record.commit
    message = git(root, "tag", "-l", "--format=%(contents)", "taquba-v0.8.0")
    assert message.startswith("taquba 0.8.0\n\n### Added\n\n- taquba 0.8.0.")
    assert "create 2, 0 already present" in capsys.readouterr().out
    # A second run is a no-op.
    assert release.main(["tag", "--all-missing", "--root", str(root)]) == 0
    assert "create 0, 2 already present" in capsys.readouterr().out


def test_check_wants_a_changelog_entry_for_code_changed_since_the_release(
    tagged_repo: FakeRepo,
) -> None:
    root = tagged_repo.root
    assert problems_of(root) == []
    module = root / "packages" / "taquba" / "src" / "taquba" / "fix.py"
    module.parent.mkdir(parents=True)
    module.write_text("FIXED = True\n", encoding="utf-8")
    commit_all(root, "a fix nobody logged")
    problems = problems_of(root)
    assert len(problems) == 1, problems
    assert "packages/taquba/CHANGELOG.md: `## [Unreleased]` is empty" in problems[0]
    assert "packages/taquba/src changed since taquba-v0.8.0" in problems[0]
    assert "packages/taquba/src/taquba/fix.py" in problems[0]
    assert "the next one is 0.8.1.dev0" in problems[0]
    # A change outside the shipped code (tests, docs) needs no entry.
    (root / "packages" / "taquba-cron" / "tests").mkdir(parents=True)
    (root / "packages" / "taquba-cron" / "tests" / "test_x.py").write_text("", "utf-8")
    # Logged, with the development version: clean again.
    tagged_repo.dists["taquba"].unreleased = "### Fixed\n\n- A fix."
    tagged_repo.dists["taquba"].version = "0.8.1.dev0"
    tagged_repo.write()
    assert problems_of(root) == []


def test_check_skips_the_source_comparison_without_the_release_commit(tmp_path: Path) -> None:
    # good_repo's records name commits that exist nowhere (and tmp_path is no repository).
    good_repo(tmp_path).write()
    assert problems_of(tmp_path) == []


def test_tag_creates_only_the_release_named_and_reports_the_other_missing_tags(
    tagged_repo: FakeRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tagged_repo.root
    assert release.main(["tag", "taquba", "0.7.0", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert git(root, "tag", "-l").split() == ["taquba-v0.7.0"]
    assert peeled(root, "taquba-v0.7.0") == tagged_repo.records[0].commit
    assert "not tagged: 1 recorded release(s) have no tag here" in out
    assert "taquba-v0.8.0" in out
    assert "create 1, 0 already present" in out


def test_tag_without_a_release_named_tags_the_records_of_head(
    tagged_repo: FakeRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    # HEAD is the taquba 0.8.0 commit (its record is not committed yet): only it is tagged.
    root = tagged_repo.root
    assert release.main(["tag", "--root", str(root)]) == 0
    assert git(root, "tag", "-l").split() == ["taquba-v0.8.0"]
    assert "not tagged: 1 recorded release(s)" in capsys.readouterr().out
    # Once the records are committed, HEAD names no release: nothing is tagged, only reported.
    commit_all(root, "record taquba 0.7.0 and 0.8.0")
    assert release.main(["tag", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "no release record names HEAD" in out
    assert "have no tag here and were not asked for: taquba-v0.7.0" in out
    assert git(root, "tag", "-l").split() == ["taquba-v0.8.0"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(["taquba", "0.9.0"], "no record of taquba 0.9.0", id="unrecorded"),
        pytest.param(["taquba"], "name a release as DIST VERSION", id="half-named"),
        pytest.param(["taquba", "0.8.0", "--all-missing"], "not both", id="both"),
    ],
)
def test_tag_refuses_a_release_it_cannot_tag(
    tagged_repo: FakeRepo, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    root = tagged_repo.root
    assert release.main(["tag", *argv, "--root", str(root)]) != 0
    assert expected in capsys.readouterr().err
    assert git(root, "tag", "-l") == ""


def test_tag_refuses_a_moved_tag_and_creates_nothing(
    tagged_repo: FakeRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tagged_repo.root
    first = tagged_repo.records[0].commit
    git(root, "tag", "-a", "-m", "wrong", "taquba-v0.8.0", first)
    assert release.main(["tag", "--all-missing", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert f"tag taquba-v0.8.0 points at {first}, but the record says" in err
    assert git(root, "tag", "-l", "taquba-v0.7.0") == ""
    assert peeled(root, "taquba-v0.8.0") == first


def test_tag_refuses_a_commit_missing_from_the_repository(
    tagged_repo: FakeRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    tagged_repo.records[0].commit = "0" * 40
    root = tagged_repo.write()
    assert release.main(["tag", "--all-missing", "--root", str(root)]) == 1
    assert "is not in this repository" in capsys.readouterr().err
    assert git(root, "tag", "-l") == ""


def test_tag_refuses_while_check_fails(
    tagged_repo: FakeRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    tagged_repo.notes.clear()
    root = tagged_repo.write()
    assert release.main(["tag", "--all-missing", "--root", str(root)]) == 1
    assert "fix `check` first" in capsys.readouterr().err
    assert git(root, "tag", "-l") == ""


def test_tag_dry_run_creates_nothing(
    tagged_repo: FakeRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tagged_repo.root
    assert release.main(["tag", "--all-missing", "--dry-run", "--push", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "would create taquba-v0.7.0" in out
    assert "would push 2 tag(s)" in out
    assert git(root, "tag", "-l") == ""


def test_tag_push_sends_the_tags_to_origin(tagged_repo: FakeRepo, tmp_path: Path) -> None:
    root = tagged_repo.root
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(root, "remote", "add", "origin", str(remote))
    git(root, "push", "-q", "origin", "HEAD")
    assert release.main(["tag", "--all-missing", "--push", "--root", str(root)]) == 0
    assert sorted(git(remote, "tag", "-l").split()) == ["taquba-v0.7.0", "taquba-v0.8.0"]


def test_plan_tags_sorts_records_into_create_present_conflict() -> None:
    records = [
        release.Record("taquba", "0.7.0", SHA_070, dt.date(2026, 10, 1)),
        release.Record("taquba", "0.8.0", SHA_080, dt.date(2026, 11, 27)),
        release.Record("taquba-cron", "0.4.0", SHA_090, dt.date(2026, 11, 27)),
    ]
    plan = release.plan_tags(records, {"taquba-v0.7.0": SHA_070, "taquba-v0.8.0": SHA_081})
    assert [r.tag for r in plan.create] == ["taquba-cron-v0.4.0"]
    assert [r.tag for r in plan.present] == ["taquba-v0.7.0"]
    assert plan.conflicts == (
        f"tag taquba-v0.8.0 points at {SHA_081}, but the record says {SHA_080}",
    )


@pytest.fixture
def record_repo(tmp_path: Path, clean_git_env: None) -> FakeRepo:
    """A git repository whose one commit prepares taquba 0.8.0 and taquba-cron 0.4.0, unrecorded."""
    root = tmp_path / "repo"
    git_init(root)
    repo = good_repo(root)
    repo.records.clear()
    repo.notes.clear()
    repo.dists["taquba"].released.clear()
    repo.locked = True
    repo.prepare("taquba", "0.8.0", "2026-11-27")
    repo.prepare("taquba-cron", "0.4.0", "2026-11-27")
    repo.write()
    commit_all(root, "initial")
    # The real file's leading comment block only: its records are not this fake repo's.
    real = (REPO / "tools" / "releases.toml").read_text(encoding="utf-8")
    header = real.split("\n[[", 1)[0].rstrip() + "\n"
    (root / "tools" / "releases.toml").write_text(header, encoding="utf-8")
    return repo


def test_record_appends_a_tidy_record_at_head(
    record_repo: FakeRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    root = record_repo.root
    head = git(root, "rev-parse", "HEAD")
    path = root / "tools" / "releases.toml"
    header = path.read_text(encoding="utf-8")
    argv = ["record", "taquba", "0.8.0", "--date", "2026-11-27", "--root", str(root)]
    assert release.main(argv) == 0
    assert f"recorded taquba-v0.8.0 at {head}" in capsys.readouterr().out
    argv = ["record", "taquba-cron", "0.4.0", "--commit", head[:10], "--root", str(root)]
    assert release.main(argv) == 0
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert path.read_text(encoding="utf-8") == (
        f"{header.rstrip()}\n\n"
        f'[[release]]\ndistribution = "taquba"\nversion = "0.8.0"\ncommit = "{head}"\n'
        "date = 2026-11-27\n\n"
        f'[[release]]\ndistribution = "taquba-cron"\nversion = "0.4.0"\ncommit = "{head}"\n'
        f"date = {today}\n"
    )
    ws = release.load_workspace(root)
    assert [(r.tag, r.commit) for r in ws.records] == [
        ("taquba-v0.8.0", head),
        ("taquba-cron-v0.4.0", head),
    ]


def test_record_points_out_what_check_still_needs(
    record_repo: FakeRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["record", "taquba", "0.8.0", "--date", "2026-12-01", "--root", str(record_repo.root)]
    assert release.main(argv) == 0
    out = capsys.readouterr().out
    assert "note: `release.py check` still reports" in out
    assert "date 2026-11-27 disagrees with the record of taquba-v0.8.0 (2026-12-01)" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(
            ["record", "taquba", "0.9.0"],
            "packages/taquba/pyproject.toml has version 0.8.0; bump it before recording 0.9.0",
            id="version-mismatch",
        ),
        pytest.param(["record", "taquba-nope", "0.1.0"], "no workspace member", id="unknown"),
        pytest.param(
            ["record", "taquba", "0.8.0", "--commit", "no-such-rev"],
            "cannot resolve commit 'no-such-rev'",
            id="bad-commit",
        ),
    ],
)
def test_record_refuses(
    record_repo: FakeRepo, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    path = record_repo.root / "tools" / "releases.toml"
    before = path.read_text(encoding="utf-8")
    assert release.main([*argv, "--root", str(record_repo.root)]) == 1
    assert expected in capsys.readouterr().err
    assert path.read_text(encoding="utf-8") == before


def test_record_refuses_a_duplicate(
    record_repo: FakeRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["record", "taquba", "0.8.0", "--root", str(record_repo.root)]
    assert release.main(argv) == 0
    capsys.readouterr()
    assert release.main(argv) == 1
    assert "taquba-v0.8.0 is already recorded" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# history entries ([[history]]): CHANGELOG versions never published by this project
# --------------------------------------------------------------------------------------------


def test_check_accepts_a_history_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # taquba 0.7.0 has a CHANGELOG entry but no record, commit, tag or RELEASES.md section.
    root = history_repo(tmp_path).write()
    assert problems_of(root) == []
    assert release.main(["check", "--root", str(root)]) == 0
    assert capsys.readouterr().out.strip() == (
        "release.py check: ok (2 distributions, 1 recorded releases, 1 history entry)"
    )


def test_check_accepts_an_undated_history_entry_with_any_link(tmp_path: Path) -> None:
    repo = history_repo(tmp_path)
    repo.history[0].date = None
    repo.dists["taquba"].released[-1] = ("0.7.0", "")
    root = repo.write()
    path = root / "packages" / "taquba" / "CHANGELOG.md"
    link = "[0.7.0]: https://example.invalid/reference/releases/0.7.0\n"
    path.write_text(path.read_text(encoding="utf-8") + link, encoding="utf-8")
    assert "\n## [0.7.0]\n" in path.read_text(encoding="utf-8")
    assert problems_of(root) == []


def test_check_still_demands_the_tag_link_of_released_entries(tmp_path: Path) -> None:
    root = history_repo(tmp_path).write()
    path = root / "packages" / "taquba" / "CHANGELOG.md"
    link = "[0.8.0]: https://example.invalid/reference/releases/0.8.0\n"
    path.write_text(path.read_text(encoding="utf-8") + link, encoding="utf-8")
    assert problems_of(root) == [
        "packages/taquba/CHANGELOG.md: link for [0.8.0] should point at tag taquba-v0.8.0"
    ]


def test_check_and_pending_ignore_history_before_the_first_release(tmp_path: Path) -> None:
    # The first release (0.8.0) is prepared but not recorded yet; 0.7.0 is history.
    repo = history_repo(tmp_path)
    repo.records.clear()
    root = repo.write()
    assert problems_of(root) == []
    assert release.pending_releases(release.load_workspace(root)) == [("taquba", "0.8.0")]


def _history_with_release_notes(repo: FakeRepo) -> None:
    repo.notes.append(("taquba-v0.7.0", "### Added\n\n- The 0.7.0 line."))


def _history_above_a_record(repo: FakeRepo) -> None:
    repo.dists["taquba"].version = "0.9.0"
    repo.dists["taquba-cron"].deps = ["taquba>=0.7,<0.10"]
    repo.dists["taquba"].released.insert(0, ("0.8.5", "2026-12-01"))
    repo.history.append(FakeHistory("taquba", "0.8.5"))


def _history_equal_to_a_record(repo: FakeRepo) -> None:
    repo.history.append(FakeHistory("taquba", "0.8.0"))


def _history_at_the_workspace_version(repo: FakeRepo) -> None:
    repo.records.clear()
    repo.notes.clear()
    repo.dists["taquba"].released = [("0.8.0", "2026-11-27"), ("0.7.0", "2026-10-01")]
    repo.history.append(FakeHistory("taquba", "0.8.0"))


def _history_without_changelog_entry(repo: FakeRepo) -> None:
    repo.history.append(FakeHistory("taquba", "0.6.0"))


def _history_date_disagrees(repo: FakeRepo) -> None:
    repo.history[0].date = "2026-09-30"


def _history_duplicated(repo: FakeRepo) -> None:
    repo.history.append(FakeHistory("taquba", "0.7.0"))


def _history_of_unknown_distribution(repo: FakeRepo) -> None:
    repo.history.append(FakeHistory("taquba-nope", "0.1.0"))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            _history_with_release_notes,
            "RELEASES.md:11: `## taquba-v0.7.0` is a history entry in tools/releases.toml, never"
            " released by this project: history versions get no RELEASES.md section",
            id="history-with-release-notes",
        ),
        pytest.param(
            _history_above_a_record,
            "tools/releases.toml: history #2 (taquba 0.8.5): a history version must be lower"
            " than every recorded release of taquba, but taquba-v0.8.0 is recorded",
            id="history-above-record",
        ),
        pytest.param(
            _history_equal_to_a_record,
            "tools/releases.toml: history #2 (taquba 0.8.0): also recorded as release #1;"
            " a version is either a release or history, not both",
            id="history-equal-to-record",
        ),
        pytest.param(
            _history_at_the_workspace_version,
            "tools/releases.toml: history #2 (taquba 0.8.0): a history version must be lower"
            " than the workspace version of taquba (0.8.0)",
            id="history-at-workspace-version",
        ),
        pytest.param(
            _history_without_changelog_entry,
            "packages/taquba/CHANGELOG.md: no `## [0.6.0]` section for history entry taquba 0.6.0",
            id="history-without-changelog",
        ),
        pytest.param(
            _history_date_disagrees,
            "packages/taquba/CHANGELOG.md:11: date 2026-10-01 disagrees with history entry"
            " taquba 0.7.0 (2026-09-30)",
            id="history-date",
        ),
        pytest.param(_history_duplicated, "duplicate of history #1", id="history-duplicate"),
        pytest.param(
            _history_of_unknown_distribution,
            "history #2 (taquba-nope 0.1.0): no workspace member named taquba-nope",
            id="history-unknown-dist",
        ),
    ],
)
def test_check_reports_history_problems(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mutate: Callable[[FakeRepo], None],
    expected: str,
) -> None:
    repo = history_repo(tmp_path)
    mutate(repo)
    root = repo.write()
    problems = problems_of(root)
    assert any(expected in p for p in problems), problems
    assert release.main(["check", "--root", str(root)]) == 1
    assert expected in capsys.readouterr().err


def test_parse_release_file_reads_history_and_reports_its_problems() -> None:
    text = """
[[history]]
distribution = "taquba"
version = "0.7.0"
note = "  documents the 0.7.0 line inherited from the reference  "

[[history]]
distribution = "taquba"
version = "0.6.0"
date = 2026-09-01
note = "older line"

[[history]]
distribution = "taquba"
version = "0.5.0"
commit = "%s"

[[history]]
distribution = "taquba"
version = "0.4.0"
note = " "
""" % ("5" * 40)
    records, history, problems = release.parse_release_file(text)
    assert records == []
    assert history == [
        release.HistoryEntry(
            "taquba", "0.7.0", "documents the 0.7.0 line inherited from the reference"
        ),
        release.HistoryEntry("taquba", "0.6.0", "older line", dt.date(2026, 9, 1)),
    ]
    assert problems == [
        "tools/releases.toml: history #3: missing key(s) note",
        "tools/releases.toml: history #3: unexpected key(s) commit",
        "tools/releases.toml: history #4: note must say why this version is history, not a release",
    ]
    # parse_records accepts the `history` key and reports the same problems.
    assert release.parse_records(text) == ([], problems)


def test_matrix_excludes_history_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # taquba-cron admits taquba 0.7.x, but 0.7.0 was never published: nothing to build.
    root = history_repo(tmp_path).write()
    assert [(r.sibling_version, r.source) for r in cron_rows(root)] == [
        ("0.8.0", "release"),
        ("0.8.0", "workspace"),
    ]
    assert release.main(["matrix", "--json", "--root", str(root)]) == 0
    versions = {row["sibling_version"] for row in json.loads(capsys.readouterr().out)}
    assert versions == {"0.8.0"}


def test_compute_matrix_drops_history_even_when_wrongly_recorded(tmp_path: Path) -> None:
    repo = history_repo(tmp_path)
    repo.records.insert(0, FakeRecord("taquba", "0.7.0", SHA_070, "2026-10-01"))
    ws = release.load_workspace(repo.write())
    assert release.check(ws) != []
    with_record = release.compute_matrix(ws.distributions, ws.records)
    assert "0.7.0" in {r.sibling_version for r in with_record}
    rows = release.compute_matrix(ws.distributions, ws.records, ws.history)
    assert "0.7.0" not in {r.sibling_version for r in rows}


def test_tag_never_tags_a_history_version(
    tagged_repo: FakeRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tagged_repo.root
    tagged_repo.dists["taquba"].released.append(("0.6.0", "2026-09-01"))
    tagged_repo.history.append(FakeHistory("taquba", "0.6.0"))
    tagged_repo.write()
    assert release.main(["tag", "--all-missing", "--root", str(root)]) == 0
    assert "create 2, 0 already present" in capsys.readouterr().out
    assert sorted(git(root, "tag", "-l").split()) == ["taquba-v0.7.0", "taquba-v0.8.0"]


def test_record_refuses_a_history_version(
    record_repo: FakeRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    # Even with the pyproject at the history version, 0.7.0 cannot be recorded.
    root = record_repo.root
    record_repo.dists["taquba"].version = "0.7.0"
    record_repo.dists["taquba"].released = [("0.7.0", "2026-10-01")]
    record_repo.history.append(FakeHistory("taquba", "0.7.0", note="inherited 0.7.0 line"))
    record_repo.write()
    path = root / "tools" / "releases.toml"
    before = path.read_text(encoding="utf-8")
    assert release.main(["record", "taquba", "0.7.0", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "release.py record: 1 problem(s):" in err
    assert (
        "taquba 0.7.0 is listed as history in tools/releases.toml (inherited 0.7.0 line);"
        " a history version was never published here and cannot be recorded"
    ) in err
    assert path.read_text(encoding="utf-8") == before


def test_record_refuses_a_version_below_a_history_version(
    record_repo: FakeRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    root = record_repo.root
    record_repo.dists["taquba"].version = "0.6.0"
    record_repo.history.append(FakeHistory("taquba", "0.7.0"))
    record_repo.write()
    assert release.main(["record", "taquba", "0.6.0", "--root", str(root)]) == 1
    assert "taquba 0.6.0 is older than history entry 0.7.0" in capsys.readouterr().err


def test_record_accepts_the_first_release_above_history(
    record_repo: FakeRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    root = record_repo.root
    record_repo.dists["taquba"].released = [("0.8.0", "2026-11-27"), ("0.7.0", "2026-10-01")]
    record_repo.history.append(FakeHistory("taquba", "0.7.0", date="2026-10-01"))
    record_repo.dists["taquba-cron"].released.clear()
    record_repo.notes = [n for n in record_repo.notes if n[0] == "taquba-v0.8.0"]
    record_repo.write()
    commit_all(root, "taquba 0.8.0, its CHANGELOG documenting the inherited 0.7.0")
    argv = ["record", "taquba", "0.8.0", "--date", "2026-11-27", "--root", str(root)]
    assert release.main(argv) == 0
    assert "still reports" not in capsys.readouterr().out
    ws = release.load_workspace(root)
    assert [r.tag for r in ws.records] == ["taquba-v0.8.0"]
    assert [h.version for h in ws.history] == ["0.7.0"]
    assert release.check(ws) == []


# --------------------------------------------------------------------------------------------
# uv.lock: it locks every member at its pyproject version
# --------------------------------------------------------------------------------------------


def test_check_accepts_a_lock_that_agrees(tmp_path: Path) -> None:
    repo = good_repo(tmp_path)
    repo.locked = True
    assert problems_of(repo.write()) == []


def test_check_flags_a_lock_left_behind_by_a_version_bump(tmp_path: Path) -> None:
    repo = good_repo(tmp_path)
    repo.locked = True
    repo.dists["taquba"].version = "0.8.1.dev0"
    repo.dists["taquba"].unreleased = UNRELEASED
    repo.lock_versions["taquba"] = "0.8.0"  # bumped, `uv lock` not run
    assert problems_of(repo.write()) == [
        "uv.lock: locks taquba 0.8.0, but packages/taquba/pyproject.toml has version 0.8.1.dev0;"
        " run `uv lock` and commit uv.lock with the version change"
    ]


def test_check_flags_a_member_missing_from_the_lock(tmp_path: Path) -> None:
    repo = good_repo(tmp_path)
    repo.locked = True
    root = repo.write()  # then a new member, not yet locked
    (root / "packages" / "taquba-new").mkdir()
    (root / "packages" / "taquba-new" / "pyproject.toml").write_text(
        '[project]\nname = "taquba-new"\nversion = "0.1.0"\n', encoding="utf-8"
    )
    (root / "packages" / "taquba-new" / "CHANGELOG.md").write_text(
        "# Changelog\n\n## [Unreleased]\n", encoding="utf-8"
    )
    assert problems_of(root) == [
        "uv.lock: no entry for workspace member taquba-new; run `uv lock` and commit uv.lock"
    ]


def test_parse_lock_versions_reads_only_workspace_members() -> None:
    repo = FakeRepo(Path("unused"))
    repo.add(FakeDist("taquba", "0.8.0"))
    repo.add(FakeDist("taquba-cron", "0.4.0"))
    versions, problems = release.parse_lock_versions(repo.lock_text())
    assert problems == []
    assert versions == {"taquba": "0.8.0", "taquba-cron": "0.4.0", "workspace": "0"}
    _, problems = release.parse_lock_versions("[[package]\n")
    assert len(problems) == 1
    assert problems[0].startswith("uv.lock: invalid TOML")


def test_real_repo_lock_agrees_with_the_workspace() -> None:
    ws = release.load_workspace(REPO)
    assert ws.lock is not None
    assert release.lock_problems(ws.lock, ws.distributions.values()) == []


# --------------------------------------------------------------------------------------------
# End to end: a release in a clone without tags
# --------------------------------------------------------------------------------------------


@pytest.fixture
def released_repo(tmp_path: Path, clean_git_env: None) -> FakeRepo:
    """A clone without tags: taquba 0.8.0 and taquba-cron 0.4.0 released and recorded."""
    root = tmp_path / "repo"
    git_init(root)
    repo = good_repo(root)
    repo.records.clear()
    repo.notes.clear()
    repo.dists["taquba"].released.clear()
    repo.locked = True
    repo.prepare("taquba", "0.8.0", "2026-11-27")
    repo.prepare("taquba-cron", "0.4.0", "2026-11-27")
    repo.write()
    first = commit_all(root, "release taquba 0.8.0 and taquba-cron 0.4.0")
    for dist, version in [("taquba", "0.8.0"), ("taquba-cron", "0.4.0")]:
        argv = ["record", dist, version, "--date", "2026-11-27", "--root", str(root)]
        assert release.main(argv) == 0
    commit_all(root, "record taquba 0.8.0 and taquba-cron 0.4.0")
    ws = release.load_workspace(root)
    assert [(r.tag, r.commit) for r in ws.records] == [
        ("taquba-v0.8.0", first),
        ("taquba-cron-v0.4.0", first),
    ]
    repo.records = [
        FakeRecord(r.distribution, r.version, r.commit, str(r.date)) for r in ws.records
    ]
    return repo


def _bump_taquba(repo: FakeRepo, *, run_uv_lock: bool) -> str:
    """Prepare and commit the taquba 0.8.1 release commit; its SHA."""
    repo.dists["taquba"].version = "0.8.1"
    repo.prepare("taquba", "0.8.1", "2026-12-01")
    if not run_uv_lock:
        repo.lock_versions["taquba"] = "0.8.0"
    repo.write()
    return commit_all(repo.root, "release taquba 0.8.1")


def test_a_release_end_to_end_tags_only_that_release(
    released_repo: FakeRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(released_repo.root)
    release_commit = _bump_taquba(released_repo, run_uv_lock=True)
    assert release.main(["check", "--root", root]) == 0
    assert "pending record: taquba-v0.8.1" in capsys.readouterr().out
    assert release.main(["record", "taquba", "0.8.1", "--date", "2026-12-01", "--root", root]) == 0
    assert "still reports" not in capsys.readouterr().out
    commit_all(released_repo.root, "record taquba 0.8.1")
    assert release.main(["check", "--root", root]) == 0
    capsys.readouterr()

    assert release.main(["tag", "taquba", "0.8.1", "--root", root]) == 0
    out = capsys.readouterr().out
    assert git(released_repo.root, "tag", "-l").split() == ["taquba-v0.8.1"]
    assert peeled(released_repo.root, "taquba-v0.8.1") == release_commit
    assert (
        "not tagged: 2 recorded release(s) have no tag here and were not asked for:"
        " taquba-v0.8.0, taquba-cron-v0.4.0"
    ) in out


def test_a_release_commit_without_the_lock_update_is_refused(
    released_repo: FakeRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(released_repo.root)
    release_commit = _bump_taquba(released_repo, run_uv_lock=False)
    stale = (
        "locks taquba 0.8.0, but packages/taquba/pyproject.toml has version 0.8.1;"
        " run `uv lock` and commit uv.lock with the version change"
    )
    assert release.main(["check", "--root", root]) == 1
    assert f"uv.lock: {stale}" in capsys.readouterr().err
    records = released_repo.root / "tools" / "releases.toml"
    before = records.read_text(encoding="utf-8")
    assert release.main(["record", "taquba", "0.8.1", "--root", root]) == 1
    err = capsys.readouterr().err
    assert "does not hold the release; nothing written" in err
    assert f"taquba-v0.8.1 (commit {release_commit[:12]}): uv.lock: {stale}" in err
    assert records.read_text(encoding="utf-8") == before

    # Fixing the lock in a later commit does not make the release commit whole: tag refuses.
    released_repo.lock_versions.clear()
    released_repo.records.append(FakeRecord("taquba", "0.8.1", release_commit, "2026-12-01"))
    released_repo.write()
    commit_all(released_repo.root, "uv lock; record taquba 0.8.1")
    assert release.main(["check", "--root", root]) == 0
    assert release.main(["tag", "taquba", "0.8.1", "--root", root]) == 1
    err = capsys.readouterr().err
    assert "tag (refusing; no tag created)" in err
    assert f"uv.lock: {stale}" in err
    assert git(released_repo.root, "tag", "-l") == ""


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        pytest.param(
            lambda repo: repo.dists["taquba"].released.pop(0),
            "the top released entry of packages/taquba/CHANGELOG.md is `## [0.8.0] - 2026-11-27`,"
            " not a dated `## [0.8.1] - YYYY-MM-DD`",
            id="changelog",
        ),
        pytest.param(
            lambda repo: repo.notes.pop(0),
            "RELEASES.md has no non-empty `## taquba-v0.8.1` section",
            id="release-notes",
        ),
    ],
)
def test_record_refuses_a_commit_that_does_not_hold_the_release(
    released_repo: FakeRepo,
    capsys: pytest.CaptureFixture[str],
    spoil: Callable[[FakeRepo], object],
    expected: str,
) -> None:
    released_repo.dists["taquba"].version = "0.8.1"
    released_repo.prepare("taquba", "0.8.1", "2026-12-01")
    spoil(released_repo)
    released_repo.write()
    commit_all(released_repo.root, "a half-made release")
    assert release.main(["record", "taquba", "0.8.1", "--root", str(released_repo.root)]) == 1
    assert expected in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# compat rows (compute_compat)
# --------------------------------------------------------------------------------------------

SHA_060 = "6" * 40


def _stack(root: Path) -> tuple[release.Workspace, dict[str, dict[str, release.Distribution]]]:
    """taquba 0.8.0/0.8.1 released + 0.8.2.dev0 in the tree; workflow 0.6.0; bulk on both."""
    repo = FakeRepo(root)
    repo.add(FakeDist("taquba", "0.8.2.dev0", unreleased=UNRELEASED))
    repo.add(FakeDist("taquba-workflow", "0.6.0", deps=["taquba>=0.8,<0.9"]))
    repo.add(
        FakeDist("taquba-bulk", "0.2.0", deps=["taquba-workflow>=0.6,<0.7", "taquba>=0.8,<0.9"])
    )
    repo.release("taquba", "0.8.0", SHA_080, "2026-11-27")
    repo.release("taquba-workflow", "0.6.0", SHA_060, "2026-11-27")
    repo.release("taquba-bulk", "0.2.0", SHA_060, "2026-11-27")
    repo.release("taquba", "0.8.1", SHA_081, "2026-11-28")
    ws = release.load_workspace(repo.write())
    dists = ws.distributions
    at_060 = {
        "taquba": release.Distribution("taquba", "0.8.0", "packages/taquba", (), None),
        "taquba-workflow": dists["taquba-workflow"],
        # bulk 0.2.0 as released admitted taquba 0.8.1 and later only
        "taquba-bulk": release.Distribution(
            "taquba-bulk",
            "0.2.0",
            "packages/taquba-bulk",
            ("taquba-workflow>=0.6,<0.7", "taquba>=0.8.1,<0.9"),
            None,
        ),
    }
    return ws, {SHA_060: at_060}


def _describe(row: release.CompatRow) -> tuple[str, ...]:
    def pin(p: release.Pin) -> str:
        return f"{p.distribution} {p.version}{'' if p.source == 'release' else ' ws'}"

    return (pin(row.dependent), *(pin(s) for s in row.siblings), row.resolution, row.python)


def test_compat_covers_every_admitted_pair_of_siblings(tmp_path: Path) -> None:
    ws, at = _stack(tmp_path)
    rows = release.compute_compat(ws.distributions, ws.records, ws.history, at, pythons=["3.11"])
    bulk = [_describe(r) for r in rows if r.dependent.distribution == "taquba-bulk"]
    assert bulk[:3] == [
        # the workspace bulk: every taquba (0.8.0, 0.8.1, the tree's dev version) x workflow
        ("taquba-bulk 0.2.0 ws", "taquba 0.8.0", "taquba-workflow 0.6.0", "locked", "3.11"),
        ("taquba-bulk 0.2.0 ws", "taquba 0.8.1", "taquba-workflow 0.6.0", "locked", "3.11"),
        ("taquba-bulk 0.2.0 ws", "taquba 0.8.2.dev0 ws", "taquba-workflow 0.6.0", "locked", "3.11"),
    ]
    # bulk 0.2.0 as released, with its own ranges: taquba 0.8.0 is not admitted
    released = [d for d in bulk if d[0] == "taquba-bulk 0.2.0"]
    assert [d[1] for d in released] == ["taquba 0.8.1", "taquba 0.8.2.dev0 ws"]
    # the all-workspace combination is the tests sessions' job; resolutions come last
    assert [d[-2:] for d in bulk[-2:]] == [("highest", "3.11"), ("lowest-direct", "3.11")]


def test_compat_full_set_runs_on_every_python(tmp_path: Path) -> None:
    ws, at = _stack(tmp_path)
    rows = release.compute_compat(ws.distributions, ws.records, ws.history, at)
    assert {r.python for r in rows} == {"3.11", "3.13"}
    resolutions = {(r.dependent.distribution, r.resolution, r.python) for r in rows}
    assert ("taquba", "lowest-direct", "3.13") in resolutions


def test_compat_subset_takes_the_oldest_and_newest_release_of_each_sibling(
    tmp_path: Path,
) -> None:
    ws, at = _stack(tmp_path)
    rows = release.compute_compat(
        ws.distributions, ws.records, ws.history, at, subset=True, pythons=["3.11", "3.13"]
    )
    assert [_describe(r) for r in rows] == [
        ("taquba-bulk 0.2.0 ws", "taquba 0.8.0", "taquba-workflow 0.6.0", "locked", "3.11"),
        ("taquba-bulk 0.2.0 ws", "taquba 0.8.1", "taquba-workflow 0.6.0", "locked", "3.11"),
        ("taquba-workflow 0.6.0 ws", "taquba 0.8.0", "locked", "3.11"),
        ("taquba-workflow 0.6.0 ws", "taquba 0.8.1", "locked", "3.11"),
        (
            "taquba-bulk 0.2.0 ws",
            "taquba 0.8.2.dev0 ws",
            "taquba-workflow 0.6.0 ws",
            "highest",
            "3.13",
        ),
        (
            "taquba-bulk 0.2.0 ws",
            "taquba 0.8.2.dev0 ws",
            "taquba-workflow 0.6.0 ws",
            "lowest-direct",
            "3.11",
        ),
    ]


def test_compat_subset_leaves_out_the_release_the_workspace_still_is(tmp_path: Path) -> None:
    # taquba 0.8.1 is both the newest release and the tree (nothing unreleased): a row against
    # it would repeat the tests sessions, so the subset keeps only the older release. The full
    # set keeps both.
    repo = FakeRepo(tmp_path)
    repo.add(FakeDist("taquba", "0.8.1"))
    repo.add(
        FakeDist("taquba-workflow", "0.6.1.dev0", deps=["taquba>=0.8,<0.9"], unreleased=UNRELEASED)
    )
    repo.release("taquba", "0.8.0", SHA_080, "2026-11-27")
    repo.release("taquba", "0.8.1", SHA_081, "2026-11-28")
    ws = release.load_workspace(repo.write())
    subset = release.compute_compat(
        ws.distributions, ws.records, ws.history, {}, subset=True, pythons=["3.11", "3.13"]
    )
    locked = [_describe(r) for r in subset if r.resolution == "locked"]
    assert locked == [("taquba-workflow 0.6.1.dev0 ws", "taquba 0.8.0", "locked", "3.11")]
    full = release.compute_compat(ws.distributions, ws.records, ws.history, {}, pythons=["3.11"])
    assert {_describe(r)[1] for r in full if r.resolution == "locked"} == {
        "taquba 0.8.0",
        "taquba 0.8.1",
    }


def _known_failure(**overrides: str) -> str:
    fields = {
        "distribution": "taquba-cron",
        "version": "0.4.0",
        "python": ">=3.12",
        "test": "packages/taquba-cron/tests/test_x.py::test_y",
        "reason": "the test relies on behaviour Python 3.12 changed",
        **overrides,
    }
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items() if v != "-")
    return f"\n[[known-failure]]\n{body}"


def test_a_known_failure_is_deselected_only_in_rows_of_its_release_on_its_pythons(
    tmp_path: Path,
) -> None:
    repo = FakeRepo(tmp_path)
    repo.add(FakeDist("taquba", "0.8.0"))
    repo.add(FakeDist("taquba-cron", "0.4.1", deps=["taquba>=0.8,<0.9"]))
    repo.release("taquba", "0.8.0", SHA_080, "2026-11-27")
    repo.release("taquba-cron", "0.4.0", SHA_080, "2026-11-27")
    repo.release("taquba-cron", "0.4.1", SHA_081, "2026-11-28")
    repo.extra_tables = _known_failure()
    ws = release.load_workspace(repo.write())
    assert release.check(ws) == []
    cron = release.Distribution(
        "taquba-cron", "0.4.0", "packages/taquba-cron", ("taquba>=0.8",), None
    )
    rows = release.compute_compat(
        ws.distributions,
        ws.records,
        ws.history,
        {SHA_080: {"taquba-cron": cron}, SHA_081: {"taquba-cron": ws.distributions["taquba-cron"]}},
        known_failures=ws.known_failures,
    )
    deselected = {
        (r.dependent.version, r.dependent.source, r.python): r.deselect
        for r in rows
        if r.resolution == "locked"
    }
    test = "packages/taquba-cron/tests/test_x.py::test_y"
    assert deselected == {
        ("0.4.0", "release", "3.11"): (),
        ("0.4.0", "release", "3.13"): (test,),
        ("0.4.1", "release", "3.11"): (),
        ("0.4.1", "release", "3.13"): (),
        # the workspace's tests are never excused
        ("0.4.1", "workspace", "3.11"): (),
        ("0.4.1", "workspace", "3.13"): (),
    }


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"version": "0.4.1"}, "known-failure #1 (taquba-cron 0.4.1): not a recorded release"),
        (
            {"test": "tests/test_x.py::test_y"},
            "test must be a node id under packages/taquba-cron/tests/",
        ),
        ({"python": "3.12+"}, "known-failure #1: python '3.12+' is not a PEP 440 specifier"),
        ({"reason": "-"}, "known-failure #1: missing key(s) reason"),
        ({"reason": " "}, "known-failure #1: reason must be non-empty string(s)"),
    ],
)
def test_check_refuses_a_known_failure_that_is_not_a_recorded_releases_test(
    tmp_path: Path, overrides: dict[str, str], problem: str
) -> None:
    repo = good_repo(tmp_path)
    repo.release("taquba-cron", "0.4.0", SHA_080, "2026-11-27")
    repo.extra_tables = _known_failure(**overrides)
    problems = release.check(release.load_workspace(repo.write()))
    assert any(problem in p for p in problems), problems


def test_pairwise_cover_covers_every_pair_with_fewer_rows() -> None:
    axes = [[release.Pin(f"d{i}", v, "release", SHA_080) for v in ("1", "2")] for i in range(4)]
    kept = release._pairwise_cover(axes)  # pyright: ignore[reportPrivateUsage]
    assert len(kept) < 16
    for i in range(4):
        for j in range(i + 1, 4):
            assert {(c[i].version, c[j].version) for c in kept} == {
                ("1", "1"), ("1", "2"), ("2", "1"), ("2", "2"),
            }  # fmt: skip


def test_real_repo_compat_rows_come_from_the_records() -> None:
    ws = release.load_workspace(REPO)
    full = release.load_compat(ws)
    subset = release.load_compat(ws, subset=True)
    assert set(subset) <= set(full) | {r for r in subset if r.resolution != "locked"}
    recorded = {(r.distribution, r.version) for r in ws.records}
    for row in full:
        for pin in (row.dependent, *row.siblings):
            if pin.source == "release":
                assert (pin.distribution, pin.version) in recorded
