"""Offline pre-flight check of the bundle against the Model Zoo's CPU pre-merge rules (docs/design.md, "MONAI").

Usage::

    python scripts/verify_bundle.py [--bundle .] [--schema docs/schema/meta_schema_20240725.json]

Checks, printed as a table; the exit code is 1 if any check FAILs (WARN does not fail):

* required files ``LICENSE`` and ``configs/metadata.json``; preferred ``configs/inference.*`` and
  ``docs/README.md`` (WARN when missing), ``docs/data_license.txt``;
* ``configs/metadata.json`` validates with ``monai.bundle.verify_metadata`` against the schema kept in
  the repo. The schema is never downloaded: ``verify_metadata`` only downloads when the file is absent,
  and this script fails before calling it in that case. The vendored file
  ``docs/schema/meta_schema_20240725.json`` is a verbatim copy of the Zoo schema as stored in
  Project-MONAI/project-monai.github.io (``public/schema/``), which copied it from the
  MONAI-extra-test-data 0.8.1 release named in ``metadata["schema"]``;
* ``changelog`` has an entry for ``version``;
* ``large_files.yml`` (if present) parses and every entry has ``path``, ``url`` and ``hash_val``;
* every file that git would commit is at most 25 MB (WARN above the Zoo pre-commit hook's 1024 KB).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

# MD5 of docs/schema/meta_schema_20240725.json as vendored; passing it to verify_metadata makes an
# accidental edit of the schema copy fail loudly instead of silently changing what "valid" means.
VENDORED_SCHEMA_MD5 = "76e1add273836515d0bbb3bc71962474"
ZOO_MAX_BYTES = 25 * 1024 * 1024  # hard limit per file in the Zoo
HOOK_MAX_BYTES = 1024 * 1024  # the Zoo's check-added-large-files pre-commit hook
# Never walked when git is unavailable: environments, caches and run outputs are not part of the bundle.
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis", "data", "runs", "eval"}

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"


def _bundle_files(root: Path) -> list[Path]:
    """Files git would commit (tracked plus untracked-not-ignored); a filtered walk without git."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
        names = [n for n in out.decode().split("\0") if n]
        return [root / n for n in names if (root / n).is_file()]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for path in root.rglob("*"):
            if path.is_file() and not SKIP_DIRS.intersection(path.relative_to(root).parts):
                files.append(path)
        return files


def check_files(root: Path) -> list[tuple[str, str, str]]:
    rows = []
    for name in ("LICENSE", "configs/metadata.json"):
        ok = (root / name).is_file()
        rows.append((f"required file {name}", PASS if ok else FAIL, "present" if ok else "missing"))
    inference = sorted(p.name for p in (root / "configs").glob("inference.*")) if (root / "configs").is_dir() else []
    rows.append(
        (
            "preferred configs/inference.*",
            PASS if inference else WARN,
            ", ".join(inference) if inference else "missing (Zoo CI needs it unless the bundle is excluded)",
        )
    )
    for name, why in (("docs/README.md", "Zoo readme"), ("docs/data_license.txt", "CMRxRecon data terms")):
        ok = (root / name).is_file()
        rows.append((f"preferred {name}", PASS if ok else WARN, "present" if ok else f"missing ({why})"))
    return rows


def check_metadata(root: Path, schema: Path) -> list[tuple[str, str, str]]:
    meta_file = root / "configs" / "metadata.json"
    if not meta_file.is_file():
        return [("metadata schema", FAIL, "configs/metadata.json missing")]
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return [("metadata JSON", FAIL, str(exc))]
    rows = []
    if not schema.is_file():
        # verify_metadata would try to download it; this check is meant to run offline.
        rows.append(("metadata schema", FAIL, f"schema file {schema} missing (refusing to download)"))
    else:
        from monai.bundle import verify_metadata

        try:
            vendored = schema.resolve() == (root / "docs" / "schema" / "meta_schema_20240725.json").resolve()
            hash_val = VENDORED_SCHEMA_MD5 if vendored else None
            verify_metadata(meta_file=str(meta_file), filepath=str(schema), hash_val=hash_val, hash_type="md5")
            rows.append(("metadata schema", PASS, f"valid against {schema.name}"))
        except Exception as exc:  # report every failure the same way; the message says what is wrong
            rows.append(("metadata schema", FAIL, str(exc).splitlines()[0][:200]))
    version = meta.get("version")
    changelog = meta.get("changelog")
    if not isinstance(changelog, dict) or version not in changelog:
        rows.append(("changelog has version", FAIL, f"no changelog entry for version {version!r}"))
    else:
        rows.append(("changelog has version", PASS, f"version {version}"))
    return rows


def check_large_files(root: Path) -> list[tuple[str, str, str]]:
    found = sorted(p for ext in ("yml", "yaml", "json") for p in root.glob(f"large_files*.{ext}"))
    if not found:
        return [("large_files list", PASS, "none (no file needs downloading)")]
    rows = []
    for path in found:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            rows.append((f"large files {path.name}", FAIL, f"cannot parse: {exc}"))
            continue
        entries = data.get("large_files") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            rows.append((f"large files {path.name}", FAIL, "needs a top-level 'large_files' list"))
            continue
        bad = [e for e in entries if not (isinstance(e, dict) and {"path", "url", "hash_val"} <= set(e))]
        if bad:
            rows.append((f"large files {path.name}", FAIL, f"{len(bad)} entr(ies) lack path/url/hash_val"))
        else:
            rows.append((f"large files {path.name}", PASS, f"{len(entries)} entr(ies)"))
    return rows


def check_sizes(root: Path) -> list[tuple[str, str, str]]:
    files = _bundle_files(root)
    too_big = [(p, p.stat().st_size) for p in files if p.stat().st_size > ZOO_MAX_BYTES]
    large = [(p, p.stat().st_size) for p in files if HOOK_MAX_BYTES < p.stat().st_size <= ZOO_MAX_BYTES]
    rows = []
    if too_big:
        names = ", ".join(f"{p.relative_to(root)} ({s / 2**20:.1f} MB)" for p, s in too_big)
        rows.append(("file sizes <= 25 MB", FAIL, f"move to large_files.yml: {names}"))
    else:
        rows.append(("file sizes <= 25 MB", PASS, f"{len(files)} files checked"))
    if large:
        names = ", ".join(f"{p.relative_to(root)} ({s / 2**10:.0f} KB)" for p, s in large)
        rows.append(("file sizes <= 1024 KB", WARN, f"Zoo pre-commit hook would reject: {names}"))
    return rows


def print_table(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'check'.ljust(width)}  status  detail")
    print(f"{'-' * width}  ------  ------")
    for name, status, detail in rows:
        print(f"{name.ljust(width)}  {status.ljust(6)}  {detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parents[1], help="bundle root")
    parser.add_argument("--schema", type=Path, default=None, help="metadata schema (default: the vendored copy)")
    args = parser.parse_args(argv)
    root = args.bundle.resolve()
    schema = args.schema or root / "docs" / "schema" / "meta_schema_20240725.json"
    rows = check_files(root) + check_metadata(root, schema) + check_large_files(root) + check_sizes(root)
    print_table(rows)
    failed = [r for r in rows if r[1] == FAIL]
    print(f"\n{len(failed)} failure(s), {sum(r[1] == WARN for r in rows)} warning(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
