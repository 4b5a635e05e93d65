"""Synthetic ISMRMRD (MRD v1 HDF5) raw data from the numerical cardiac phantom, with its ground truth.

A generator, kept apart from the reader (:mod:`bundle.data.ismrmrd`). :func:`write_ismrmrd_phantom` simulates
what a scanner and ``siemens_to_ismrmrd`` would write for a 2-D multi-slice Cartesian scan: readout
oversampling, noise readouts with correlated coil noise, prospective undersampling with embedded or separate ACS
lines, partial Fourier, an asymmetric echo, reversed readouts, an oblique (optionally left-handed) slice stack
whose slice counters do not follow the slice positions, readouts stored out of k-space order, averages and an
extra counter that splits the file into series. The returned :class:`PhantomTruth` holds what a correct reader
must give back and where a bright marker voxel sits in the patient (LPS mm).

Physics (``docs/design.md``, "Scanner raw data (ISMRMRD)"): the coil images are rendered on the encoded
(oversampled) grid in the geometry of :mod:`bundle.geometry`; k-space is ``fft2c(image)`` for vendors that use
the inverse FFT to image, and ``ifft2c(image)`` for ``vendor='SIEMENS'`` (the FFT-to-image convention, which the
reader undoes by conjugation). The header and readout headers are the ``ismrmrd`` package's own types
(``ismrmrd.xsd`` header objects, ``ismrmrd.hdf5.acquisition_dtype`` records, the XML through ``ismrmrd.Dataset``);
the readout table is written in one call rather than one ``append_acquisition`` per readout.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import h5py
import ismrmrd
import ismrmrd.xsd as xsd
import numpy as np
from ismrmrd.hdf5 import acquisition_dtype, acquisition_header_dtype

from ..files import atomic_write
from ..geometry import ScanGeometry, SliceGeometry
from ..mri import fft2c_np, ifft2c_np
from .phantom import SERIES_KINDS, coil_sensitivities, random_anatomy, render_images

__all__ = ["PhantomTruth", "write_ismrmrd_phantom", "T1_INVERSION_TIMES_MS"]

#: Inversion times written for ``series='T1map'`` (MOLLI-like, the phantom's own contrasts).
T1_INVERSION_TIMES_MS = (100.0, 180.0, 260.0, 1100.0, 1180.0, 1260.0, 2100.0, 2180.0, 3100.0)

_FLAG = {"noise": 19, "calib": 20, "calib_imaging": 21, "reverse": 22, "last_in_slice": 8, "navigation": 23}
_RR_MS = 1000.0
_SIEMENS_TICK_MS = 2.5


def _bit(name: str) -> int:
    return 1 << (_FLAG[name] - 1)


@dataclasses.dataclass(frozen=True)
class PhantomTruth:
    """What a correct reader returns for a file written by :func:`write_ismrmrd_phantom`.

    Attributes:
        kspace: ``(nt, nz, nc, ny, nx)`` complex64, noise-free recon-matrix k-space as the reader gives it
            with ``prewhiten=False``: acquired lines only, asymmetric echo zero-filled before the oversampling
            removal, Siemens k-space conjugated. (Prewhitened output is ``W @ kspace`` plus unit white noise, with
            ``W`` the reader's whitening matrix.) For a file split into series, the first series.
        full_kspace: the same, every line and every sample (no undersampling, no echo asymmetry).
        mask: ``(nt, ny)`` float32, the lines acquired in each frame.
        padded: ``(ny, nx)`` bool, zero by design (partial-Fourier lines, asymmetric-echo samples).
        acs_width: width of the fully sampled centre band as written (embedded ACS; 0 for separate ACS).
        noise_covariance: ``(nc, nc)`` complex128, the per-sample coil noise covariance in the imaging readouts
            (zeros without noise).
        geometry: the recon-matrix geometry, slices in ascending position along ``slice_dir``.
        marker_lps: ``(3,)`` LPS mm of the bright marker voxel.
        marker_voxel: ``(i, j, k)``: its recon-matrix voxel (x, y) and slice.
        images: ``(nt, nz, ny, nx)`` complex64, the coil-free object on the recon grid (marker included).
        series: the other series' noise-free k-space, by entry name, when the file is split (``split``).
    """

    kspace: np.ndarray
    full_kspace: np.ndarray
    mask: np.ndarray
    padded: np.ndarray
    acs_width: int
    noise_covariance: np.ndarray
    geometry: ScanGeometry
    marker_lps: np.ndarray
    marker_voxel: tuple[int, int, int]
    images: np.ndarray
    series: dict = dataclasses.field(default_factory=dict)


def _rotation(oblique: bool) -> np.ndarray:
    """Columns: read, phase, slice directions (LPS). Oblique: a double-oblique short-axis-like orientation."""
    if not oblique:
        return np.eye(3)
    a, b, c = math.radians(35.0), math.radians(-25.0), math.radians(15.0)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    ry = np.array([[math.cos(c), 0, math.sin(c)], [0, 1, 0], [-math.sin(c), 0, math.cos(c)]])
    return rz @ rx @ ry


def _line_mask(rng, nt: int, ny: int, acceleration: int, acs: int, first_row: int) -> tuple[np.ndarray, np.ndarray]:
    """``(nt, ny)`` bool of the imaging lines and ``(ny,)`` bool of the ACS band (MATLAB-centred)."""
    band = np.zeros(ny, bool)
    if acceleration > 1 and acs > 0:
        lo = ny // 2 + math.ceil(-acs / 2)
        band[lo : lo + acs] = True
    lines = np.zeros((nt, ny), bool)
    for t in range(nt):
        if acceleration > 1:
            lines[t, (t % acceleration) :: acceleration] = True
        else:
            lines[t] = True
    lines[:, :first_row] = False
    band[:first_row] = False
    return lines, band


def _header(
    *,
    nx: int,
    ny: int,
    nye: int,
    nxe: int,
    nz: int,
    nt: int,
    nc: int,
    dx: float,
    thickness: float,
    ky_limits: tuple[int, int, int],
    vendor: str,
    series: str,
    protocol_name: str,
    patient_id: str | None,
    patient_position: str,
    acceleration: int,
    separate_acs: bool,
    frame_counter: str,
    split: tuple[str, int] | None,
) -> str:
    def limit(n: int, centre: int = 0) -> xsd.limitType:
        return xsd.limitType(minimum=0, maximum=max(0, n - 1), center=centre)

    limits = {"kspace_encoding_step_1": xsd.limitType(minimum=ky_limits[0], maximum=ky_limits[1], center=ky_limits[2])}
    limits["kspace_encoding_step_2"] = limit(1)
    limits["slice"] = limit(nz)
    for d in ("phase", "contrast", "set", "repetition", "average"):
        n = nt if d == frame_counter else (split[1] if split and split[0] == d else 1)
        limits[d] = limit(n)
    encoding = xsd.encodingType(
        encodedSpace=xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=nxe, y=nye, z=1),
            fieldOfView_mm=xsd.fieldOfViewMm(x=nxe * dx, y=nye * dx, z=thickness),
        ),
        reconSpace=xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=nx, y=ny, z=1),
            fieldOfView_mm=xsd.fieldOfViewMm(x=nx * dx, y=ny * dx, z=thickness),
        ),
        encodingLimits=xsd.encodingLimitsType(**limits),
        trajectory=xsd.trajectoryType.CARTESIAN,
    )
    if acceleration > 1:
        encoding.parallelImaging = xsd.parallelImagingType(
            accelerationFactor=xsd.accelerationFactorType(
                kspace_encoding_step_1=acceleration, kspace_encoding_step_2=1
            ),
            calibrationMode=xsd.calibrationModeType.SEPARATE if separate_acs else xsd.calibrationModeType.EMBEDDED,
        )
    mapping = series == "T1map"
    hdr = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63_870_000),
        subjectInformation=xsd.subjectInformationType(patientID=patient_id) if patient_id else None,
        measurementInformation=xsd.measurementInformationType(
            patientPosition=xsd.patientPositionType(patient_position),
            protocolName=protocol_name,
            seriesDescription=protocol_name,
        ),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemVendor=vendor, systemModel="Phantom", systemFieldStrength_T=1.5, receiverChannels=nc
        ),
        sequenceParameters=xsd.sequenceParametersType(
            TR=[2.8 if not mapping else 2.6],
            TE=[1.4 if not mapping else 1.1],
            TI=list(T1_INVERSION_TIMES_MS[:nt]) if mapping else [],
            flipAngle_deg=[50.0 if not mapping else 35.0],
        ),
        encoding=[encoding],
    )
    return xsd.ToXML(hdr)


def _correlation(rng, nc: int, correlated: bool) -> np.ndarray:
    """A Hermitian positive definite coil covariance with unit mean diagonal (identity when not correlated)."""
    if not correlated:
        return np.eye(nc, dtype=np.complex128)
    b = np.eye(nc) + 0.35 * (rng.standard_normal((nc, nc)) + 1j * rng.standard_normal((nc, nc)))
    c = b @ b.conj().T
    return c / np.real(np.trace(c) / nc)


def write_ismrmrd_phantom(
    path: str | os.PathLike,
    *,
    seed: int = 0,
    nx: int = 64,
    ny: int = 48,
    nc: int = 4,
    nz: int = 2,
    nt: int = 6,
    readout_os: int = 2,
    phase_os_lines: int = 0,
    acceleration: int = 1,
    acs: int = 8,
    noise_readouts: int = 32,
    noise: float = 0.01,
    correlated_noise: bool = True,
    noise_dwell_ratio: float = 1.0,
    noise_group: bool = False,
    asymmetric_echo: float | None = None,
    partial_fourier: float | None = None,
    discard: tuple[int, int] = (0, 0),
    oblique: bool = False,
    left_handed: bool = False,
    shuffle: bool = False,
    vendor: str = "SIEMENS",
    series: str = "cine_sax",
    protocol_name: str | None = None,
    patient_id: str | None = "PHANTOM001",
    patient_position: str = "HFS",
    reverse_every_other: bool = False,
    separate_acs: bool = False,
    averages: int = 1,
    split: tuple[str, int] | None = None,
    navigators: int = 0,
    pixel_mm: float = 2.0,
    slice_thickness_mm: float = 8.0,
    slice_gap_mm: float = 2.0,
    centre_lps: tuple[float, float, float] = (12.5, -30.0, 41.0),
) -> PhantomTruth:
    """Write a synthetic 2-D multi-slice Cartesian ISMRMRD file of the phantom and return its ground truth.

    Args:
        path: the ``.h5``/``.mrd`` file (written atomically; parent folders created).
        seed: everything random (anatomy, coils, noise, order) follows from it.
        nx, ny: recon matrix (readout after oversampling removal, phase lines); nc coils, nz slices, nt frames.
        readout_os: encoded readout = ``readout_os · nx`` samples over ``readout_os`` times the FOV.
        phase_os_lines: phase oversampling, ``ny + phase_os_lines`` encoded lines over a FOV larger by as many
            pixels; the reader crops it when fully sampled and keeps it (the truth too) when undersampled.
        acceleration, acs: every ``acceleration``-th line, offset by ``t % acceleration`` per frame, plus ``acs``
            centre lines (flagged as embedded calibration, or written as separate calibration readouts of
            frame 0 with ``separate_acs``).
        noise_readouts, noise, correlated_noise, noise_dwell_ratio, noise_group: noise readouts first (or in a
            group ``dataset_1`` of their own, the imaging data then in ``dataset_2``), complex Gaussian noise of
            standard deviation ``noise`` times the RSS maximum on every sample, correlated between coils; noise
            readouts sampled with ``noise_dwell_ratio`` times the imaging dwell time (so their variance is that
            many times smaller).
        asymmetric_echo: fraction of the readout acquired (the early samples missing), e.g. 0.8.
        partial_fourier: fraction of the lines acquired (the first lines missing), e.g. 0.75. Siemens files get
            ``siemens_to_ismrmrd``'s centre ``floor(lines/2)`` in the header and the true one in ``idx.user[5]``.
        discard: ``(discard_pre, discard_post)`` junk samples added around each readout.
        oblique, left_handed: a double-oblique stack; ``slice_dir = -(read × phase)``.
        shuffle: readouts stored in random order. reverse_every_other: every other line stored reversed
            (``ACQ_IS_REVERSE``). averages: each line written that many times (counter ``average``).
        split: ``(counter, n)``, e.g. ``('set', 2)``: the scan repeated with that counter, the copy ``s`` scaled by
            ``1 / (1 + s)``; the reader makes one series per value.
        navigators: navigator readouts (flag 23) written before each slice, which a reader must drop.
        series: a phantom kind (``cine_sax``, ``T1map``, ...); T1map frames go on the ``contrast`` counter.
    """
    if series not in SERIES_KINDS:
        raise ValueError(f"unknown series {series!r}; expected one of {SERIES_KINDS}")
    if readout_os < 1 or acceleration < 1 or averages < 1 or min(nx, ny, nc, nz, nt) < 1:
        raise ValueError("sizes, readout_os, acceleration and averages must be positive")
    rng = np.random.default_rng(seed)
    siemens = "siemens" in vendor.lower()
    frame_counter = "contrast" if series in ("T1map", "T2map") else "phase"
    nxe = nx * readout_os
    nye = ny + int(phase_os_lines)
    # The reader crops phase oversampling only when every line is acquired; otherwise it keeps the encoded FOV.
    crop_y = nye != ny and acceleration == 1
    ny_out = ny if nye == ny or crop_y else nye
    y0 = nye // 2 - ny // 2
    dx = float(pixel_mm)

    # ----- geometry: slices ascending along slice_dir; slice counters in the reverse order
    rot = _rotation(oblique)
    read_dir, phase_dir = rot[:, 0], rot[:, 1]
    slice_dir = -np.cross(read_dir, phase_dir) if left_handed else np.cross(read_dir, phase_dir)
    spacing = slice_thickness_mm + slice_gap_mm
    positions = [np.asarray(centre_lps) + (k - (nz - 1) / 2) * spacing * slice_dir for k in range(nz)]
    geometry = ScanGeometry(
        matrix=(nx, ny_out),
        fov_mm=(nx * dx, ny_out * dx, slice_thickness_mm),
        slices=tuple(SliceGeometry(tuple(p), tuple(read_dir), tuple(phase_dir), tuple(slice_dir)) for p in positions),
        patient_position=patient_position,
        trigger_times_ms=tuple(t * _RR_MS / nt for t in range(nt)) if siemens and frame_counter == "phase" else None,
    )
    counter_of_z = [nz - 1 - k for k in range(nz)]

    # ----- object and coils on the encoded grid
    anatomy = random_anatomy(rng)
    images = render_images(series, nt, nz, nye, nxe, anatomy, rng)  # (nt, nz, nye, nxe)
    mi, mj, mk = nx // 2 + max(1, nx // 5), ny // 2 - max(1, ny // 6), nz - 1  # on the recon grid
    x0 = nxe // 2 - nx // 2
    images[:, mk, y0 + mj, x0 + mi] = 5.0
    mj_out = mj if ny_out == ny else y0 + mj
    sens = coil_sensitivities(nc, nz, nye, nxe, anatomy, rng)  # (nz, nc, nye, nxe)
    coil = images[:, :, None] * sens[None]  # (nt, nz, nc, nye, nxe)
    to_k = ifft2c_np if siemens else fft2c_np
    k_enc = to_k(coil, axes=(-2, -1)).astype(np.complex64)
    rss_max = float(np.sqrt((np.abs(coil) ** 2).sum(axis=2)).max())
    sigma = float(noise) * rss_max
    cov = _correlation(rng, nc, correlated_noise) * sigma**2
    mix = np.linalg.cholesky(cov) if sigma > 0 else np.zeros((nc, nc))

    # ----- sampling
    n_lines = nye if partial_fourier is None else int(round(partial_fourier * nye))
    first_row = nye - n_lines
    if first_row > nye // 2:
        raise ValueError(f"partial_fourier={partial_fourier} leaves out the k-space centre")
    lines, band = _line_mask(rng, nt, nye, acceleration, acs, first_row)
    data_lines = lines | (band[None] if not separate_acs else False)
    n_samp = nxe if asymmetric_echo is None else int(round(asymmetric_echo * nxe))
    first_col = nxe - n_samp
    if first_col > nxe // 2:
        raise ValueError(f"asymmetric_echo={asymmetric_echo} leaves out the k-space centre")
    centre_sample = nxe // 2 - first_col
    if siemens and first_row:
        ky_of_row = lambda r: r - first_row  # noqa: E731  (siemens_to_ismrmrd counts from the first line)
        ky_limits = (0, n_lines - 1, n_lines // 2)
        user5 = nye // 2 - first_row
    else:
        ky_of_row = lambda r: r  # noqa: E731
        ky_limits = (first_row, nye - 1, nye // 2)
        user5 = nye // 2

    # ----- truth, computed on whole arrays (the reader works readout by readout)
    def crop(k: np.ndarray, axis: int, lo: int, n: int) -> np.ndarray:
        img = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(k, axes=axis), axis=axis, norm="ortho"), axes=axis)
        img = np.take(img, np.arange(lo, lo + n), axis=axis)
        return np.fft.fftshift(np.fft.fft(np.fft.ifftshift(img, axes=axis), axis=axis, norm="ortho"), axes=axis)

    def recon(k: np.ndarray) -> np.ndarray:
        k = crop(np.conj(k) if siemens else k, -1, x0, nx)
        return crop(k, -2, y0, ny) if crop_y else k

    echo = np.zeros(nxe, np.float32)
    echo[first_col:] = 1
    truth_k = recon(k_enc * echo * data_lines[:, None, None, :, None]).astype(np.complex64)
    full_k = recon(k_enc).astype(np.complex64)
    padded = np.zeros((ny_out, nx), bool)
    rows_enc = np.round((np.arange(ny_out) - ny_out // 2) * (nye / ny if crop_y else 1) + nye // 2)
    padded[rows_enc < first_row] = True
    cols = (np.arange(nx) - nx // 2) * readout_os + nxe // 2
    padded[:, cols < first_col] = True
    obj = images[..., x0 : x0 + nx]
    obj = obj[..., y0 : y0 + ny, :] if ny_out == ny else obj
    obj = np.conj(obj) if siemens else obj
    mask = (lines if separate_acs else data_lines).astype(np.float32)
    if crop_y:
        mask = np.broadcast_to(~padded[:, 0], (nt, ny)).astype(np.float32)

    # ----- readouts: header fields and noise-free samples first, then noise and the table in bulk
    dwell = 2.0
    geo_rows = np.array([[g.position, g.read_dir, g.phase_dir, g.slice_dir] for g in geometry.slices])

    def readout(samples, *, noise_scale=1.0, flags=0, ky=0, z_counter=0, z_index=0, phase=0, contrast=0, set_=0,
                rep=0, avg=0, t_ms=0.0, dwell_us=dwell, centre=None):  # fmt: skip
        spec = (flags, ky, z_counter, z_index, phase, contrast, set_, rep, avg, t_ms, dwell_us,
                centre_sample if centre is None else centre)  # fmt: skip
        return spec, samples, noise_scale

    def table(readouts: list, reverse_every_other: bool) -> np.ndarray:
        n = len(readouts)
        specs = np.array([r[0] for r in readouts], np.float64).reshape(n, 12)
        datas = [np.array(r[1], np.complex64) for r in readouts]
        for length in {d.shape[1] for d in datas}:  # correlated noise, drawn per readout length in one call
            which = [i for i, d in enumerate(datas) if d.shape[1] == length and readouts[i][2] > 0 and sigma > 0]
            if which:
                w = rng.standard_normal((len(which), nc, length, 2)).view(np.complex128)[..., 0] / math.sqrt(2)
                w = np.einsum("ij,mjl->mil", mix, w).astype(np.complex64)
                for m, i in enumerate(which):
                    datas[i] = datas[i] + w[m] * np.float32(readouts[i][2])
        flags = specs[:, 0].astype(np.uint64)
        reverse = np.zeros(n, bool)
        if reverse_every_other:
            reverse[1::2] = True
            flags[reverse] |= np.uint64(_bit("reverse"))
        pre, post = discard
        rec = np.zeros(n, acquisition_dtype)
        data, traj = np.empty(n, object), np.empty(n, object)
        for i, d in enumerate(datas):  # element by element: equal-length vectors would make a 2-D array
            d = d[:, ::-1] if reverse[i] else d
            if pre or post:
                junk = (rng.standard_normal((nc, pre + post)) * 1e3).astype(np.complex64)
                d = np.concatenate([junk[:, :pre], d, junk[:, pre:]], axis=1)
            data[i], traj[i] = np.ascontiguousarray(d).view(np.float32).reshape(-1), np.zeros(0, np.float32)
        heads = np.zeros(n, acquisition_header_dtype)
        heads["version"] = 1
        heads["flags"] = flags
        heads["number_of_samples"] = [len(d) // (2 * nc) for d in data]
        heads["available_channels"] = heads["active_channels"] = nc
        heads["discard_pre"], heads["discard_post"] = pre, post
        heads["center_sample"] = specs[:, 11] + pre
        heads["sample_time_us"] = specs[:, 10]
        zi = specs[:, 3].astype(np.int64)
        for c, field in enumerate(("position", "read_dir", "phase_dir", "slice_dir")):
            heads[field] = geo_rows[zi, c]
        ticks = specs[:, 9] / _SIEMENS_TICK_MS if siemens else specs[:, 9]
        heads["physiology_time_stamp"][:, 0] = np.round(ticks).astype(np.uint32)
        idx = heads["idx"]
        for c, field in ((1, "kspace_encode_step_1"), (2, "slice"), (4, "phase"), (5, "contrast"), (6, "set"),
                         (7, "repetition"), (8, "average")):  # fmt: skip
            idx[field] = specs[:, c].astype(np.uint16)
        idx["user"][:, 5] = user5
        rec["head"], rec["data"], rec["traj"] = heads, data, traj
        return rec

    noise = [
        readout(
            np.zeros((nc, nxe)),
            noise_scale=1 / math.sqrt(noise_dwell_ratio),
            flags=_bit("noise"),
            dwell_us=dwell * noise_dwell_ratio,
            centre=0,
        )  # fmt: skip
        for _ in range(noise_readouts)
    ]
    copies = split[1] if split else 1
    before, imaging = [], []
    for s in range(copies):
        scale = np.float32(1.0 / (1 + s))
        for k in range(nz):
            zc = counter_of_z[k]
            for _ in range(navigators):
                before.append(readout(np.zeros((nc, nxe)), flags=_bit("navigation"), z_counter=zc, z_index=k))
            if separate_acs and acceleration > 1:
                for r in np.flatnonzero(band):
                    before.append(readout(k_enc[0, k, :, r, first_col:] * scale, flags=_bit("calib"),
                                          ky=ky_of_row(int(r)), z_counter=zc, z_index=k))  # fmt: skip
            for t in range(nt):
                for r in np.flatnonzero(data_lines[t]):
                    for a in range(averages):
                        kw = {"ky": ky_of_row(int(r)), "z_counter": zc, "z_index": k, "avg": a,
                              "t_ms": t * _RR_MS / nt}  # fmt: skip
                        kw["phase" if frame_counter == "phase" else "contrast"] = t
                        if split:
                            kw[{"set": "set_", "repetition": "rep", "contrast": "contrast"}[split[0]]] = s
                        flags = _bit("calib_imaging") if band[r] and acceleration > 1 else 0
                        imaging.append(readout(k_enc[t, k, :, r, first_col:] * scale, flags=flags, **kw))
    if shuffle:
        imaging = [imaging[i] for i in rng.permutation(len(imaging))]

    xml = _header(
        nx=nx, ny=ny, nye=nye, nxe=nxe, nz=nz, nt=nt, nc=nc, dx=dx, thickness=slice_thickness_mm, ky_limits=ky_limits,
        vendor=vendor, series=series, protocol_name=protocol_name or series, patient_id=patient_id,
        patient_position=patient_position, acceleration=acceleration, separate_acs=separate_acs,
        frame_counter=frame_counter, split=split,
    )  # fmt: skip

    if noise_group:
        groups = [("dataset_1", table(noise, False)), ("dataset_2", table(before + imaging, reverse_every_other))]
    else:
        # Reversal alternates over the imaging readouts only: give the noise readouts their own table first.
        rec = np.concatenate([table(noise, False), table(before + imaging, reverse_every_other)])
        groups = [("dataset", rec)]

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w"):
            pass
        for name, *_ in groups:
            with ismrmrd.Dataset(str(tmp), name, create_if_needed=True) as d:
                d.write_xml_header(xml.encode("utf-8"))
        with h5py.File(tmp, "a") as f:
            for name, rec in groups:
                f[name].create_dataset("data", data=rec, maxshape=(None,), chunks=True)

    atomic_write(path, write)
    others = {}
    if split:
        short = {"set": "set", "repetition": "rep", "contrast": "contrast", "phase": "phase"}[split[0]]
        others = {f"{short}{s}": truth_k / np.float32(1 + s) for s in range(1, copies)}
    return PhantomTruth(
        kspace=truth_k,
        full_kspace=full_k,
        mask=mask,
        padded=padded,
        acs_width=0 if separate_acs or acceleration == 1 else int(band.sum()),
        noise_covariance=cov,
        geometry=geometry,
        marker_lps=geometry.voxel_lps(mi, mj_out, mk),
        marker_voxel=(mi, mj_out, mk),
        images=obj.astype(np.complex64),
        series=others,
    )


#: The files of :func:`make_ismrmrd_demo`: patient folder, file name, writer options.
DEMO_FILES = (
    ("P001", "cine_sax_fully_sampled.h5", {"nc": 6, "nz": 3, "nt": 12, "noise_readouts": 64}),
    ("P001", "cine_sax_R4.h5", {"nc": 6, "nz": 3, "nt": 12, "acceleration": 4, "acs": 8, "noise_readouts": 64}),
    ("P002", "cine_lax_oblique.h5", {"series": "cine_lax", "nc": 4, "nz": 2, "nt": 10, "oblique": True}),
    ("P002", "cine_sax_asymmetric_echo.h5", {"nc": 4, "nz": 2, "nt": 10, "asymmetric_echo": 0.8, "shuffle": True}),
    ("P003", "T1map.h5", {"series": "T1map", "nc": 8, "nz": 2, "nt": 9, "noise_readouts": 64}),
)
DEMO_MARKER = "DEMO_DATASET.txt"


def make_ismrmrd_demo(root: str | os.PathLike, *, seed: int = 0, overwrite: bool = False) -> list[Path]:
    """Write the small demo folder of ISMRMRD files, ``<root>/<patient>/<series>.h5`` (see :data:`DEMO_FILES`).

    Recon matrix 64 x 48 (readout 2x oversampled), 4-8 coils, 2-3 slices, 9-12 frames; about 33 MB in all.
    Each file gets its own seed (``seed`` + its position). Existing files are an error unless ``overwrite``.
    Returns the paths written.
    """
    root = Path(root)
    targets = [root / patient / name for patient, name, _ in DEMO_FILES]
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass overwrite=True (--overwrite) to replace the demo files")
    for n, ((patient, name, options), target) in enumerate(zip(DEMO_FILES, targets, strict=True)):
        protocol = f"{Path(name).stem}"
        write_ismrmrd_phantom(target, seed=seed + n, patient_id=patient, protocol_name=protocol, **options)
    (root / DEMO_MARKER).write_text(
        "SYNTHETIC DATA. Numerical phantom written as ISMRMRD (MRD v1 HDF5) raw data by\n"
        "bundle.data.demo_ismrmrd.make_ismrmrd_demo, for demos and tests only.\nlayout: ismrmrd\n"
    )
    return targets
