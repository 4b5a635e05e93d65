"""Safe output paths and atomic file writes.

Every writer in :mod:`bundle.io` goes through :func:`atomic_write`, and every output path is derived from
an input path with the helpers below, so that:

* an output never lands outside its output folder (``..``, absolute names and symlinks that leave the
  dataset root are refused);
* an output never overwrites an input (the output folder may not sit inside the dataset, and a file that
  *is* an input, even under another name through a symlink or hard link, is never written);
* a crash or a full disk never leaves a half-written file under the final name.

Path conventions: the dataset root is the folder the user points the bundle at (any level of a
CMRxRecon2023 or CMRxRecon2024 tree, e.g. ``ChallengeData/MultiCoil``); the relative path of an input below
it is mirrored below the output root.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from bundle.data.layout import RELEASES, release_of_path
from bundle.errors import UnsafePathError
from bundle.files import atomic_write

__all__ = [
    "relative_input_path",
    "derive_output_path",
    "check_output_dir",
    "ensure_not_input",
    "submission_path",
    "atomic_write",
    "KNOWN_MODALITIES",
    "EVALUATION_SETS",
]

PathLike = str | os.PathLike

# Modality folders of the CMRxRecon2024 tree (docs/design.md, "Data format"); the submission template uses the
# same names. Kept for callers; the rules of every release live in bundle.data.layout.
KNOWN_MODALITIES = RELEASES["2024"].modalities
# Only these sets ship undersampled k-space (``UnderSample_Task<k>``); TrainingSet has FullSample only.
EVALUATION_SETS = RELEASES["2024"].evaluation_sets


def _has_parent_refs(path: PathLike) -> bool:
    return ".." in Path(path).parts


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _locate(input_path: PathLike, dataset_root: PathLike) -> Path:
    """Absolute (not resolved) spelling of an input path.

    A relative path that already starts with the (relative) root, as produced by globbing
    ``dataset_root``, is taken relative to the working directory; any other relative path is taken
    relative to the root, as written in datalists.
    """
    given = Path(input_path)
    if given.is_absolute():
        return Path(os.path.abspath(given))
    from_cwd = Path(os.path.abspath(given))
    if _is_within(from_cwd, Path(os.path.abspath(dataset_root))):
        return from_cwd
    return Path(os.path.abspath(Path(dataset_root) / given))


def relative_input_path(input_path: PathLike, dataset_root: PathLike) -> PurePosixPath:
    """Path of ``input_path`` relative to ``dataset_root``, as a POSIX path with no ``..`` parts.

    A relative ``input_path`` is taken relative to ``dataset_root`` (the form used in datalists) unless it
    already starts with a relative ``dataset_root`` (the form produced by globbing it); an absolute one
    must lie inside the root. The check is done twice: lexically (which gives the mirrored name,
    so a symlinked sub-folder keeps its visible name) and on the fully resolved paths (which catches a
    symlink inside the dataset that points outside it).

    Raises:
        UnsafePathError: ``..`` in the path, an absolute path outside the root, or a symlink escape.
    """
    root = Path(dataset_root)
    if _has_parent_refs(input_path):
        raise UnsafePathError.at(input_path, "input paths may not contain '..'; pass a path inside the dataset root")
    cand_abs = _locate(input_path, dataset_root)
    root_abs = Path(os.path.abspath(root))
    root_real = root.resolve()
    cand_real = cand_abs.resolve()
    if not _is_within(cand_real, root_real):
        raise UnsafePathError.at(
            input_path,
            f"resolves to {cand_real}, which is outside the dataset root {root_real} "
            "(a symlink or absolute path escapes the dataset)",
        )
    if _is_within(cand_abs, root_abs):
        rel = cand_abs.relative_to(root_abs)
    else:
        # The caller mixed a resolved and an unresolved spelling (e.g. the root is a symlink): fall back to
        # the resolved relative path, which the check above proved is inside the root.
        rel = cand_real.relative_to(root_real)
    if rel == Path("."):
        raise UnsafePathError.at(input_path, "is the dataset root itself, not a file inside it")
    return PurePosixPath(rel.as_posix())


def _check_relative_name(name: PathLike, what: str) -> PurePosixPath:
    rel = PurePosixPath(Path(name).as_posix())
    if rel.is_absolute() or Path(name).is_absolute() or Path(name).drive:
        raise UnsafePathError.at(name, f"{what} must be a relative name, not an absolute path")
    if ".." in rel.parts:
        raise UnsafePathError.at(name, f"{what} may not contain '..'")
    return rel


def derive_output_path(
    input_path: PathLike,
    dataset_root: PathLike,
    output_root: PathLike,
    new_suffix: str | None = None,
    subdir: PathLike | None = None,
) -> Path:
    """Mirror ``input_path``'s place under ``dataset_root`` at ``output_root[/subdir]``.

    ``new_suffix`` replaces the last suffix, e.g. ``".nii.gz"`` turns ``cine_sax.mat`` into
    ``cine_sax.nii.gz``; ``""`` removes it. Nothing is created on disk.

    Example: ``derive_output_path("/d/Cine/TrainingSet/FullSample/P001/cine_sax.mat", "/d", "/out",
    ".nii.gz", "nifti")`` is ``/out/nifti/Cine/TrainingSet/FullSample/P001/cine_sax.nii.gz``.
    """
    rel = relative_input_path(input_path, dataset_root)
    out = Path(output_root)
    if subdir is not None:
        out = out / _check_relative_name(subdir, "subdir")
    out = out / rel
    if new_suffix is not None:
        if new_suffix and (not new_suffix.startswith(".") or "/" in new_suffix or "\\" in new_suffix):
            raise ValueError(f"new_suffix must be empty or start with '.', and name no folder; got {new_suffix!r}")
        out = out.with_suffix(new_suffix)
    return out


def check_output_dir(output_dir: PathLike, dataset_dir: PathLike) -> Path:
    """Refuse an output folder equal to, or inside, the dataset folder; return it resolved.

    Writing next to the inputs would mix results with the read-only challenge data and, with a mirrored
    layout, could overwrite inputs. The dataset inside the output folder is allowed (e.g. ``/work`` as
    output and ``/work/data`` as dataset) because mirrored outputs then never collide with input files,
    and :func:`ensure_not_input` guards each file anyway. Symlinks are resolved before comparing.

    Raises:
        UnsafePathError: the output folder is the dataset folder or lies inside it.
    """
    out_real = Path(output_dir).resolve()
    data_real = Path(dataset_dir).resolve()
    if out_real == data_real:
        raise UnsafePathError.at(output_dir, f"the output folder is the dataset folder {data_real}; choose another")
    if data_real in out_real.parents:
        raise UnsafePathError.at(
            output_dir, f"the output folder lies inside the dataset folder {data_real}; choose a folder outside it"
        )
    return out_real


def ensure_not_input(path: PathLike, inputs: Iterable[PathLike]) -> None:
    """Refuse to write ``path`` if it is (or would replace) any of ``inputs``.

    Compares resolved paths, and device/inode numbers for files that exist, so a symlink or hard link to
    an input is also caught.

    Raises:
        UnsafePathError: ``path`` names an input file.
    """
    target = Path(path)
    target_real = target.resolve()
    target_stat = target_real.stat() if target_real.exists() else None
    for item in inputs:
        item_real = Path(item).resolve()
        same = item_real == target_real
        if not same and target_stat is not None and item_real.exists():
            st = item_real.stat()
            same = (st.st_dev, st.st_ino) == (target_stat.st_dev, target_stat.st_ino)
        if same:
            raise UnsafePathError.at(path, f"refusing to overwrite the input file {item}")


def submission_path(kus_path: PathLike, dataset_root: PathLike, output_root: PathLike) -> Path:
    """Challenge submission path for an undersampled k-space file; the output keeps the input's file name.

    The release is read from the input's own folders (:func:`bundle.data.layout.release_of_path`), and its
    :meth:`~bundle.data.layout.Release.submission_path` places the file:

    * CMRxRecon2024: ``.../<Modality>/<Set>/UnderSample_Task<k>/<Pxxx>/<name>.mat`` maps to
      ``<output_root>/Task<k>/<Modality>/<Set>/Task<k>/<Pxxx>/<name>.mat`` (``<Set>``: ValidationSet or TestSet).
    * CMRxRecon2023: ``.../<Cine|Mapping>/<Set>/AccFactorXX/<Pxxx>/<series>.mat`` maps to
      ``<output_root>/MultiCoil/<Modality>/<Set>/AccFactorXX/<Pxxx>/<series>.mat`` (any set).
    * CMRxRecon2025: ``.../<Modality>/<Set>/UnderSample_<Task>/<Center>/<Vendor>/<Pxxx>/<name>.mat`` maps to
      ``<output_root>/<Task>/MultiCoil/<Modality>/<Set>/UnderSample_<Task>/<Center>/<Vendor>/<Pxxx>/<name>.mat``,
      the tree the 2025 scorer reads.

    ``dataset_root`` may be any ancestor of the modality folder.

    Raises:
        UnsafePathError: the input is outside ``dataset_root`` (see :func:`relative_input_path`).
        CMRDataError: the path follows no layout (the message describes the CMRxRecon2024 one unless the path
            has an ``AccFactor*`` or ``UnderSample_Task[RS]*`` folder).
    """
    relative_input_path(kus_path, dataset_root)  # containment and '..' checks
    located = _locate(kus_path, dataset_root)
    rel = release_of_path(located) or RELEASES["2024"]
    return rel.submission_path(located, output_root)
