"""Mixed precision: the dtype choice per device, and bf16 autocast that leaves the k-space path and loss in fp32."""

from __future__ import annotations

import pytest
import torch
from helpers import REPO, tiny_model
from monai.bundle import ConfigParser

from bundle.losses import HyperCMRLoss
from bundle.workflows import precision as precision_mod
from bundle.workflows.precision import AutocastInferer, Precision, resolve_precision


@pytest.mark.parametrize(
    ("amp", "native", "expected"),
    [("auto", True, torch.bfloat16), ("auto", False, None), (True, False, torch.bfloat16), ("false", True, None)],
)
def test_cpu_precision_follows_native_bf16(monkeypatch, amp, native, expected):
    monkeypatch.setattr(precision_mod, "cpu_has_native_bf16", lambda: native)
    p = resolve_precision(amp, "auto", "cpu")
    assert p.dtype == expected and p.device_type == "cpu" and not p.grad_scaler


@pytest.mark.parametrize(
    ("amp", "native", "line"),
    [
        ("auto", False, "precision: fp32 (this CPU has no native bf16: AVX512_BF16/AMX_BF16 not found)"),
        ("auto", True, "precision: bf16 (this CPU has native bf16"),
        ("cuda", True, "precision: fp32 (amp: cuda autocasts on GPUs only; this run is on cpu)"),
        (False, True, "precision: fp32 (amp is off in the config; this CPU has native bf16)"),
        (False, False, "precision: fp32 (amp is off in the config; this CPU has no native bf16)"),
    ],
)
def test_resolved_precision_is_logged_with_its_reason_in_one_line(monkeypatch, caplog, amp, native, line):
    monkeypatch.setattr(precision_mod, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level("INFO", logger="bundle.workflows.precision"):
        resolve_precision(amp, "auto", "cpu")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("precision: ")]
    assert len(lines) == 1 and lines[0].startswith(line)


def test_cuda_precision_prefers_bf16_and_scales_only_fp16(monkeypatch):
    # The CUDA branches, emulated on the CPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    p = resolve_precision("auto", "auto", "cuda")
    assert p.dtype == torch.bfloat16 and not p.grad_scaler
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    p = resolve_precision(True, "auto", "cuda:0")
    assert p.dtype == torch.float16 and p.grad_scaler
    assert resolve_precision("auto", "fp16", "cuda").grad_scaler
    assert resolve_precision(False, "bf16", "cuda").dtype is None


def test_bad_precision_settings_are_refused():
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision(True, "fp16", "cpu")
    with pytest.raises(ValueError, match="amp must be auto, cuda"):
        resolve_precision("sometimes", "auto", "cpu")
    with pytest.raises(ValueError, match="amp_dtype must be"):
        resolve_precision(True, "int8", "cpu")


def test_native_bf16_detection_reads_the_cpu_flags(monkeypatch, tmp_path):
    assert isinstance(precision_mod.cpu_has_native_bf16(), bool)
    precision_mod.cpu_has_native_bf16.cache_clear()
    try:
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
        assert precision_mod.cpu_has_native_bf16() is False  # oneDNN without bf16: never native
    finally:
        precision_mod.cpu_has_native_bf16.cache_clear()


def _batch(b: int = 2, f: int = 5, c: int = 3, h: int = 48, w: int = 40):
    g = torch.Generator().manual_seed(0)
    kspace = torch.randn(b, f * c, h, w, dtype=torch.complex64, generator=g)
    mask = torch.zeros(b, 1, 1, w, dtype=torch.bool)
    mask[..., ::2] = True
    mask[..., w // 2 - 2 : w // 2 + 2] = True
    return kspace * mask, mask


def test_bf16_autocast_keeps_the_kspace_path_and_loss_inputs_in_fp32():
    model = tiny_model(num_cascades=2).train()
    seen: dict[str, list[torch.dtype]] = {"conv": [], "sens": [], "unet_out": []}
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda mod, args, out: seen["conv"].append(out.dtype))
    model.sens_net.register_forward_hook(lambda mod, args, out: seen["sens"].append(out.dtype))
    for cascade in model.cascades:
        cascade.register_forward_hook(lambda mod, args, out: seen["unet_out"].append(out.dtype))

    loss_inputs: list[torch.dtype] = []
    loss = HyperCMRLoss(w_vgg=0.0).for_trainer()

    def recording_loss(pred, target):
        loss_inputs.extend([pred[0].dtype, pred[1].dtype, target["target"].dtype, target["kspace_target"].dtype])
        return loss(pred, target)

    kspace, mask = _batch()
    target = {"target": torch.rand(2, 1, 48, 40), "kspace_target": torch.randn(2, 3, 48, 40, dtype=torch.complex64)}
    inferer = AutocastInferer(Precision("cpu", torch.bfloat16))
    image, centre = inferer(kspace, model, mask)
    value = recording_loss((image, centre), target)
    value.backward()

    assert torch.bfloat16 in seen["conv"]  # autocast is really on inside the U-Nets
    assert seen["sens"] == [torch.complex64]  # sensitivity maps
    assert set(seen["unet_out"]) == {torch.complex64}  # k-space after each cascade (data consistency)
    assert image.dtype == torch.float32 and centre.dtype == torch.complex64
    assert loss_inputs == [torch.float32, torch.complex64, torch.float32, torch.complex64]
    assert value.dtype == torch.float32 and torch.isfinite(value)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_autocast_inferer_is_a_plain_call_when_off_or_nested():
    model = tiny_model(num_cascades=1).eval()
    kspace, mask = _batch(b=1)
    with torch.no_grad():
        plain = model(kspace, mask)[0]
        off = AutocastInferer(Precision("cpu"))(kspace, model, mask)[0]
        assert torch.equal(plain, off)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outer = model(kspace, mask)[0]
            nested = AutocastInferer(Precision("cpu", torch.bfloat16))(kspace, model, mask)[0]
        assert torch.equal(outer, nested)


def test_bf16_training_in_a_monai_trainer_runs_and_learns():
    from monai.engines import SupervisedTrainer

    from bundle.workflows import PrepareReconBatch

    model = tiny_model(num_cascades=1)
    kspace, mask = _batch(b=1)
    item = {
        "kspace_masked": kspace,
        "mask": mask.float(),
        "target": torch.rand(1, 1, 48, 40),
        "kspace_target": torch.randn(1, 3, 48, 40, dtype=torch.complex64),
    }
    before = [p.detach().clone() for p in model.parameters()]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[item] * 3,
        network=model,
        optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
        loss_function=HyperCMRLoss(w_vgg=0.0).for_trainer(),
        inferer=AutocastInferer(resolve_precision(True, "bf16", "cpu")),
        prepare_batch=PrepareReconBatch(),
        amp=False,
        decollate=False,
    )
    trainer.run()
    assert torch.isfinite(torch.as_tensor(trainer.state.output["loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_inference_and_evaluation_default_to_fp32_on_a_cpu_with_native_bf16(monkeypatch):
    """Inference and evaluation results must not depend on the CPU: amp defaults to cuda there (bf16 autocast on
    GPUs only), while training keeps auto (bf16 on this CPU)."""

    monkeypatch.setattr(precision_mod, "cpu_has_native_bf16", lambda: True)
    configs = REPO / "configs"
    resolved = {}
    for name, files in {
        "training": ["train.yaml"],
        "inference": ["inference.yaml"],
        "evaluation": ["train.yaml", "evaluate.yaml"],
    }.items():
        parser = ConfigParser()
        parser.read_config([str(configs / f) for f in files])
        parser["device"] = "$torch.device('cpu')"
        parser["bundle_root"] = str(REPO)
        resolved[name] = parser.get_parsed_content("precision")
    assert resolved["training"].dtype == torch.bfloat16
    assert resolved["inference"].dtype is None and resolved["evaluation"].dtype is None
    assert resolve_precision("cuda", "auto", "cpu").dtype is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("cuda", "auto", "cuda").dtype == torch.bfloat16  # GPUs may keep bf16
