"""TensorBoard validation images read back with TensorBoard's own event reader."""

from __future__ import annotations

import numpy as np
from helpers import MODALITIES, synthetic_validation_engine

from bundle.workflows import ReconImageWriter


def test_every_modality_gets_full_fov_images_of_at_least_256_pixels(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    writer = ReconImageWriter(log_dir=str(tmp_path), num_adj_frames=1)
    engine, n = synthetic_validation_engine([writer], shape=(48, 30))
    engine.run(range(n), max_epochs=2)
    writer.writer.close()

    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    kinds = ("zero_filled", "recon", "target", "error", "comparison")
    assert set(events.Tags()["images"]) == {f"val/{m}/{k}" for m in MODALITIES for k in kinds}
    for modality in MODALITIES:
        for kind in kinds:
            images = events.Images(f"val/{modality}/{kind}")
            assert [image.step for image in images] == [1, 2]  # one per validation run
            image = images[-1]
            # Whole field of view (30 x 48 picture, the NIfTI viewer orientation), enlarged 6x: long side >= 256.
            width = image.width // 4 if kind == "comparison" else image.width
            assert max(width, image.height) >= 256
            assert image.height == 30 * 6 and (kind == "comparison" or image.width == 48 * 6)
    # One window for zero-filled, reconstruction and target: the target (in the window it defines) reaches 255.
    from io import BytesIO

    from PIL import Image

    decoded = {
        kind: np.asarray(Image.open(BytesIO(events.Images(f"val/Cine/{kind}")[-1].encoded_image_string)).convert("L"))
        for kind in ("zero_filled", "recon", "target")
    }
    assert decoded["target"].max() == 255
    # The disc sits at low x (axis 0, 0.3 nx) and high y (0.6 ny): less Right -> right half of the picture,
    # more Anterior -> upper half, as a viewer shows the NIfTI.
    target = decoded["target"].astype(float)
    h, w = target.shape
    background = target.min()
    assert target[:, : w // 2].max() == background and target[h // 2 :].max() == background
    assert target[: h // 2, w // 2 :].max() == 255
