"""Shared pieces of the public 2D set rebuilders: read a fetched mirror, split by hash, write the set once.

Each ``benchmarks/public2d/<name>.py`` takes a public dataset from a snapshot of a public GitHub
repository (a bare git directory, as the search tool's ``fetch`` leaves it under ``/work/.mirror``),
at a fixed commit, and writes it to a folder outside the repository in the layout segkit's
``folder`` dataset reads (``images/``, ``masks/``), with a fixed ``train.txt`` / ``test.txt`` split
and a ``README.md``. Nothing here downloads: without the mirror the script says how to get it.

A rebuild is idempotent: ``MANIFEST.json`` records the sha256 of every file written, and a second
run rewrites only files that are missing or differ, and says so.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MIRRORS = Path("/work/.mirror")
DATA = Path("/work/data")
MANIFEST = "MANIFEST.json"


def mirror_path(owner_name: str) -> Path:
    """Where ``fetch github:OWNER/NAME`` leaves the snapshot's git directory."""
    return MIRRORS / owner_name.replace("/", "+") / "repo"


def check_mirror(git_dir: Path, commit: str, owner_name: str) -> None:
    """Exit with what to do when the mirror or the commit is not there."""
    if not (git_dir / "HEAD").is_file():
        sys.exit(f"error: no git snapshot of {owner_name} at {git_dir}. Fetch it first (the search tool's "
                 f"fetch github:{owner_name}), or pass --mirror with the bare git directory of a clone.")
    found = subprocess.run(["git", "--git-dir", str(git_dir), "cat-file", "-e", f"{commit}^{{commit}}"],
                           capture_output=True)
    if found.returncode != 0:
        sys.exit(f"error: {git_dir} has no commit {commit}; the set is rebuilt from that commit of {owner_name} "
                 "(a newer snapshot may have deleted the files: fetch the full history).")


def git_files(git_dir: Path, commit: str, prefix: str) -> dict[str, bytes]:
    """Every file under ``prefix`` at ``commit``: path -> bytes (one ``git archive``, no checkout)."""
    result = subprocess.run(["git", "--git-dir", str(git_dir), "archive", "--format=tar", commit, prefix],
                            capture_output=True)
    if result.returncode != 0:
        sys.exit(f"error: git archive {commit} {prefix!r} failed: {result.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


def hash_key(name: str, item: str) -> str:
    return hashlib.sha256(f"{name}/{item}".encode()).hexdigest()


def hash_split(ids: Iterable[str], name: str, fraction: float,
               group_of: Callable[[str], str] | None = None) -> tuple[list[str], list[str]]:
    """(train, test): the test ids are those whose group has the smallest sha256 of ``name/group``.

    Without ``group_of`` every id is its own group, as Kvasir-SEG's split was made here (the 120 of
    1,000 ids with the smallest sha256 of ``kvasir-seg/<id>``). With it, whole groups (a subject's
    images) go to the test split, smallest hash first, until it holds ``round(fraction * n)`` ids or more.
    """
    ids = sorted(set(ids))
    group_of = group_of or (lambda item: item)
    groups: dict[str, list[str]] = {}
    for item in ids:
        groups.setdefault(group_of(item), []).append(item)
    wanted = round(fraction * len(ids))
    test: list[str] = []
    for group in sorted(groups, key=lambda g: hash_key(name, g)):
        if len(test) >= wanted:
            break
        test += groups[group]
    chosen = set(test)
    return [i for i in ids if i not in chosen], sorted(chosen)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def write_set(out: Path, files: dict[str, bytes], source: dict) -> None:
    """Write ``files`` (relative path -> bytes) under ``out``; only missing or changed files are written.

    ``out`` must lie outside the repository (the data stays out of it). ``MANIFEST.json`` keeps the
    files' sha256 and ``source`` (repository, commit, what was done), and is written last.
    """
    out = out.resolve()
    if out == REPO or REPO in out.parents:
        sys.exit(f"error: --out {out} is inside the repository {REPO}; public data stays out of it. "
                 f"Use a folder such as {DATA / out.name}.")
    manifest = {rel: _sha256(data) for rel, data in sorted(files.items())}
    written = same = 0
    for rel, data in sorted(files.items()):
        target = out / rel
        if target.is_file() and _sha256(target.read_bytes()) == manifest[rel]:
            same += 1
            continue
        _write(target, data)
        written += 1
    listed = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {MANIFEST}
    extra = sorted(listed - set(files))
    _write(out / MANIFEST, json.dumps({"source": source, "files": manifest}, indent=1).encode())
    if written == 0:
        print(f"{out}: already rebuilt ({same} files, all as recorded); nothing written")
    else:
        print(f"{out}: wrote {written} file(s), {same} already there as recorded")
    if extra:
        print(f"note: {len(extra)} file(s) in {out} are not part of the set and were left alone, e.g. {extra[0]}")


def split_text(ids: list[str]) -> bytes:
    return ("\n".join(ids) + "\n").encode()
