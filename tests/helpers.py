"""Helpers shared by the tests (fixtures are in conftest.py): tiny network settings, workflow runners, report and
DICOM readers. Import them with ``from helpers import ...``; no test imports another test module or conftest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from bundle.networks import PromptMR

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")

# PromptMR overrides that keep the architecture but shrink it to a few thousand parameters, for workflow tests.
TINY_NET = {
    "network_def#num_cascades": 1,
    "network_def#n_feat0": 4,
    "network_def#feature_dim": [6, 8, 10],
    "network_def#prompt_dim": [2, 4, 6],
    "network_def#sens_n_feat0": 4,
    "network_def#sens_feature_dim": [6, 8, 10],
    "network_def#sens_prompt_dim": [2, 4, 6],
    "network_def#prompt_size": [8, 4, 2],
    "network_def#n_enc_cab": [1, 1, 1],
    "network_def#n_dec_cab": [1, 1, 1],
    "network_def#n_bottleneck_cab": 1,
}
#: The same tiny network as PromptMR keyword arguments.
TINY_ARGS = {k.split("#")[1]: v for k, v in TINY_NET.items()}


class HtmlReport:
    """A report.html read back with the standard-library HTML parser: its images and its numeric table cells."""

    def __init__(self, path):
        from html.parser import HTMLParser

        self.images: list[str] = []  # src of every <img>
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}  # id -> rows of (text, data-value)
        self.external: list[str] = []  # src/href pointing outside the file
        report = self

        class _Parser(HTMLParser):
            table = None
            row = None
            cell = None

            def handle_starttag(self, tag, attrs):
                attrs = dict(attrs)
                for key in ("src", "href"):
                    value = attrs.get(key)
                    if value and not value.startswith("data:"):
                        report.external.append(value)
                if tag == "img":
                    report.images.append(attrs.get("src", ""))
                elif tag == "table":
                    self.table = report.tables.setdefault(attrs.get("id", f"table{len(report.tables)}"), [])
                elif tag == "tr" and self.table is not None:
                    self.row = []
                    self.table.append(self.row)
                elif tag in ("td", "th") and self.row is not None:
                    self.cell = [attrs.get("data-value"), ""]

            def handle_data(self, data):
                if self.cell is not None:
                    self.cell[1] += data

            def handle_endtag(self, tag):
                if tag in ("td", "th") and self.cell is not None:
                    self.row.append((self.cell[1].strip(), self.cell[0]))
                    self.cell = None
                elif tag == "table":
                    self.table = None

        _Parser().feed(Path(path).read_text(encoding="utf-8"))

    def decoded_images(self):
        """Every <img> decoded with PIL (raises if one is not a readable PNG data URI)."""
        import base64
        import io

        from PIL import Image

        decoded = []
        for src in self.images:
            assert src.startswith("data:image/png;base64,"), src[:40]
            with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as image:
                image.load()
                decoded.append(image.copy())
        return decoded

    def column(self, table_id: str, header: str) -> list[tuple[str, str | None]]:
        """Cells of the column named ``header`` (data rows only)."""
        rows = self.tables[table_id]
        index = [text for text, _ in rows[0]].index(header)
        return [row[index] for row in rows[1:]]


def check_report_matches_metrics(path, tables: dict) -> HtmlReport:
    """The evaluation report's tables hold exactly the numbers of ``metrics.json`` (and show them rounded)."""
    report = HtmlReport(path)
    assert not report.external, report.external  # self-contained: nothing fetched from elsewhere
    assert all(image.size[0] > 0 for image in report.decoded_images())
    levels = {"overall": [tables["overall"]], "per_modality": tables["per_modality"], "per_file": tables["per_file"]}
    if tables.get("per_modality_acceleration"):
        levels["per_modality_acceleration"] = tables["per_modality_acceleration"]
    for table_id, rows in levels.items():
        assert len(report.tables[table_id]) == len(rows) + 1  # header + one row each
        for metric in ("ssim", "psnr", "nmse"):
            for prefix, header in (("", "model"), ("zf_", "zero-filled")):
                cells = report.column(table_id, f"{metric.upper()} {header}")
                for (text, value), row in zip(cells, rows, strict=True):
                    assert float(value) == row[f"{prefix}{metric}"]
                    assert abs(float(text) - row[f"{prefix}{metric}"]) <= 0.51 * 10 ** -(2 if metric == "psnr" else 4)
            diffs = report.column(table_id, f"{metric.upper()} diff")
            for (_, value), row in zip(diffs, rows, strict=True):
                assert float(value) == pytest.approx(row[metric] - row[f"zf_{metric}"], abs=1e-12)
    return report


def check_dicom_series(folder, nifti_path, frame_time: float | None = None) -> list:
    """A DICOM series folder agrees with its NIfTI: count, spacing, orientation, positions and pixels.

    Read with pydicom (every instance) and with SimpleITK's ImageSeriesReader (one frame at a time, the slices
    of one frame forming a volume); the SimpleITK volume's voxels are compared with the NIfTI voxels at the same
    physical point, so a transposed, flipped or shifted series fails. Returns the pydicom datasets.
    """
    import nibabel as nib
    import pydicom
    import SimpleITK as sitk

    nifti = nib.load(nifti_path)
    data = np.asarray(nifti.dataobj, dtype=np.float32)
    if data.ndim == 3:
        data = data[..., None]
    nx, ny, nz, nt = data.shape
    dx, dy, dz = (float(v) for v in nifti.header.get_zooms()[:3])
    files = sorted(Path(folder).glob("*.dcm"))
    assert len(files) == nz * nt
    datasets = [pydicom.dcmread(f) for f in files]
    assert len({d.SOPInstanceUID for d in datasets}) == nz * nt
    assert len({d.SeriesInstanceUID for d in datasets}) == 1
    step = 0.0
    for d in datasets:
        assert d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
        assert d.BitsAllocated == 16 and d.PixelRepresentation == 0
        assert (d.Rows, d.Columns) == (ny, nx)
        np.testing.assert_allclose([float(v) for v in d.PixelSpacing], (dy, dx), rtol=1e-6)
        assert float(d.SliceThickness) == pytest.approx(dz)
        assert [float(v) for v in d.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert d.ImageComments == "AI reconstruction from undersampled k-space; not for diagnostic use"
        assert d.PatientID.startswith("P") and d.PatientName == d.PatientID
        assert "PatientBirthDate" not in d or not d.PatientBirthDate
        z, t = (d.InstanceNumber - 1) // nt, (d.InstanceNumber - 1) % nt
        assert d.TemporalPositionIdentifier == t + 1
        if frame_time is not None:
            assert float(d.TriggerTime) == pytest.approx(t * frame_time)
        step = float(d.RescaleSlope)
        values = d.pixel_array.astype(np.float64) * step + float(d.RescaleIntercept)
        # Stored as the viewer picture: row r, column c is voxel (nx-1-c, ny-1-r).
        expected = data[::-1, ::-1, z, t].T
        assert np.abs(values - expected).max() <= step * 0.5 + 1e-6 * max(1.0, float(np.abs(data).max()))
    reader = sitk.ImageSeriesReader()
    reference = sitk.ReadImage(str(nifti_path))
    for t in range(nt):
        frame_files = [str(f) for f, d in zip(files, datasets, strict=True) if d.TemporalPositionIdentifier == t + 1]
        reader.SetFileNames(
            sorted(frame_files, key=lambda f: pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber)
        )
        volume = reader.Execute()
        assert volume.GetSize() == (nx, ny, nz)
        np.testing.assert_allclose(volume.GetSpacing()[:2], (dx, dy), rtol=1e-6)
        if nz > 1:
            np.testing.assert_allclose(volume.GetSpacing()[2], dz, rtol=1e-6)
        np.testing.assert_allclose(volume.GetDirection(), np.eye(3).ravel(), atol=1e-6)
        array = sitk.GetArrayFromImage(volume)  # (nz, rows, columns)
        for index in [(0, 0, 0), (nx - 1, 0, nz - 1), (1, ny - 1, 0), (nx // 2, ny // 3, nz // 2)]:
            point = volume.TransformIndexToPhysicalPoint(index)
            frame = reference[:, :, :, t] if reference.GetDimension() == 4 else reference
            ref_index = frame.TransformPhysicalPointToIndex(point)
            ref_value = data[ref_index[0], ref_index[1], ref_index[2], t]
            assert abs(float(array[index[2], index[1], index[0]]) - ref_value) <= step * 0.5 + 1e-5, index
    return datasets


MODALITIES = ("Cine", "Mapping", "BlackBlood")


def synthetic_validation_engine(handlers, files_per_modality: int = 3, images_per_file: int = 2, shape=(48, 30)):
    """An ignite engine whose outputs look like the validation evaluator's (``num_adj_frames=1``, one coil).

    Every image is an off-centre bright disc (asymmetric, so orientation mistakes show); the "reconstruction"
    adds file-dependent noise, so files rank differently. ``handlers`` are attached in order; a ChallengeMetric
    named ``val_ssim`` is attached first.
    """
    from ignite.engine import Engine

    from bundle.mri import fft2c
    from bundle.workflows import ChallengeMetric

    nx, ny = shape
    x, y = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    items = []
    for modality in MODALITIES:
        for f in range(files_per_modality):
            for z in range(images_per_file):
                items.append(
                    (modality, f"/data/{modality}/P00{f + 1}/{modality.lower()}_{f}.mat", f, z, 4 * (1 + z % 2))
                )
    gen = torch.Generator().manual_seed(0)

    def step(engine, batch):
        modality, file, f, z, acc = items[int(batch)]
        disc = ((x - nx * 0.3) ** 2 / 30 + (y - ny * 0.6) ** 2 / 12 < 1).astype(np.float32)
        target = torch.from_numpy(disc + 0.1 + 0.05 * z)[None, None]
        noisy = target + (0.02 + 0.05 * f) * torch.randn(target.shape, generator=gen)
        kspace = fft2c(target.to(torch.complex64))
        mask = torch.zeros_like(kspace.real)
        mask[..., :: (2 + f)] = 1
        label = {
            "target": target,
            "file": [file],
            "modality": [modality],
            "z": torch.tensor([z]),
            "t": torch.tensor([0]),
            "pattern": ["Uniform"],
            "acceleration": torch.tensor([acc]),
        }
        return {"image": kspace * mask, "pred": noisy.abs(), "label": label}

    engine = Engine(step)
    ChallengeMetric(num_adj_frames=1, prefix="val_").attach(engine, "val_ssim")
    for handler in handlers:
        handler.attach(engine)
    return engine, len(items)


# --- workflows (the Model Zoo test pattern) ---


def train_overrides(data_root: Path, out: Path) -> dict:
    return {
        "bundle_root": str(REPO),
        "dataset_dir": str(data_root),
        "output_dir": str(out / "runs"),
        "ckpt_dir": str(out / "models"),
        "epochs": 1,
        "num_workers": 0,
        "train_max_items": 12,
        "val_max_items": 6,
        "accumulation_steps": 2,
        **TINY_NET,
    }


def snapshot(root: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def config_workflow(configs, run_id: str, **overrides) -> ConfigWorkflow:
    """The bundle run ``run_id`` of the configs named (files in ``configs/``), as ``monai.bundle run`` builds it."""
    return ConfigWorkflow(
        config_file=[str(CONFIGS / c) for c in configs],
        meta_file=META,
        logging_file=LOGGING,
        workflow_type="train" if run_id != "inference" else "infer",
        run_id=run_id,
        **overrides,
    )


def raised(error_type, fn):
    """Run ``fn`` and return the ``error_type`` exception in the raised chain (MONAI wraps config errors)."""
    import pytest

    with pytest.raises(Exception) as info:
        fn()
    err = info.value
    while err is not None and not isinstance(err, error_type):
        err = err.__cause__ or err.__context__
    assert err is not None, f"{error_type.__name__} not raised: {info.value!r}"
    return err


def run_workflow(workflow: ConfigWorkflow) -> None:
    workflow.initialize()
    assert workflow.check_properties() == []
    workflow.run()
    workflow.finalize()


# --- tiny PromptMR inputs ---

F = 5
H, W = 23, 17
TINY_UNET = dict(n_feat0=4, feature_dim=(6, 8, 10), prompt_dim=(2, 4, 6), len_prompt=(2, 2, 2), prompt_size=(8, 4, 2))
TINY = dict(
    num_adj_frames=F,
    n_feat0=4,
    feature_dim=(6, 8, 10),
    prompt_dim=(2, 4, 6),
    sens_n_feat0=4,
    sens_feature_dim=(6, 8, 10),
    sens_prompt_dim=(2, 4, 6),
    len_prompt=(2, 2, 2),
    prompt_size=(8, 4, 2),
    # Tiny images: detect Cartesian masks from their 4 central ky lines instead of CMRxRecon's 16.
    radial_acs_size=4,
)


def tiny_model(seed: int = 0, num_cascades: int = 2, **kwargs) -> PromptMR:
    torch.manual_seed(seed)
    return PromptMR(num_cascades=num_cascades, **{**TINY, **kwargs})


def cartesian_line(w: int, acs: int, accel: int, offset: int) -> torch.Tensor:
    """(W,) float: equispaced lines plus a centred ACS band [w//2 - acs//2, w//2 - acs//2 + acs)."""
    line = torch.zeros(w)
    line[offset::accel] = 1
    start = w // 2 - acs // 2
    line[start : start + acs] = 1
    return line


def make_mask(form: str, b: int = 2, h: int = H, w: int = W, f: int = F) -> torch.Tensor:
    """Per-sample Cartesian masks in one of the contract's shapes; sample i has ACS width 4 + 2i."""
    per_frame = torch.stack(
        [torch.stack([cartesian_line(w, 4 + 2 * i, 4, (i + t) % 4) for t in range(f)]) for i in range(b)]
    )  # (B, F, W)
    if form == "task1":
        return per_frame[:, :1, None, :]
    if form == "frames_1d":
        return per_frame[:, :, None, :]
    if form == "per_frame":
        return per_frame[:, :, None, :].expand(b, f, h, w).clone()
    if form == "single_2d":
        return per_frame[:, :1, None, :].expand(b, 1, h, w).clone()
    raise ValueError(form)


def make_kspace(b: int, coils: int, mask: torch.Tensor, h: int = H, w: int = W, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(b, F, coils, h, w, dtype=torch.complex64, generator=g)
    return (k * mask.unsqueeze(2)).reshape(b, F * coils, h, w)


def rotation(degrees_x: float, degrees_z: float) -> np.ndarray:
    """``Rz @ Rx``: a proper rotation (3x3), ``degrees_x`` about the patient x axis, then ``degrees_z`` about z."""
    ax, az = np.radians(degrees_x), np.radians(degrees_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


def oblique_geometry(
    nz: int = 3,
    matrix: tuple[int, int] = (10, 8),
    fov_mm=(25.0, 16.0, 6.0),
    spacing: float = 7.5,
    left_handed: bool = False,
    trigger_times_ms=None,
):
    """A ScanGeometry rotated 30° about x and 30° about z, off-centre, ``nz`` slices ``spacing`` mm apart.

    ``left_handed`` takes ``slice_dir = -(read_dir × phase_dir)``, as some Siemens files have it.
    """
    from bundle.geometry import ScanGeometry, SliceGeometry

    axes = rotation(30.0, 30.0)
    read, phase = axes[:, 0], axes[:, 1]
    normal = -axes[:, 2] if left_handed else axes[:, 2]
    centre = np.array([12.5, -31.0, 47.25])
    slices = [SliceGeometry(centre + k * spacing * normal, read, phase, normal) for k in range(nz)]
    return ScanGeometry(matrix, fov_mm, slices, patient_position="HFS", trigger_times_ms=trigger_times_ms)


def dicom_pixel_lps(ds, row: float, column: float) -> np.ndarray:
    """LPS position (mm) of pixel ``(row, column)`` of a DICOM image, from its IPP, IOP and PixelSpacing alone."""
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    along_row, along_column = iop[:3], iop[3:]  # direction of increasing column index, of increasing row index
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    return ipp + column * column_spacing * along_row + row * row_spacing * along_column


# --------------------------------------------------------------------------------------------------- ISMRMRD

#: Tiny phantom sizes for ISMRMRD reader tests (recon matrix 32 x 24, readout 2x oversampled).
RAW_TINY = {"nx": 32, "ny": 24, "nc": 3, "nz": 2, "nt": 4}


def edit_ismrmrd_xml(path, edit, group: str = "dataset") -> None:
    """Replace the XML header of ``group`` of an ISMRMRD file by ``edit(xml_text)``."""
    import h5py

    with h5py.File(path, "a") as f:
        xml = f[group]["xml"][0]
        xml = xml.decode() if isinstance(xml, bytes) else xml
        del f[group]["xml"]
        ds = f[group].create_dataset("xml", shape=(1,), dtype=h5py.special_dtype(vlen=bytes))
        ds[0] = edit(xml).encode()


def edit_ismrmrd_readouts(path, edit, group: str = "dataset") -> None:
    """Rewrite the readout table of ``group``: ``edit(records)`` gets the structured array (fields head, traj,
    data) and returns the records to store (edited in place, or a subset)."""
    import h5py

    with h5py.File(path, "a") as f:
        records = f[group]["data"][:]
        records = edit(records)
        del f[group]["data"]
        f[group].create_dataset("data", data=records, maxshape=(None,), chunks=True)
