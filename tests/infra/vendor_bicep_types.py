"""Vendors the types.json files of Azure/bicep-types-az that infra/ needs, with a SOURCES file.

    git clone --filter=blob:none https://github.com/Azure/bicep-types-az /tmp/bicep-types-az
    .venv/bin/python -m tests.infra.vendor_bicep_types /tmp/bicep-types-az/.git

Reads the repository's committed tree (HEAD or --commit), not a work tree. Its
`generated/index.json` is not relied on: the index is built from the `ResourceType` entries of the
types.json files under the providers' folders. Replaces tests/fixtures/bicep-types/ entirely, so
types infra/ no longer declares leave with it. Data only: no code of that repository is copied.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .bicep_types import INFRA, TYPES_ROOT, declared_types

REPOSITORY = "https://github.com/Azure/bicep-types-az"


def git(git_dir: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args],
        capture_output=True, text=True, check=True,
    )
    return done.stdout


def candidates(files: Sequence[str], type_name: str, api_version: str) -> list[str]:
    """types.json files in the type's namespace folder (generated/<rp>/<namespace>/<version>/)."""
    namespace = type_name.split("/", 1)[0].lower()
    return [
        path for path in files
        if path.split("/")[-3].lower() == namespace and path.split("/")[-2] == api_version
    ]


def vendor(git_dir: Path, commit: str, out: Path = TYPES_ROOT) -> dict[str, list[str]]:
    """Writes the needed files under out; returns {path in the repository: types it supplies}."""
    commit = git(git_dir, "rev-parse", commit).strip()
    files = [
        path for path in git(git_dir, "ls-tree", "-r", "--name-only", commit, "generated").split()
        if path.endswith("/types.json") and path.count("/") >= 4
    ]
    needed = sorted(declared_types(INFRA), key=str.lower)
    index: dict[str, str] = {}  # lower-cased type@version -> path
    texts: dict[str, str] = {}
    for full in needed:
        type_name, api_version = full.split("@", 1)
        for path in candidates(files, type_name, api_version):
            if path in texts:
                continue
            texts[path] = git(git_dir, "show", f"{commit}:{path}")
            for entry in json.loads(texts[path]):
                if entry.get("$type") == "ResourceType":
                    index.setdefault(entry["name"].lower(), path)
    missing = [full for full in needed if full.lower() not in index]
    if missing:
        raise SystemExit(f"not in {REPOSITORY} at {commit}: {', '.join(missing)}")
    supplies: dict[str, list[str]] = {}
    for full in needed:
        supplies.setdefault(index[full.lower()], []).append(full)
    shutil.rmtree(out, ignore_errors=True)
    for path in supplies:
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(texts[path])
    lines = [
        "Vendored from Azure/bicep-types-az (MIT License, Copyright (c) Microsoft Corporation):",
        "the generated Bicep types that `bicep build` checks resource bodies against, for the",
        "types and api-versions infra/ declares. Files are unchanged, at their repository paths.",
        "Refresh: python -m tests.infra.vendor_bicep_types <git dir of a clone>.",
        "",
        f"repository: {REPOSITORY}",
        f"commit: {commit}",
        "",
    ]
    for path, types in sorted(supplies.items()):
        lines.append(f"{path}")
        lines.extend(f"  {full}" for full in types)
    (out / "SOURCES").write_text("\n".join(lines) + "\n")
    return supplies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("git_dir", type=Path, help="git directory of a bicep-types-az clone")
    parser.add_argument("--commit", default="HEAD")
    arguments = parser.parse_args()
    for path, types in vendor(arguments.git_dir, arguments.commit).items():
        print(f"{path}: {', '.join(types)}")


if __name__ == "__main__":
    main()
