"""Validate a whole CMRxRecon2023, 2024 or 2025 dataset tree before a run and print a table of its problems.

Usage, from the repository root (no installation needed)::

    python scripts/check_dataset.py --root DIR [--no-values] [--modalities Cine Mapping] [--json out.json]

Exit status: 0 when no problem was found, 1 when problems were found, 2 on a usage error (missing root,
no k-space files under it).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys
from pathlib import Path

# Run from a checkout without installing: the repository root must precede site-packages on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bundle.data.checks import check_dataset, format_problems  # noqa: E402
from bundle.data.formats import format_of  # noqa: E402
from bundle.data.index import detect_layout, find_multicoil_roots, is_raw_dataset  # noqa: E402
from bundle.errors import EmptyDatasetError  # noqa: E402

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, type=Path, help="dataset root ([ChallengeData/][MultiCoil/]...)")
    parser.add_argument(
        "--no-values", action="store_true", help="check files, shapes and masks only; do not read k-space slabs"
    )
    parser.add_argument("--modalities", nargs="+", metavar="NAME", help="only these modality folders, e.g. Cine")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the problems to this JSON file")
    parser.add_argument(
        "--max-slice-problems",
        type=int,
        default=20,
        metavar="N",
        help="list at most N bad slabs per file, then a summary (default 20; 0 or less: list all)",
    )
    parser.add_argument("--progress", action="store_true", help="print each file as it is checked (stderr)")
    parser.add_argument(
        "--group", help="ISMRMRD files: the HDF5 group to read (default: dataset, or the last dataset_<n>)"
    )
    parser.add_argument(
        "--series-type", help="ISMRMRD files: the series type when the file's names say nothing (cine, T1map, ...)"
    )
    return parser.parse_args(argv)


def describe_tree(root: Path, records) -> str:
    """A few lines on what the tree is: release, trees, files per set and task, patients, centres and vendors."""
    lines = [f"CMRxRecon{detect_layout(root)} tree: " + ", ".join(str(p) for p in find_multicoil_roots(root))]
    per_set = collections.Counter((r.split, r.kind, r.task) for r in records)
    for (split, kind, task), n in sorted(per_set.items(), key=lambda kv: tuple(map(str, kv[0]))):
        lines.append(f"  {split:<13} {kind:<12} {'' if task is None else str(task):<7} {n} files")
    patients = {r.patient for r in records}
    sites = sorted({(r.center, r.vendor) for r in records if r.center})
    lines.append(f"  {len(patients)} patients, {len({r.series for r in records})} series")
    if sites:
        lines.append(f"  {len({c for c, _ in sites})} centres, {len(sites)} centre/vendor folders:")
        lines.extend(f"    {c}/{v}" for c, v in sites)
    return "\n".join(lines)


def _vector(v) -> str:
    return "(" + ", ".join(f"{x:.2f}" for x in v) + ")"


def describe_raw_folder(root: Path, records) -> str:
    """One block per series of every ISMRMRD file: what it holds, its sampling and its place in the patient."""
    lines = [f"ISMRMRD raw data: {os.path.abspath(root)}"]
    lines.append(
        f"  {len({r.path for r in records})} files, {len(records)} series, {len({r.patient for r in records})} patients"
    )
    for r in records:
        item = dataclasses.asdict(r)
        volume = format_of(item).volume(r.path, r.entry, group=r.raw_group)
        info, geometry = dict(volume.info or {}), volume.geometry
        name = os.path.relpath(r.path, root) + (f" [{r.entry}]" if r.entry else "")
        lines.append(f"  {name}  (patient {r.patient}, group {r.raw_group})")
        encoded = info.get("encoded_matrix") or ()
        sampling = f"fully sampled (retrospective masks with {r.acs_width} ACS lines)"
        if r.kind != "full" and volume.acquired is not None:
            per_frame = volume.acquired.max(axis=-1).sum(axis=-1).mean()  # (nt, ny, nx) -> lines per frame
            sampling = (
                f"undersampled, R={r.acceleration} ({per_frame:.1f} of {r.ny} lines per frame), ACS {r.acs_width} lines"
            )
        extras = [
            f"partial Fourier {info['partial_fourier']:.2f}" if info.get("partial_fourier") else "",
            "asymmetric echo (zero-filled)" if info.get("asymmetric_echo") else "",
            f"{info.get('calibration')} ACS" if info.get("calibration") == "separate" else "",
        ]
        sampling += "".join(f"; {e}" for e in extras if e)
        lines.append(
            f"    series {r.series} ({r.series_type}), {info.get('vendor') or 'unknown vendor'}"
            f" {info.get('field_strength_T') or '?'} T; matrix recon {r.nx}x{r.ny}"
            + (f", encoded {encoded[1]}x{encoded[0]}" if len(encoded) == 2 else "")
            + f"; {r.nc} coils, {r.nz} slices, {r.nt} {'phases' if r.series_type == 'cine' else 'frames'}"
        )
        lines.append(
            f"    {sampling}; readout oversampling {info.get('readout_oversampling', 1)}x,"
            f" phase oversampling {info.get('phase_oversampling', 1)}x; {info.get('noise_readouts', 0)} noise readouts"
            + (" (prewhitened)" if info.get("noise_readouts") else " (no prewhitening)")
        )
        if geometry is not None:
            s0 = geometry.slices[0]
            dx, dy = geometry.pixel_spacing
            spacing = geometry.slice_spacing
            lines.append(
                f"    geometry: {dx:.2f} x {dy:.2f} mm, thickness {geometry.slice_thickness:.1f} mm"
                + (f", spacing {spacing:.1f} mm" if spacing else "")
                + f"; read {_vector(s0.read_dir)} phase {_vector(s0.phase_dir)} slice {_vector(s0.slice_dir)};"
                f" first slice centre {_vector(s0.position)} mm LPS;"
                f" {geometry.patient_position or 'no patient position'}"
            )
    return "\n".join(lines)


def _write_json(path: Path, root: Path, n_ok: int, problems) -> None:
    report = {
        "root": os.path.abspath(root),
        "files_ok": n_ok,
        "problems": [dataclasses.asdict(p) for p in problems],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    limit = args.max_slice_problems if args.max_slice_problems > 0 else None
    try:
        good, problems = check_dataset(
            args.root,
            check_values=not args.no_values,
            modalities=args.modalities,
            progress=args.progress,
            max_slice_problems=limit,
            raw_data={"group": args.group, "series_type": args.series_type},
        )
    except EmptyDatasetError as err:
        print(f"check_dataset: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(describe_raw_folder(args.root, good) if is_raw_dataset(args.root) else describe_tree(args.root, good))
    print(format_problems(problems, root=args.root, n_ok=len(good)))
    if args.json is not None:
        try:
            _write_json(args.json, args.root, len(good), problems)
        except OSError as err:
            print(f"check_dataset: error: cannot write {args.json}: {err}", file=sys.stderr)
            return EXIT_USAGE
    return EXIT_PROBLEMS if problems else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
