"""Reading scanner raw data in ISMRMRD (MRD v1 HDF5) into the bundle's k-space, mask and geometry.

One file holds one or more measurements (HDF5 groups ``dataset`` or ``dataset_1``, ``dataset_2``, ...); each group
has an XML header (``xml``) and one compound record per readout (``data``: ``head``, ``traj``, ``data``).
:func:`scan_raw_file` reads the headers only (one vectorised read of every readout header, the XML through
``ismrmrd.xsd``) and describes each series the group holds as a :class:`RawSeries`. :class:`RawSliceReader` reads
one slice and some of its frames, touching only the readouts of those frames.

Conventions (``docs/design.md``, "Scanner raw data (ISMRMRD)"):

* Arrays are in h5py order like the ``.mat`` readers: k-space ``(nt, nz, nc, ny, nx)``, masks ``(nt, ny, nx)``;
  x is the readout after oversampling removal, y the phase-encode line (``kspace_encode_step_1``).
* The image of a slab is ``bundle.mri.ifft2c_np(slab)``; voxel ``(x=i, y=j)`` of slice ``z`` sits at
  ``position + (i - nx//2)·dx·read_dir + (j - ny//2)·dy·phase_dir`` (``bundle/geometry.py``).
* Siemens raw data follows the FFT-to-image convention: its k-space is conjugated on read (MRpro PR 833), so
  ``ifft2c`` gives the scanner's orientation. Other vendors are read as written.
* Noise prewhitening (on by default) gives unit noise variance per sample and coil: k-space is in noise units.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import math
import operator
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import h5py
import numpy as np
from ismrmrd.xsd import ismrmrdHeader
from xsdata.exceptions import ParserError
from xsdata.formats.dataclass.context import XmlContext
from xsdata.formats.dataclass.parsers import XmlParser
from xsdata.formats.dataclass.parsers.config import ParserConfig

from ..errors import RawDataError
from ..geometry import ScanGeometry, SliceGeometry
from ..mri import measure_acs_width
from .h5vlen import VlenMap
from .layout import series_type as layout_series_type

__all__ = [
    "RAW_SUFFIXES",
    "FLAGS",
    "is_ismrmrd_file",
    "dataset_groups",
    "RawSeries",
    "scan_raw_file",
    "series_name",
    "RawSliceReader",
]

logger = logging.getLogger(__name__)

RAW_SUFFIXES = (".h5", ".mrd")

#: ISMRMRD acquisition flags used here, 1-based bit numbers (``ismrmrd.h``): flag n is ``1 << (n - 1)``.
FLAGS = {
    "ACQ_LAST_IN_SLICE": 8,
    "ACQ_IS_NOISE_MEASUREMENT": 19,
    "ACQ_IS_PARALLEL_CALIBRATION": 20,
    "ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING": 21,
    "ACQ_IS_REVERSE": 22,
    "ACQ_IS_NAVIGATION_DATA": 23,
    "ACQ_IS_PHASECORR_DATA": 24,
    "ACQ_IS_HPFEEDBACK_DATA": 26,
    "ACQ_IS_DUMMYSCAN_DATA": 27,
    "ACQ_IS_RTFEEDBACK_DATA": 28,
    "ACQ_IS_PHASE_STABILIZATION_REFERENCE": 30,
    "ACQ_IS_PHASE_STABILIZATION": 31,
}


def _bit(name: str) -> np.uint64:
    return np.uint64(1 << (FLAGS[name] - 1))


_NOISE = _bit("ACQ_IS_NOISE_MEASUREMENT")
_CALIB = _bit("ACQ_IS_PARALLEL_CALIBRATION")
_CALIB_AND_IMAGING = _bit("ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING")
_REVERSE = _bit("ACQ_IS_REVERSE")
# Readouts that are neither image data nor noise nor calibration: dropped, as MRpro does (acq_filters.py).
_DROPPED = functools.reduce(
    operator.or_,
    (
        _bit(n)
        for n in (
            "ACQ_IS_NAVIGATION_DATA",
            "ACQ_IS_PHASECORR_DATA",
            "ACQ_IS_HPFEEDBACK_DATA",
            "ACQ_IS_DUMMYSCAN_DATA",
            "ACQ_IS_RTFEEDBACK_DATA",
            "ACQ_IS_PHASE_STABILIZATION_REFERENCE",
            "ACQ_IS_PHASE_STABILIZATION",
        )
    ),
)

_GROUP = re.compile(r"^dataset(?:_(\d+))?$")
_NS = "{http://www.ismrm.org/ISMRMRD}"
_SIEMENS_TICK_MS = 2.5  # physiology time stamps of Siemens scanners count 2.5 ms ticks (Gadgetron's DICOM writer)
# Counters that may split a group into several series, in the order their names are built.
_SPLIT_DIMS = ("contrast", "set", "repetition", "phase")
_DIM_SHORT = {"contrast": "contrast", "set": "set", "repetition": "rep", "phase": "phase"}
_MAPPING_AXES = ("contrast", "set", "repetition")
_LOGGED: set[tuple[str, str]] = set()
# One parser per strictness, sharing one binding context: building the context costs ~40 ms per header otherwise
# (ismrmrd.xsd.CreateFromDocument makes a new one per call). Strict is CreateFromDocument's own setting.
_CONTEXT = XmlContext()
_STRICT = XmlParser(config=ParserConfig(fail_on_unknown_properties=True), context=_CONTEXT)
_LENIENT = XmlParser(config=ParserConfig(fail_on_unknown_properties=False), context=_CONTEXT)


def _log_once(level: int, path: str, message: str, *args) -> None:
    """Log ``path: message`` once per process: a file is scanned by the index and again by each reader."""
    text = message % args if args else message
    if (path, text) not in _LOGGED:
        _LOGGED.add((path, text))
        logger.log(level, "%s: %s", path, text)


# --------------------------------------------------------------------------------------------------- files


def _open(path: str) -> h5py.File:
    if not os.path.exists(path):
        raise RawDataError.at(path, "no such file")
    if not os.path.isfile(path):
        raise RawDataError.at(path, "not a regular file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise RawDataError.at(path, f"not a readable HDF5 file: truncated or corrupt ({err})") from err


def _group_names(f: h5py.File) -> list[str]:
    found = []
    for name in f:
        m = _GROUP.match(name)
        if m and f.get(name, getclass=True) is h5py.Group:
            found.append((0 if m.group(1) is None else 1, int(m.group(1) or 0), name))
    return [name for *_, name in sorted(found)]


def _is_raw_group(g: h5py.Group) -> bool:
    return isinstance(g.get("xml"), h5py.Dataset) and isinstance(g.get("data"), h5py.Dataset)


def is_ismrmrd_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is an HDF5 file with a group ``dataset`` or ``dataset_<n>`` holding ``xml`` and ``data``.

    Cheap (opens the file and lists its top level); never raises for unreadable files, which are simply not
    ISMRMRD files (:func:`scan_raw_file` names their problem).
    """
    path = os.fspath(path)
    try:
        with h5py.File(path, "r") as f:
            return any(_is_raw_group(f[name]) for name in _group_names(f))
    except (OSError, KeyError):
        return False


def dataset_groups(path: str | os.PathLike) -> list[str]:
    """ISMRMRD groups of the file: ``['dataset']`` or ``['dataset_1', 'dataset_2', ...]`` in numeric order.

    Only groups that hold both ``xml`` and ``data`` are listed. Raises :class:`RawDataError` for a file that is
    missing or not readable HDF5.
    """
    path = os.fspath(path)
    with _open(path) as f:
        return [name for name in _group_names(f) if _is_raw_group(f[name])]


# --------------------------------------------------------------------------------------------------- XML


def _xml_text(path: str, g: h5py.Group) -> str:
    try:
        raw = g["xml"][0]
    except (OSError, IndexError, ValueError) as err:
        raise RawDataError.at(path, f"cannot read the XML header of {g.name!r} ({err})") from err
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _missing_field(err: Exception) -> str | None:
    m = re.search(r"(\w+)\.__init__\(\) missing \d+ required (?:keyword-only |positional )?arguments?: (.+)$", str(err))
    if not m:
        return None
    return f"{m.group(1).removesuffix('Type')}: {m.group(2)}"


def _insert_element(xml: str, parent: str, child: str, text: str) -> str:
    """``xml`` with ``<child>text</child>`` appended to every ``parent`` element that lacks one."""
    ET.register_namespace("", _NS[1:-1])
    root = ET.fromstring(xml)
    for node in root.iter(f"{_NS}{parent}"):
        if node.find(f"{_NS}{child}") is None:
            ET.SubElement(node, f"{_NS}{child}").text = text
    return ET.tostring(root, encoding="unicode")


def _parse_header(path: str, xml: str, heads: np.ndarray) -> tuple[object, list[str]]:
    """The parsed header and the repairs made (each logged at WARNING).

    Safe repairs only: elements the schema does not know are ignored (we read none of them); a missing
    ``trajectory`` becomes ``cartesian`` when no readout carries a trajectory; a missing ``patientPosition``
    gets a placeholder so that the parser accepts the file, and is reported as unknown (``None``).
    """
    repairs: list[str] = []
    for _ in range(4):
        try:
            lenient = any(r.startswith("unknown") for r in repairs)
            hdr = (_LENIENT if lenient else _STRICT).from_string(xml, ismrmrdHeader)
            break
        except ParserError as err:
            msg = str(err)
            if "Unknown property" in msg and not any(r.startswith("unknown") for r in repairs):
                repairs.append(f"unknown elements ignored ({msg.split('Unknown property')[-1].strip()})")
                continue
            raise RawDataError.at(path, f"the XML header cannot be parsed: {msg}") from err
        except TypeError as err:
            missing = _missing_field(err)
            if missing is None:
                raise RawDataError.at(path, f"the XML header cannot be parsed: {err}") from err
            if "'trajectory'" in missing and "trajectory" not in " ".join(repairs):
                if heads.size and np.any(heads["trajectory_dimensions"] > 0):
                    raise RawDataError.at(
                        path,
                        "the XML header has no encoding trajectory and the readouts carry trajectories: "
                        "cannot tell whether the data is Cartesian",
                    ) from err
                xml = _insert_element(xml, "encoding", "trajectory", "cartesian")
                repairs.append("missing encoding trajectory set to 'cartesian' (no readout carries a trajectory)")
                continue
            if "'patientPosition'" in missing and "patientPosition" not in " ".join(repairs):
                xml = _insert_element(xml, "measurementInformation", "patientPosition", "HFS")
                repairs.append("missing patientPosition recorded as unknown")
                continue
            raise RawDataError.at(path, f"the XML header lacks a required element ({missing})") from err
        except ET.ParseError as err:
            raise RawDataError.at(path, f"the XML header is not well-formed XML ({err})") from err
    else:  # pragma: no cover - every branch above either breaks, continues once per repair, or raises
        raise RawDataError.at(path, "the XML header cannot be repaired")
    for r in repairs:
        _log_once(logging.WARNING, path, "XML header repaired: %s", r)
    return hdr, repairs


def _text(value) -> str | None:
    if value is None:
        return None
    value = getattr(value, "value", value)
    return str(value).strip() or None


def _first(values) -> float | None:
    values = list(values or [])
    return float(values[0]) if values else None


# --------------------------------------------------------------------------------------------------- names

# Keyword rules from the words of protocolName / seriesDescription / the file name to a series of the index.
_NAME_RULES = (
    (re.compile(r"t1\W*rho"), "T1rho"),
    (re.compile(r"t2\W*s(tar)?\W*map|t2\*"), "T2smap"),
    (re.compile(r"t1\W*map|molli|shmolli|sasha"), "T1map"),
    (re.compile(r"t2\W*map|t2\W*prep"), "T2map"),
    (re.compile(r"\blge\b|psir|late\W*gad"), "lge"),
    (re.compile(r"perf"), "perfusion"),
    (re.compile(r"tagg|spamm|\btag\b"), "tagging"),
    (re.compile(r"flow|\bpc\b|phase\W*contrast|venc"), "flow2d"),
    (re.compile(r"black\W*blood|\bbb\b"), "blackblood"),
    (re.compile(r"cine|trufi|b?ssfp|\btfi\b|fiesta|bffe|realtime|real\W*time"), "cine"),
)
_VIEW_RULES = (
    (re.compile(r"2\W*ch"), "lax_2ch"),
    (re.compile(r"3\W*ch"), "lax_3ch"),
    (re.compile(r"4\W*ch"), "lax_4ch"),
    (re.compile(r"lvot"), "lvot"),
    (re.compile(r"rvot"), "rvot"),
    (re.compile(r"\blax\b|long\W*axis|_lax"), "lax"),
    (re.compile(r"\bsax\b|short\W*axis|_sax|\bsa\b"), "sax"),
)
_KINDS = ("cine", "mapping", "blackblood")


def series_name(*texts: str | None) -> str | None:
    """The index series (``'cine_sax'``, ``'T1map'``, ...) that the words of ``texts`` name, or None.

    ``texts`` are tried in order (protocol name, series description, file name); the first that names a
    series wins. Cine and LGE get their view (``sax``, ``lax_4ch`` ...; ``sax`` when none is named).
    """
    for text in texts:
        if not text:
            continue
        low = re.sub(r"[\s\-.]+", "_", text.lower())
        spaced = " " + re.sub(r"[_\-.]+", " ", text.lower()) + " "
        for pattern, name in _NAME_RULES:
            if pattern.search(low) or pattern.search(spaced):
                if name in ("cine", "lge"):
                    view = next((v for p, v in _VIEW_RULES if p.search(low) or p.search(spaced)), "sax")
                    if name == "lge" and view in ("lvot", "rvot"):
                        view = "lax"
                    return f"{name}_{view}"
                return name
    return None


def _name_and_type(path: str, protocol: str | None, description: str | None, forced: str | None) -> tuple[str, str]:
    stem = os.path.splitext(os.path.basename(path))[0]
    found = series_name(protocol, description, stem)
    if forced is not None:
        if forced in _KINDS:
            return (found if found and layout_series_type(found) == forced else forced), forced
        return forced, layout_series_type(forced)
    if found is None:
        fallback = re.sub(r"\W+", "_", protocol or description or stem).strip("_") or "series"
        _log_once(
            logging.INFO,
            path,
            "protocolName %r / seriesDescription %r name no known series; indexed as %r (%s); set "
            "series_type to state the type",
            protocol,
            description,
            fallback,
            layout_series_type(fallback),
        )
        return fallback, layout_series_type(fallback)
    return found, layout_series_type(found)


# --------------------------------------------------------------------------------------------------- series


@dataclasses.dataclass(frozen=True)
class RawSeries:
    """What one series of an ISMRMRD file holds, from the headers only (no samples read).

    Attributes:
        path, group: the file and its HDF5 group (``'dataset'``, ``'dataset_2'``).
        entry: None when the group holds one series; else a short name unique in the group (``'set1'``,
            ``'rep2'``, ``'contrast1_set0'``) for the values of the counters that split it.
        name: series name for the index (``'cine_sax'``, ``'T1map'``, ...), see :func:`series_name`.
        series_type: ``'cine'``, ``'mapping'`` or ``'blackblood'`` (``bundle.data.layout.series_type``).
        shape: ``(nt, nz, nc, ny, nx)`` of the recon matrix (after oversampling removal).
        encoded: ``(ny, nx)`` of the encoded matrix.
        mask: ``(nt, ny, nx)`` float32 0/1, the lines acquired in every slice of each frame.
        acs_width: contiguous fully sampled centre lines (``measure_acs_width``).
        acceleration: ``round(lines / mean lines per frame)``, lines counted without the rows padded by design.
        fully_sampled: every line not padded by design is acquired in every frame.
        padded: ``(ny, nx)`` bool, k-space zero by design (partial-Fourier lines, asymmetric-echo samples).
        geometry: the patient geometry of the recon matrix; None when the readouts carry none (all direction
            vectors zero).
        info: scanner and protocol facts (vendor, field_strength_T, TR_ms, ...; see ``docs/design.md``).
        nt_dim: the counter that is the frame axis: ``'phase'``, ``'contrast'``, ``'set'``, ``'repetition'``
            or ``'none'``.
    """

    path: str
    group: str
    entry: str | None
    name: str
    series_type: str
    shape: tuple[int, int, int, int, int]
    encoded: tuple[int, int]
    mask: np.ndarray
    acs_width: int
    acceleration: int
    fully_sampled: bool
    padded: np.ndarray
    geometry: ScanGeometry | None
    info: dict
    nt_dim: str

    @property
    def key(self) -> str:
        return f"{self.group}/{self.entry or 'data'}"


@dataclasses.dataclass
class _Axis:
    """How one image axis goes from the encoded to the recon matrix."""

    n_enc: int
    n_out: int
    crop: int  # image-domain crop of the encoded axis (oversampling removal); == n_enc for none
    offset: int  # k-space offset of the cropped axis into n_out (zero padding > 0, truncation < 0)

    @property
    def resamples(self) -> bool:
        return self.crop != self.n_enc


@dataclasses.dataclass
class _Plan:
    """Everything a reader needs, computed once from the headers of one series."""

    path: str
    group: str
    nc: int
    x: _Axis
    y: _Axis
    conjugate: bool
    # per data readout of the series, sorted by (z, t, file index)
    index: np.ndarray  # file record index
    z: np.ndarray
    t: np.ndarray
    row: np.ndarray  # encoded-matrix row (0 .. ny_enc - 1)
    starts: np.ndarray  # (nz, nt + 1) offsets into the arrays above
    signature: np.ndarray  # per readout: id into ``signatures``
    signatures: list[tuple[int, int, int, int, bool]]  # (samples, discard_pre, discard_post, column0, reverse)
    calib_index: np.ndarray
    calib_z: np.ndarray
    calib_row: np.ndarray
    calib_signature: np.ndarray
    noise_group: str | None
    noise_index: np.ndarray
    noise_dwell_us: float
    data_dwell_us: float


def _read_heads(path: str, g: h5py.Group) -> np.ndarray:
    try:
        ds = g["data"]
        if ds.dtype.names is None or "head" not in ds.dtype.names or "data" not in ds.dtype.names:
            raise RawDataError.at(path, f"{g.name}/data is not an ISMRMRD acquisition table (dtype {ds.dtype})")
        return ds.fields("head")[:]
    except OSError as err:
        raise RawDataError.at(
            path, f"cannot read the readout headers of {g.name!r}: truncated or corrupt ({err})"
        ) from err


def _has(flags: np.ndarray, bit: np.uint64) -> np.ndarray:
    return (flags & bit) != 0


def _axis(path: str, what: str, n_enc: int, fov_enc: float, n_rec: int, fov_rec: float, keep: bool) -> _Axis:
    """Oversampling removal along one axis: crop the image to the recon FOV, then pad or cut k-space to n_rec.

    ``keep`` keeps the encoded FOV (no image-domain crop): phase oversampling of undersampled data, where a crop
    would mix acquired and missing lines.
    """
    if n_enc < 1 or n_rec < 1 or fov_enc <= 0 or fov_rec <= 0:
        raise RawDataError.at(
            path,
            f"the XML header gives an impossible {what} matrix/FOV: encoded {n_enc} over "
            f"{fov_enc} mm, recon {n_rec} over {fov_rec} mm",
        )
    ratio = fov_enc / fov_rec
    if keep or abs(ratio - 1) < 0.01:
        crop, out = n_enc, (n_enc if keep else n_rec)
    elif ratio < 1:
        raise RawDataError.at(
            path,
            f"the recon field of view along {what} ({fov_rec} mm) is larger than the encoded "
            f"one ({fov_enc} mm): not supported",
        )
    else:
        crop, out = int(round(n_enc / ratio)), n_rec
    return _Axis(n_enc=n_enc, n_out=out, crop=crop, offset=out // 2 - crop // 2)


def _frame_axis(kind: str, varying: dict[str, int]) -> str:
    if kind == "cine":
        order = ("phase", "repetition", "set", "contrast")
    elif kind == "mapping":
        order = (*_MAPPING_AXES, "phase")
    else:
        order = ()
    return next((d for d in order if varying.get(d, 1) > 1), "none")


def _partial_fourier_centre(path: str, vendor: str | None, heads: np.ndarray, centre: int, lo: int, hi: int) -> int:
    """The k-space centre line: the header's, or on Siemens files the line in ``idx.user[5]`` when that disagrees.

    siemens_to_ismrmrd writes ``floor(lines/2)`` as the centre, wrong under partial Fourier; the sequence puts the
    true centre line in ``user[5]`` of every readout (siemens_to_ismrmrd issue 142). It is used only when every
    imaging readout carries the same non-zero value inside the acquired lines.
    """
    if not vendor or "siemens" not in vendor.lower() or heads.size == 0:
        return centre
    user5 = heads["idx"]["user"][:, 5]
    value = int(user5[0])
    if value > 0 and (user5 == value).all() and value != centre and lo <= value <= hi:
        _log_once(logging.INFO, path, "k-space centre line %d from idx.user[5] (the header says %d)", value, centre)
        return value
    return centre


def _partial_fourier_rows(acquired: np.ndarray) -> np.ndarray:
    """Rows never encoded by design (partial Fourier): those beyond the acquired extent on the short side.

    ``acquired`` is ``(ny_enc,)`` bool, the rows acquired in any frame. Partial Fourier leaves one side of the
    centre row ``ny_enc // 2`` shorter than the other by more than the largest gap between acquired rows (so an
    undersampling pattern that ends a line or two before the edge is not mistaken for it).
    """
    n = acquired.size
    have = np.flatnonzero(acquired)
    padded = np.zeros(n, bool)
    if have.size < 2:
        return padded
    gap = int(np.diff(have).max())
    c = n // 2
    below, above = c - int(have[0]), int(have[-1]) - c
    if above - below > gap:
        padded[: have[0]] = True
    elif below - above > gap:
        padded[have[-1] + 1 :] = True
    return padded


def _to_grid(v_enc: np.ndarray, a: _Axis, outside: bool) -> np.ndarray:
    """A per-encoded-index boolean on the output grid of axis ``a`` (nearest index; exact without a crop)."""
    n = np.arange(a.n_out)
    src = np.round((n - a.offset - a.crop // 2) * (a.n_enc / a.crop) + a.n_enc // 2).astype(np.int64)
    ok = (src >= 0) & (src < a.n_enc)
    res = np.full(a.n_out, outside, bool)
    res[ok] = v_enc[src[ok]]
    return res


def _scan_group(path: str, f: h5py.File, group: str, forced_type: str | None) -> list[tuple[RawSeries, _Plan]]:
    """The series of one group with the reading plan of each."""
    g = f[group]
    heads = _read_heads(path, g)
    hdr, repairs = _parse_header(path, _xml_text(path, g), heads)
    if not hdr.encoding:
        raise RawDataError.at(path, "the XML header has no encoding")
    enc = hdr.encoding[0]
    trajectory = _text(enc.trajectory) or "cartesian"
    if trajectory.lower() != "cartesian":
        raise RawDataError.at(path, f"{trajectory} trajectory: not supported (only Cartesian k-space is read)")
    es, rs = enc.encodedSpace, enc.reconSpace
    if int(es.matrixSize.z or 1) > 1:
        raise RawDataError.at(
            path, f"3-D encoding (encoded matrix z = {es.matrixSize.z}): not supported, only 2-D multi-slice data"
        )

    flags = heads["flags"]
    other_space = heads["encoding_space_ref"] != 0
    if other_space.any():
        _log_once(
            logging.WARNING, path, "%d readouts of encoding spaces other than 0 are ignored", int(other_space.sum())
        )
    noise = _has(flags, _NOISE)
    dropped = (_has(flags, _DROPPED) | other_space) & ~noise
    calib = _has(flags, _CALIB) & ~_has(flags, _CALIB_AND_IMAGING) & ~noise & ~dropped
    data = ~noise & ~dropped & ~calib
    if not data.any():
        raise RawDataError.at(
            path,
            f"group {group!r} holds no imaging readouts ({int(noise.sum())} noise, {int(calib.sum())} calibration, "
            f"{int(dropped.sum())} other)",
        )
    used = data | calib
    channels = heads["active_channels"][used | noise]
    coils = np.unique(channels)
    if coils.size != 1:
        counts = {int(c): int((channels == c).sum()) for c in coils}
        raise RawDataError.at(path, f"readouts with differing coil counts ({{coils: readouts}} = {counts})")
    nc = int(coils[0])
    if nc < 1:
        raise RawDataError.at(path, "the readouts have no active channels")
    idx = heads["idx"]
    if np.unique(idx["kspace_encode_step_2"][data]).size > 1:
        raise RawDataError.at(path, "3-D encoding (kspace_encode_step_2 varies): not supported, only 2-D multi-slice")

    asi, mi, sp = hdr.acquisitionSystemInformation, hdr.measurementInformation, hdr.sequenceParameters
    vendor = _text(asi.systemVendor) if asi else None
    conjugate = bool(vendor and "siemens" in vendor.lower())
    protocol = _text(mi.protocolName) if mi else None
    description = _text(mi.seriesDescription) if mi else None
    patient_position = None
    if mi is not None and not any("patientPosition" in r for r in repairs):
        patient_position = _text(mi.patientPosition)

    # ----- readout: samples -> encoded columns
    ns = heads["number_of_samples"].astype(np.int64)
    pre = heads["discard_pre"].astype(np.int64)
    post = heads["discard_post"].astype(np.int64)
    centre_sample = heads["center_sample"].astype(np.int64)
    kept = ns - pre - post
    nx_enc = int(es.matrixSize.x)
    col0 = nx_enc // 2 - (centre_sample - pre)
    bad = used & ((kept < 1) | (col0 < 0) | (col0 + kept > nx_enc))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RawDataError.at(
            path,
            f"readout {i}: {int(ns[i])} samples (discard {int(pre[i])}/{int(post[i])}, centre sample "
            f"{int(centre_sample[i])}) do not fit the encoded readout of {nx_enc} samples",
        )
    padded_cols = np.ones(nx_enc, bool)
    for c0, k in set(zip(col0[data].tolist(), kept[data].tolist(), strict=True)):
        padded_cols[c0 : c0 + k] = False

    # ----- phase encoding: lines -> encoded rows
    ny_enc = int(es.matrixSize.y)
    ky = idx["kspace_encode_step_1"].astype(np.int64)
    limits = enc.encodingLimits.kspace_encoding_step_1 if enc.encodingLimits else None
    if limits is not None and limits.center is not None:
        centre = int(limits.center)
    else:
        centre = ny_enc // 2
        _log_once(
            logging.WARNING, path, "no kspace_encoding_step_1 limits in the header; centre line taken as %d", centre
        )
    centre = _partial_fourier_centre(path, vendor, heads[data], centre, int(ky[data].min()), int(ky[data].max()))
    row = ky - centre + ny_enc // 2
    outside = used & ((row < 0) | (row >= ny_enc))
    if outside.any():
        raise RawDataError.at(
            path,
            f"lines outside the encoded matrix: ky {np.unique(ky[outside])[:8].tolist()} with centre line {centre} "
            f"and {ny_enc} encoded lines",
        )

    # ----- dimensions: frame axis, and the counters that split the group into series
    name, kind = _name_and_type(path, protocol, description, forced_type)
    varying = {d: int(np.unique(idx[d][data]).size) for d in _SPLIT_DIMS}
    nt_dim = _frame_axis(kind, varying)
    split = [d for d in _SPLIT_DIMS if d != nt_dim and varying[d] > 1]
    data_ids = np.flatnonzero(data)
    keys = np.stack([idx[d][data_ids] for d in split], axis=1) if split else np.zeros((data_ids.size, 0), np.int64)
    combos = np.unique(keys, axis=0) if split else np.zeros((1, 0), np.int64)

    noise_ids = np.flatnonzero(noise)
    noise_group = group if noise_ids.size else None
    if noise_ids.size == 0:
        noise_group, noise_ids = _noise_elsewhere(path, f, group, nc)
    if noise_ids.size:
        noise_heads = heads if noise_group == group else _read_heads(path, f[noise_group])
        noise_dwell = float(np.median(noise_heads["sample_time_us"][noise_ids]))
    sig_keys = np.stack([ns, pre, post, col0, _has(flags, _REVERSE).astype(np.int64)], axis=1)
    uniq_sig, sig_id = np.unique(sig_keys[used], axis=0, return_inverse=True)
    signature = np.zeros(heads.size, np.int64)
    signature[used] = sig_id.reshape(-1)
    signatures = [(int(u[0]), int(u[1]), int(u[2]), int(u[3]), bool(u[4])) for u in uniq_sig]
    subject = hdr.subjectInformation

    def one_series(entry: str | None, ids: np.ndarray) -> tuple[RawSeries, _Plan]:
        # ----- slices, ordered by position along slice_dir (Siemens slice counters can be chronological)
        slice_counter = idx["slice"][ids]
        counters = np.unique(slice_counter)
        first = heads[[ids[slice_counter == c][0] for c in counters]]
        dirs = np.concatenate([first["read_dir"], first["phase_dir"], first["slice_dir"]], axis=1)
        geo: list[SliceGeometry] | None = None
        if not dirs.any():  # written without geometry (all directions zero): no patient positions to state
            _log_once(logging.INFO, path, "the readouts carry no geometry (zero directions); slices in counter order")
        else:
            geo = []
            for c, h in zip(counters, first, strict=True):
                try:
                    geo.append(SliceGeometry(h["position"], h["read_dir"], h["phase_dir"], h["slice_dir"]))
                except ValueError as err:
                    raise RawDataError.at(path, f"slice counter {int(c)}: impossible readout geometry ({err})") from err
        location = (lambda k: geo[k].location) if geo else (lambda k: 0.0)
        order = sorted(range(len(counters)), key=lambda k: (location(k), int(counters[k])))
        z_of_counter = np.empty(len(counters), np.int64)
        z_of_counter[order] = np.arange(len(counters))
        z = z_of_counter[np.searchsorted(counters, slice_counter)]
        nz = len(counters)
        if nt_dim == "none":
            t, nt = np.zeros(ids.size, np.int64), 1
        else:
            t, nt = _frames_of(path, idx[nt_dim][ids], z, nz, nt_dim)

        rows = row[ids]
        lines = np.zeros((nz, nt, ny_enc), bool)
        lines[z, t, rows] = True
        centre_hit = lines[:, :, ny_enc // 2]  # (nz, nt)
        if not centre_hit.any(axis=1).all():
            zz = int(np.flatnonzero(~centre_hit.any(axis=1))[0])
            raise RawDataError.at(
                path, f"no line at the k-space centre (ky {centre}) in any frame of slice z={zz}", sample=f"z={zz}"
            )
        pf_rows = _partial_fourier_rows(lines.any(axis=(0, 1)))
        frame_lines = lines.all(axis=0)  # (nt, ny_enc): lines every slice has
        if not (lines == lines[:1]).all():
            _log_once(logging.WARNING, path, "slices sample different lines; the mask keeps the lines every slice has")
        fully_enc = bool((frame_lines | pf_rows).all())
        phase_os = abs(es.fieldOfView_mm.y / rs.fieldOfView_mm.y - 1) >= 0.01
        keep_y = phase_os and not fully_enc
        if keep_y:
            _log_once(
                logging.INFO, path, "undersampled with phase oversampling: the encoded field of view along y is kept"
            )
        x = _axis(path, "x (readout)", nx_enc, es.fieldOfView_mm.x, int(rs.matrixSize.x), rs.fieldOfView_mm.x, False)
        y = _axis(path, "y (phase)", ny_enc, es.fieldOfView_mm.y, int(rs.matrixSize.y), rs.fieldOfView_mm.y, keep_y)
        nx, ny = x.n_out, y.n_out
        padded_rows = _to_grid(pf_rows, y, True)
        if y.resamples:  # fully sampled (a y crop is done only then)
            mask_rows = np.broadcast_to(~padded_rows, (nt, ny))
        else:
            mask_rows = np.stack([_to_grid(fl, y, False) for fl in frame_lines])
        mask = np.ascontiguousarray(np.broadcast_to(mask_rows[:, :, None], (nt, ny, nx)), np.float32)
        padded = padded_rows[:, None] | _to_grid(padded_cols, x, True)[None, :]
        real = ~padded_rows
        mean_lines = float(mask_rows[:, real].sum(axis=1).mean())
        acceleration = max(1, int(round(real.sum() / mean_lines))) if mean_lines > 0 else 1

        fov_y = es.fieldOfView_mm.y if keep_y else rs.fieldOfView_mm.y
        trigger = None
        if conjugate and nt_dim == "phase":
            stamps = heads["physiology_time_stamp"][ids, 0].astype(np.float64)
            trigger = tuple(float(np.median(stamps[t == k])) * _SIEMENS_TICK_MS for k in range(nt))
        geometry = None
        if geo:
            geometry = ScanGeometry(
                matrix=(nx, ny),
                fov_mm=(float(rs.fieldOfView_mm.x), float(fov_y), float(rs.fieldOfView_mm.z or es.fieldOfView_mm.z)),
                slices=tuple(geo[k] for k in order),
                patient_position=patient_position,
                trigger_times_ms=trigger,
            )
        cal = np.flatnonzero(calib)
        cal = cal[np.isin(idx["slice"][cal], counters)]
        cal_z = z_of_counter[np.searchsorted(counters, idx["slice"][cal])]
        by = np.lexsort((ids, t, z))
        zs, ts = z[by], t[by]
        bounds = np.arange(nz)[:, None] * (nt + 1) + np.arange(nt + 1)[None, :]
        plan = _Plan(
            path=path, group=group, nc=nc, x=x, y=y, conjugate=conjugate,
            index=ids[by].astype(np.int64), z=zs, t=ts, row=rows[by].astype(np.int64),
            starts=np.searchsorted(zs * (nt + 1) + ts, bounds).astype(np.int64),
            signature=signature[ids[by]], signatures=signatures,
            calib_index=cal.astype(np.int64), calib_z=cal_z.astype(np.int64), calib_row=row[cal].astype(np.int64),
            calib_signature=signature[cal], noise_group=noise_group, noise_index=noise_ids.astype(np.int64),
            noise_dwell_us=noise_dwell if noise_ids.size else 0.0,
            data_dwell_us=float(np.median(heads["sample_time_us"][ids])),
        )  # fmt: skip
        if cal.size:
            calibration = "separate"
        elif np.any(_has(flags[ids], _CALIB_AND_IMAGING)):
            calibration = "embedded"
        else:
            pi = enc.parallelImaging
            calibration = _text(pi.calibrationMode) if pi is not None else None
        info = {
            "vendor": vendor,
            "model": _text(asi.systemModel) if asi else None,
            "field_strength_T": float(asi.systemFieldStrength_T) if asi and asi.systemFieldStrength_T else None,
            "TR_ms": _first(sp.TR) if sp else None,
            "TE_ms": _first(sp.TE) if sp else None,
            "TI_ms": [float(v) for v in sp.TI] if sp and sp.TI else None,
            "flip_angle_deg": _first(sp.flipAngle_deg) if sp else None,
            "patient_position": patient_position,
            "patient_id": _text(subject.patientID) if subject else None,
            "protocol_name": protocol,
            "series_description": description,
            "trajectory": trajectory.lower(),
            "readout_oversampling": float(es.fieldOfView_mm.x / rs.fieldOfView_mm.x),
            "phase_oversampling": float(es.fieldOfView_mm.y / rs.fieldOfView_mm.y),
            "noise_readouts": int(noise_ids.size),
            "prewhitened": bool(noise_ids.size),
            "calibration": calibration,
            "raw_file": os.path.basename(path),
            "group": group,
            "partial_fourier": float((~pf_rows).sum() / ny_enc) if pf_rows.any() else None,
            "asymmetric_echo": bool(padded_cols.any()),
            "xml_repairs": list(repairs),
        }
        series = RawSeries(
            path=path, group=group, entry=entry, name=name, series_type=kind, shape=(nt, nz, nc, ny, nx),
            encoded=(ny_enc, nx_enc), mask=mask, acs_width=int(measure_acs_width(mask)), acceleration=acceleration,
            fully_sampled=bool(mask_rows[:, real].all()), padded=padded, geometry=geometry, info=info, nt_dim=nt_dim,
        )  # fmt: skip
        return series, plan

    out = []
    for combo in combos:
        sel = np.all(keys == combo, axis=1)
        entry = "_".join(f"{_DIM_SHORT[d]}{int(v)}" for d, v in zip(split, combo, strict=True)) or None
        out.append(one_series(entry, data_ids[sel]))
    return out


def _frames_of(path: str, values: np.ndarray, z_of: np.ndarray, nz: int, nt_dim: str) -> tuple[np.ndarray, int]:
    """Frame index per readout from the frame counter, checking that every slice has every frame."""
    frames = np.unique(values)
    t = np.searchsorted(frames, values)
    for z in range(nz):
        have = np.unique(t[z_of == z])
        if have.size != frames.size:
            missing = np.setdiff1d(frames, frames[have])
            what = "cardiac phases" if nt_dim == "phase" else f"{nt_dim} values"
            raise RawDataError.at(
                path,
                f"incomplete {what}: slice z={z} lacks {nt_dim} {missing[:8].tolist()} that other slices have "
                f"({frames.size} in all)",
                sample=f"z={z}",
            )
    return t, int(frames.size)


def _noise_elsewhere(path: str, f: h5py.File, group: str, nc: int) -> tuple[str | None, np.ndarray]:
    """Noise readouts of another group of the file (siemens_to_ismrmrd ``-Z`` writes the noise scan apart)."""
    for other in _group_names(f):
        if other == group or not _is_raw_group(f[other]):
            continue
        heads = _read_heads(path, f[other])
        noise = np.flatnonzero(_has(heads["flags"], _NOISE) & (heads["active_channels"] == nc))
        if noise.size:
            return other, noise
    return None, np.zeros(0, np.int64)


def _pick_group(path: str, f: h5py.File, group: str | None) -> str:
    groups = [n for n in _group_names(f) if _is_raw_group(f[n])]
    if not groups:
        raise RawDataError.at(path, "not an ISMRMRD file: no group 'dataset' or 'dataset_<n>' with 'xml' and 'data'")
    if group is None:
        return "dataset" if "dataset" in groups else groups[-1]
    if group not in groups:
        raise RawDataError.at(path, f"no ISMRMRD group {group!r} in the file; groups: {groups}")
    return group


def _stat_key(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as err:
        raise RawDataError.at(
            path, "no such file" if isinstance(err, FileNotFoundError) else f"cannot read ({err})"
        ) from err
    return st.st_mtime_ns, st.st_size


# Reading plans by (path, mtime, size, group, series type): the index scans a file and every reader of it needs the
# plan of the same headers; a changed file (mtime, size) is scanned again.
_PLANS: collections.OrderedDict[tuple, dict[str | None, _Plan]] = collections.OrderedDict()
_PLANS_MAX = 64


def _remember(key: tuple, plans: dict[str | None, _Plan]) -> None:
    _PLANS[key] = plans
    _PLANS.move_to_end(key)
    while len(_PLANS) > _PLANS_MAX:
        _PLANS.popitem(last=False)


def _scan(path: str, group: str | None, series_type: str | None) -> list[tuple[RawSeries, _Plan]]:
    stamp = _stat_key(path)
    with _open(path) as f:
        try:
            chosen = _pick_group(path, f, group)
            found = _scan_group(path, f, chosen, series_type)
        except OSError as err:
            raise RawDataError.at(path, f"truncated or corrupt HDF5 file ({err})") from err
    if found:
        _remember((path, *stamp, chosen, found[0][0].series_type), {s.entry: plan for s, plan in found})
    return found


def _plans(path: str, group: str, series_type: str) -> dict[str | None, _Plan]:
    key = (path, *_stat_key(path), group, series_type)
    if key not in _PLANS:
        _scan(path, group, series_type)
    return _PLANS[key]


def scan_raw_file(
    path: str | os.PathLike, *, group: str | None = None, series_type: str | None = None
) -> list[RawSeries]:
    """The series of one ISMRMRD file, from its headers only.

    Args:
        path: an ISMRMRD (MRD v1 HDF5) file.
        group: the HDF5 group; None takes ``dataset``, else the last ``dataset_<n>`` (the imaging scan of
            ``siemens_to_ismrmrd -Z -M``).
        series_type: state the type when the names say nothing: ``'cine'``, ``'mapping'``, ``'blackblood'``, or
            a series name of the index (``'T1map'``).

    Raises:
        RawDataError: naming the file and the problem (not ISMRMRD, corrupt, non-Cartesian, 3-D, ...).
    """
    return [s for s, _ in _scan(os.fspath(path), group, series_type)]


# --------------------------------------------------------------------------------------------------- reading


def _fft1c(x: np.ndarray, axis: int, inverse: bool) -> np.ndarray:
    fn = np.fft.ifft if inverse else np.fft.fft
    return np.fft.fftshift(fn(np.fft.ifftshift(x, axes=axis), axis=axis, norm="ortho"), axes=axis)


def _sign(n: int) -> np.ndarray:
    return np.where(np.arange(n) % 2 == 0, 1.0, -1.0).astype(np.float32)


def _remove_readout_os(rows: np.ndarray, a: _Axis) -> np.ndarray:
    """:func:`_resample` along the last axis, for even sizes without the four FFT shifts.

    For even ``N`` the centred transform is ``(-1)^(N/2) s ⊙ fft(s ⊙ x)`` with ``s = (-1)^n``, so the shifts
    become sign flips; between the inverse and the forward transform they reduce to one constant.
    """
    n_enc, crop = a.n_enc, a.crop
    if n_enc % 2 or crop % 2 or not a.resamples:
        return _resample(rows, -1, a)
    lo = n_enc // 2 - crop // 2
    rows = rows * _sign(n_enc)
    img = np.fft.ifft(rows, axis=-1, norm="ortho")[..., lo : lo + crop]
    out = np.fft.fft(img, axis=-1, norm="ortho")
    out *= _sign(crop) * np.float32((-1) ** ((n_enc // 2 + lo + crop // 2) % 2))
    return _resample(out.astype(np.complex64, copy=False), -1, dataclasses.replace(a, n_enc=crop, crop=crop))


def _resample(k: np.ndarray, axis: int, a: _Axis) -> np.ndarray:
    """Encoded k-space along ``axis`` to the recon grid: image-domain crop, then k-space pad or cut."""
    if a.resamples:
        img = _fft1c(k, axis, inverse=True)
        lo = a.n_enc // 2 - a.crop // 2
        k = _fft1c(np.take(img, np.arange(lo, lo + a.crop), axis=axis), axis, inverse=False)
    n = k.shape[axis]
    if n == a.n_out:
        return k.astype(np.complex64, copy=False)
    shape = list(k.shape)
    shape[axis] = a.n_out
    out = np.zeros(shape, np.complex64)
    src_lo, dst_lo = max(0, -a.offset), max(0, a.offset)
    m = min(n - src_lo, a.n_out - dst_lo)
    dst = [slice(None)] * k.ndim
    src = [slice(None)] * k.ndim
    dst[axis], src[axis] = slice(dst_lo, dst_lo + m), slice(src_lo, src_lo + m)
    out[tuple(dst)] = k[tuple(src)]
    return out


class RawSliceReader:
    """Per-slice reader of one :class:`RawSeries`, compatible with :class:`bundle.data.matio.MatSliceReader`.

    Returns slabs in file order ``(nc, ny, nx)`` complex64 on the recon matrix, processed: ``discard_pre/post``
    applied, an asymmetric echo zero-filled around the centre sample, reversed readouts flipped, prewhitened
    (unless ``prewhiten=False``), Siemens k-space conjugated, readout oversampling removed (inverse FFT along x,
    central crop, FFT back), phase oversampling cropped likewise, averages averaged, non-acquired lines zero.

    Only the readouts of the requested frames are read (one sorted HDF5 selection per call). The header table is
    computed once per reader (and cached per process); pickling keeps only the file, group, entry and options,
    and a worker recomputes the table from the headers on first use.
    """

    is_complex = True

    def __init__(self, series: RawSeries, *, prewhiten: bool = True, memory_map: bool = True):
        self.path = series.path
        self.memory_map = bool(memory_map)
        self._heaps: dict[str, VlenMap | None] = {}
        self.group = series.group
        self.entry = series.entry
        self.prewhiten = bool(prewhiten)
        # The frame axis depends on the type only; the same type gives the same plan.
        self._series_type = series.series_type
        self.shape = tuple(series.shape)
        self._plan: _Plan | None = None
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._whitening: np.ndarray | None = None

    # ----------------------------------------------------------------------------------------- metadata

    @property
    def key(self) -> str:
        return f"{self.group}/{self.entry or 'data'}"

    nt = property(lambda self: self.shape[0])
    nz = property(lambda self: self.shape[1])
    nc = property(lambda self: self.shape[2])
    ny = property(lambda self: self.shape[3])
    nx = property(lambda self: self.shape[4])

    def _ensure(self) -> _Plan:
        if self._pid != os.getpid():
            self._file = None  # never reuse a handle inherited through fork
            self._whitening = None
            plans = _plans(self.path, self.group, self._series_type)
            if self.entry not in plans:
                raise RawDataError.at(self.path, f"no series {self.key!r} in the file any more (it changed on disk)")
            plan = plans[self.entry]
            shape = (plan.starts.shape[1] - 1, plan.starts.shape[0], plan.nc, plan.y.n_out, plan.x.n_out)
            if shape != tuple(self.shape):
                raise RawDataError.at(
                    self.path, f"series {self.key!r} is {shape} now, not {tuple(self.shape)}: the file changed on disk"
                )
            self._plan = plan
            self._file = _open(self.path)
            self._heaps = {}
            self._pid = os.getpid()
        return self._plan

    @property
    def whitening(self) -> np.ndarray | None:
        """``(nc, nc)`` complex64 matrix applied to every readout (``sqrt(dwell ratio)·L⁻¹``), or None."""
        plan = self._ensure()
        if not self.prewhiten or plan.noise_group is None:
            return None
        if self._whitening is None:
            self._whitening = self._compute_whitening(plan)
        return self._whitening

    def _compute_whitening(self, plan: _Plan) -> np.ndarray:
        rows = self._read_records(plan.noise_group, plan.noise_index)
        samples = np.concatenate([r.view(np.complex64).reshape(plan.nc, -1) for r in rows], axis=1)
        samples = samples.astype(np.complex128)
        cov = samples @ samples.conj().T / samples.shape[1]
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError as err:
            raise RawDataError.at(
                self.path,
                "the noise covariance of the noise readouts is not positive definite "
                "(a coil without noise?); read with prewhiten=False",
            ) from err
        scale = math.sqrt(plan.data_dwell_us / plan.noise_dwell_us) if plan.noise_dwell_us > 0 else 1.0
        w = (np.linalg.inv(chol) * scale).astype(np.complex64)
        _log_once(
            logging.INFO,
            self.path,
            "prewhitening from %d noise readouts (%s, dwell %.3g/%.3g us)",
            plan.noise_index.size,
            plan.noise_group,
            plan.data_dwell_us,
            plan.noise_dwell_us,
        )
        return w

    # ----------------------------------------------------------------------------------------- reading

    def _read_records(self, group: str, index: np.ndarray) -> list[np.ndarray]:
        """The ``data`` field (float32 vectors) of records ``index`` (sorted ascending) of ``group``."""
        if index.size == 0:
            return []
        ds = self._file[group]["data"]
        heap = self._heap(group)
        if heap is not None:
            return [heap.record(i) for i in index.tolist()]
        try:
            lo, hi = int(index[0]), int(index[-1]) + 1
            if hi - lo <= 2 * index.size + 16:  # nearly contiguous: one range read is cheaper than a point list
                block = ds.fields("data")[lo:hi]
                return [block[i - lo] for i in index.tolist()]
            return list(ds.fields("data")[index])
        except OSError as err:
            raise RawDataError.at(
                self.path, f"cannot read the readouts of {group!r}: truncated or corrupt ({err})"
            ) from err

    def _readouts(self, plan: _Plan, index: np.ndarray, signature: np.ndarray) -> np.ndarray:
        """Readouts ``index`` as processed rows ``(n, nc, nx)`` complex64: samples placed on the encoded readout,
        oversampling removed, prewhitened, conjugated (Siemens)."""
        rows = np.zeros((index.size, plan.nc, plan.x.n_enc), np.complex64)
        heap = self._heap(plan.group)
        for sig in np.unique(signature).tolist():
            samples, pre, post, c0, reverse = plan.signatures[sig]
            where = np.flatnonzero(signature == sig)
            if heap is not None:
                block = heap.gather(index[where], 2 * plan.nc * samples)
                if block is None:
                    self._bad_record(plan, index[where], samples, heap)
            else:
                order = np.argsort(index[where], kind="stable")
                records = self._read_records(plan.group, index[where][order])
                if any(r.size != 2 * plan.nc * samples for r in records):
                    self._bad_record(plan, index[where][order], samples, records)
                block = np.empty((where.size, 2 * plan.nc * samples), np.float32)
                block[order] = np.stack(records) if records else block[order]
            line = block.view(np.complex64).reshape(where.size, plan.nc, samples)[:, :, pre : samples - post]
            rows[where, :, c0 : c0 + line.shape[-1]] = line[..., ::-1] if reverse else line
        if plan.conjugate:  # before the oversampling removal, which is not a real operator
            np.conjugate(rows, out=rows)
        rows = _remove_readout_os(rows, plan.x)
        w = self.whitening  # acts on coils, so it commutes with the transform along x: apply it to fewer samples
        if w is not None:
            rows = np.matmul(np.conj(w) if plan.conjugate else w, rows)  # conj(W y) = conj(W) conj(y)
        return rows

    def _bad_record(self, plan: _Plan, index: np.ndarray, samples: int, source) -> None:
        for i in index.tolist():
            size = source.counts[i] if isinstance(source, VlenMap) else None
            if size is None:
                size = next(r.size for j, r in zip(index.tolist(), source, strict=True) if j == i)
            if size != 2 * plan.nc * samples:
                raise RawDataError.at(
                    self.path, f"readout {i} holds {size} values, its header says {plan.nc} coils x {samples} samples"
                )

    def _heap(self, group: str) -> VlenMap | None:
        if group not in self._heaps:
            ds = self._file[group]["data"]
            self._heaps[group] = VlenMap.build(self.path, self._file, ds) if self.memory_map else None
        return self._heaps[group]

    def _assemble(
        self, plan: _Plan, rows: np.ndarray, target_rows: np.ndarray, n_slabs: int, slab_of: np.ndarray
    ) -> np.ndarray:
        """Scatter processed readouts into ``(n_slabs, nc, ny, nx)``, averaging repeats of a line."""
        ny_enc = plan.y.n_enc
        out = np.zeros((n_slabs, plan.nc, ny_enc, plan.x.n_out), np.complex64)
        count = np.zeros((n_slabs, ny_enc), np.float32)
        np.add.at(count, (slab_of, target_rows), 1.0)
        if (count <= 1).all():
            out[slab_of, :, target_rows] = rows
        else:
            np.add.at(out, (slab_of, slice(None), target_rows), rows)
            out /= np.maximum(count, 1)[:, None, :, None]
        return _resample(out, -2, plan.y)

    def _check(self, t: int, z: int) -> tuple[int, int]:
        t, z = operator.index(t), operator.index(z)
        if not (0 <= t < self.nt and 0 <= z < self.nz):
            raise RawDataError.at(
                self.path,
                f"slab (t={t}, z={z}) is outside the series {self.key} of shape "
                f"{self.shape} (nt={self.nt}, nz={self.nz})",
                sample=f"z={z}, t={t}",
            )
        return t, z

    def read_frames(self, z: int, frames: Sequence[int]) -> np.ndarray:
        """Frames ``frames`` of slice ``z``: ``(len(frames), nc, ny, nx)`` complex64; repeats read once."""
        return self._frames(z, frames, None)

    def _frames(self, z: int, frames: Sequence[int], rows: np.ndarray | None) -> np.ndarray:
        plan = self._ensure()
        frames = [self._check(t, z)[0] for t in frames]
        z = operator.index(z)
        distinct = sorted(set(frames))
        parts = [np.arange(plan.starts[z, t], plan.starts[z, t + 1]) for t in distinct]
        sel = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        slab_of = np.repeat(np.arange(len(distinct)), [p.size for p in parts])
        if rows is not None and not plan.y.resamples:  # only the readouts of the wanted rows
            keep = np.isin(plan.row[sel] + plan.y.offset, rows)
            sel, slab_of = sel[keep], slab_of[keep]
        data = self._readouts(plan, plan.index[sel], plan.signature[sel])
        slabs = self._assemble(plan, data, plan.row[sel], len(distinct), slab_of)
        where = {t: i for i, t in enumerate(distinct)}
        return slabs[[where[t] for t in frames]]

    def read_slab(self, t: int, z: int) -> np.ndarray:
        """Coil k-space of frame ``t``, slice ``z``: ``(nc, ny, nx)`` complex64."""
        return self.read_frames(z, [t])[0]

    def read_rows(self, t: int, z: int, rows: Sequence[int]) -> np.ndarray:
        """ky rows ``rows`` of frame ``t``, slice ``z``: ``(nc, len(rows), nx)`` complex64 (only their readouts
        are read, unless a phase-oversampling crop mixes rows)."""
        rows = np.asarray(rows, dtype=np.intp)
        if rows.size and (rows.min() < 0 or rows.max() >= self.ny):
            raise RawDataError.at(self.path, f"ky rows {rows.min()}..{rows.max()} are outside ny={self.ny}")
        return np.take(self._frames(z, [t], rows)[0], rows, axis=-2)

    def calibration(self, z: int) -> np.ndarray | None:
        """Separate ACS readouts of slice ``z`` as ``(nc, ny, nx)`` complex64 (zero elsewhere), or None."""
        plan = self._ensure()
        z = self._check(0, z)[1]
        sel = np.flatnonzero(plan.calib_z == z)
        if plan.calib_index.size == 0:
            return None
        rows = self._readouts(plan, plan.calib_index[sel], plan.calib_signature[sel])
        return self._assemble(plan, rows, plan.calib_row[sel], 1, np.zeros(sel.size, np.int64))[0]

    # ----------------------------------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Close the file handle (if any). The reader reopens on next use."""
        if self._file is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):
                self._file.close()
        self._file, self._pid, self._whitening, self._heaps = None, None, None, {}

    def __enter__(self) -> RawSliceReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {k: getattr(self, k) for k in ("path", "group", "entry", "prewhiten", "memory_map", "shape")} | {
            "_series_type": self._series_type
        }

    def __setstate__(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self._plan, self._file, self._pid, self._whitening, self._heaps = None, None, None, None, {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, key={self.key!r})"
