"""One k-space volume of a dataset: the :class:`FileRecord` every reader and the index share."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .layout import ACS_WIDTHS, RELEASES, Release, series_type

__all__ = ["RAW_LAYOUT", "FileRecord", "volume_source"]

#: ``FileRecord.layout`` of scanner raw data (ISMRMRD files), which belong to no challenge release.
RAW_LAYOUT = "ismrmrd"


@dataclasses.dataclass(frozen=True)
class FileRecord:
    """One k-space file of the tree. ``shape`` is the h5py-order shape; ``nt == 1`` for 4-D files.

    ``patient`` names one person in its release: ``Pxxx`` in 2023/2024, ``<Center>/<Vendor>/<Pxxx>`` in 2025
    (whose ``center`` and ``vendor`` are also set). ``task``: 2024 ``1``/``2``, 2025 ``'TaskR1'`` ... for
    undersampled files, else ``None``.
    """

    path: str
    kind: str  # 'full' | 'undersampled'
    split: str  # 'TrainingSet' | 'ValidationSet' | 'TestSet'
    task: int | str | None
    modality: str
    patient: str
    series: str
    view: str
    pattern: str | None
    acceleration: int | None
    mask_path: str | None
    masks: tuple[tuple[str, str], ...]
    shape: tuple[int, ...]
    nt: int
    nz: int
    nc: int
    ny: int
    nx: int
    group: str | None = None
    layout: str = "2024"  # '2023' | '2024' | '2025': the challenge release; 'ismrmrd': scanner raw data
    center: str | None = None
    vendor: str | None = None
    # Scanner raw data (``layout='ismrmrd'``): which series of which HDF5 group, and the ACS width measured from
    # the lines the file holds. CMRxRecon records keep the defaults.
    format: str = "mat"  # 'mat' | 'ismrmrd': the reader of bundle.data.formats
    entry: str | None = None
    raw_group: str | None = None
    measured_acs: int | None = None

    @property
    def shape_key(self) -> str:
        return f"{self.series}_{self.ny}x{self.nx}"

    @property
    def name(self) -> str:
        """``<patient>_<series>``, the form used by the known-bad lists."""
        return f"{self.patient}_{self.series}"

    @property
    def series_type(self) -> str:
        return series_type(self.series)

    @property
    def release(self) -> Release | None:
        """The challenge release of the file's tree; None for scanner raw data."""
        return RELEASES.get(self.layout)

    @property
    def acs_width(self) -> int:
        """ACS lines: measured from a raw file's lines, else those of the release's official masks (24, 16, 20)."""
        return self.measured_acs if self.measured_acs is not None else ACS_WIDTHS[self.layout]

    @property
    def source(self) -> str:
        """What names the volume in outputs and reports: see :func:`volume_source`."""
        return volume_source(self.path, self.entry)


def volume_source(path: str, entry: str | None) -> str:
    """The path that names one volume in outputs and reports: ``path`` itself, or for one of several series of a
    raw file ``<folder>/<stem>_<entry><suffix>`` (outputs then mirror that name; no such file exists)."""
    if not entry:
        return str(path)
    p = Path(path)
    return str(p.with_name(f"{p.stem}_{entry}{p.suffix}"))
