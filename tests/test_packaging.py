"""Model Zoo packaging: metadata vs. the vendored schema, version pins, logging config, large-file list.

The vendored schema ``docs/schema/meta_schema_20240725.json`` is a verbatim copy of the Zoo schema (as
stored in Project-MONAI/project-monai.github.io ``public/schema/``, itself copied from the
MONAI-extra-test-data 0.8.1 release); nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import logging.config
import re
import shutil
import socket
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
META = ROOT / "configs" / "metadata.json"
SCHEMA = ROOT / "docs" / "schema" / "meta_schema_20240725.json"
SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads(META.read_text(encoding="utf-8"))


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _validator():
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_metadata_validates_with_jsonschema(meta):
    validator = _validator()
    errors = sorted(validator.iter_errors(meta), key=lambda e: list(e.path))
    assert not errors, [e.message for e in errors]
    assert meta["schema"] == SCHEMA_URL


@pytest.mark.parametrize("drop", ["authors", "network_data_format", "required_packages_version"])
def test_schema_rejects_missing_required_key(meta, drop):
    broken = {k: v for k, v in meta.items() if k != drop}
    assert not _validator().is_valid(broken)


def test_schema_rejects_tensor_without_value_range(meta):
    broken = json.loads(json.dumps(meta))
    del broken["network_data_format"]["inputs"]["image"]["value_range"]
    assert not _validator().is_valid(broken)


def test_metadata_passes_monai_verify_metadata_offline(no_network):
    from monai.bundle import verify_metadata

    from scripts.verify_bundle import VENDORED_SCHEMA_MD5

    assert hashlib.md5(SCHEMA.read_bytes()).hexdigest() == VENDORED_SCHEMA_MD5  # the copy is unedited
    verify_metadata(meta_file=str(META), filepath=str(SCHEMA), hash_val=VENDORED_SCHEMA_MD5, hash_type="md5")


def test_metadata_formatting_and_version(meta):
    # Zoo style: 4-space indent, keys in authoring order (not sorted), trailing newline.
    assert META.read_text(encoding="utf-8") == json.dumps(meta, indent=4, ensure_ascii=False) + "\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    assert meta["version"] in meta["changelog"]


def test_network_data_format_is_consistent(meta):
    fmt = meta["network_data_format"]
    image, mask, pred = fmt["inputs"]["image"], fmt["inputs"]["mask"], fmt["outputs"]["pred"]
    assert (image["num_channels"], mask["num_channels"], pred["num_channels"]) == (50, 5, 1)
    for tensor in (image, mask, pred):
        assert len(tensor["channel_def"]) == tensor["num_channels"]
        assert tensor["spatial_shape"] == ["*", "*"]
    assert "coil 0" in image["channel_def"]["20"] and "centre" in image["channel_def"]["20"]  # 2*nc + 0


def _requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"requirements.txt line is not pinned with '==': {line!r}"
        pins[re.sub(r"[-_.]+", "-", name.strip().lower())] = version.strip()
    return pins


def test_metadata_pins_match_requirements(meta):
    pins = _requirement_pins()
    assert meta["monai_version"] == pins["monai"]
    assert meta["pytorch_version"] == pins["torch"]
    assert meta["numpy_version"] == pins["numpy"]
    for section in ("required_packages_version", "optional_packages_version"):
        for name, version in meta.get(section, {}).items():
            key = re.sub(r"[-_.]+", "-", name.lower())
            assert key in pins, f"{section}: {name} is not pinned in requirements.txt"
            assert version == pins[key], f"{section}: {name} {version} != requirements.txt {pins[key]}"


def test_logging_conf_loads_and_passes_monai_hardening():
    conf = ROOT / "configs" / "logging.conf"
    from monai.bundle import workflows

    checker = getattr(workflows, "_reject_executable_logging_config", None)
    if checker is not None:  # MONAI 1.6.1's allowlist check, applied before fileConfig
        checker(str(conf))
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        logging.config.fileConfig(conf, disable_existing_loggers=False)
        assert root.level == logging.INFO
        assert any(isinstance(h, logging.StreamHandler) for h in root.handlers)
    finally:
        for handler in root.handlers:
            if handler not in saved[1]:
                handler.close()
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])


def _strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def test_large_files_yml_parses_and_has_no_urls():
    text = (ROOT / "large_files.yml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict) and data["large_files"] == []
    assert not [s for s in _strings(data) if "://" in s]
    assert "http" not in text.lower()  # not even in a comment: no invented links


def _mini_bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "docs" / "schema").mkdir(parents=True)
    shutil.copy(ROOT / "LICENSE", bundle / "LICENSE")
    shutil.copy(META, bundle / "configs" / "metadata.json")
    shutil.copy(SCHEMA, bundle / "docs" / "schema" / SCHEMA.name)
    shutil.copy(ROOT / "large_files.yml", bundle / "large_files.yml")
    return bundle


def test_verify_bundle_script_passes_and_fails(tmp_path, no_network, capsys):
    from scripts.verify_bundle import main

    bundle = _mini_bundle(tmp_path)
    assert main(["--bundle", str(bundle)]) == 0
    with open(bundle / "configs" / "big.bin", "wb") as fh:  # sparse: costs no disk or time
        fh.truncate(26 * 1024 * 1024)
    assert main(["--bundle", str(bundle)]) == 1
    assert "big.bin" in capsys.readouterr().out
    (bundle / "configs" / "big.bin").unlink()
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    meta["version"] = "0.1.1"  # bumped without a changelog entry
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4))
    (bundle / "LICENSE").unlink()
    assert main(["--bundle", str(bundle)]) == 1
    out = capsys.readouterr().out
    assert "no changelog entry for version '0.1.1'" in out and "required file LICENSE" in out
