"""NIfTI sidecars: BIDS-style keys, validated against docs/schema/nifti_sidecar.schema.json."""

from __future__ import annotations

import json

import pytest

from bundle.io.sidecar import (
    NOT_FOR_DIAGNOSIS,
    SIDECAR_SCHEMA,
    describe,
    file_sha256,
    mapping_times,
    model_info,
    parse_sampling,
    sidecar_path,
    validate_sidecar,
    write_sidecar,
)


def _write(tmp_path, **changes):
    kwargs = dict(
        source="Cine/ValidationSet/UnderSample_Task1/P001/cine_sax_kus_Uniform8.mat",
        modality="Cine",
        series="cine_sax",
        shape=[8, 6, 2, 3],
        pattern="Uniform",
        acceleration=8,
        mask_file=None,
        voxel_size=(1.5, 1.5, 8.0),
        voxel_size_source="nominal default",
        frame_time=50.0,
        frame_time_source="nominal default",
        fourth_axis="time",
        model={
            "Name": "HyperCMR PromptMR",
            "Checkpoint": None,
            "CheckpointSHA256": None,
            "NetworkArguments": {"num_cascades": 1},
            "NetworkArgumentsSource": "configured network_def",
        },
        description=describe("HyperCMR PromptMR", "Uniform", 8),
    )
    kwargs.update(changes)
    return write_sidecar(tmp_path / "cine_sax_kus_Uniform8.nii.gz", **kwargs)


def test_sidecar_is_written_beside_the_nifti_and_fits_the_schema(tmp_path):
    path = _write(tmp_path)
    assert path == tmp_path / "cine_sax_kus_Uniform8.json" == sidecar_path(tmp_path / "cine_sax_kus_Uniform8.nii.gz")
    data = json.loads(path.read_text())
    validate_sidecar(data)
    assert data["ImageComments"] == NOT_FOR_DIAGNOSIS
    assert data["SeriesDescription"] == "HyperCMR PromptMR recon, Uniform x8"
    assert (
        data["BundleVersion"]
        == json.loads((SIDECAR_SCHEMA.parents[2] / "configs" / "metadata.json").read_text())["version"]
    )


def test_schema_rejects_a_sidecar_that_breaks_it(tmp_path):
    data = json.loads(_write(tmp_path).read_text())
    for broken in ({**data, "ImageComments": "fine for diagnosis"}, {**data, "VoxelSize": [1, 1]}):
        with pytest.raises(ValueError, match="nifti_sidecar.schema.json"):
            validate_sidecar(broken, "x.json")
    with pytest.raises(ValueError, match="FourthAxis"):
        _write(tmp_path, fourth_axis="frames")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cine_sax_kus_Uniform8.json"]  # the first one only


def test_sampling_from_file_names(tmp_path):
    assert parse_sampling("T1map_kus_ktGaussian8.mat") == ("ktGaussian", 8)
    assert parse_sampling("cine_sax_kus_Uniform10.mat") == ("Uniform", 10)
    assert parse_sampling(tmp_path / "AccFactor04" / "P001" / "cine_sax.mat") == ("Uniform", 4)
    assert parse_sampling("cine_sax.mat") == (None, None)


def test_mapping_times_from_the_2023_csv(tmp_path):
    (tmp_path / "T1map.csv").write_text("InversionTime_ms\n100\n180\n260\n")
    times = mapping_times(tmp_path / "T1map.mat", "T1map", 3)
    assert times == {"InversionTime": pytest.approx([0.1, 0.18, 0.26]), "InversionTimeSource": "T1map.csv"}
    assert mapping_times(tmp_path / "T1map.mat", "T1map", 4) == {}  # wrong count: not attached to wrong images
    assert mapping_times(tmp_path / "T2map.mat", "T2map", 3) == {}  # no file


def test_model_info_reads_network_yaml_and_hashes_the_checkpoint(tmp_path):
    import hashlib

    from bundle.networks.pretrained import save_network_overlay

    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    assert model_info(model)["NetworkArguments"] is None
    save_network_overlay(tmp_path / "network.yaml", {"num_adj_frames": 5, "num_cascades": 2})
    info = model_info(model)
    assert info["NetworkArguments"] == {"num_adj_frames": 5, "num_cascades": 2}
    assert info["CheckpointSHA256"] == hashlib.sha256(b"weights").hexdigest() == file_sha256(model)
