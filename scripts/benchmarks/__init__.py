"""Speed and memory benchmark of HyperCMR training and inference (PromptMR + HyperCMRLoss).

Usage (``scripts/benchmark.py`` is the entry point; ``python -m scripts.benchmarks`` is the same)::

    python scripts/benchmark.py --size 64x128 --cascades 2                 # CPU smoke run, default sections
    python scripts/benchmark.py --device cuda --size 512x246 --amp bf16 --checkpointing --json out.json
    python scripts/benchmark.py --size 512x246 --subprocess --sections train --checkpointing --repeats 1 --warmup 0
    python scripts/benchmark.py --network plus ...                           # the same, for PromptMR+
    python scripts/benchmark.py --sections precision,demo --size 512x246     # fp32 against bf16 inference

Sizes are ``HxW`` in model orientation: H = readout ``nx``, W = phase encode ``ny`` (the undersampled axis), so
the CMRxRecon2024 cine SAX matrix is ``512x246`` (stored on disk as ``(nt, nz, nc, ny=246, nx=512)``).

The network is ``network_def`` of ``configs/train.yaml`` (``--tiny``: with ``configs/demo.yaml``; ``--network
plus``: with ``configs/promptmr_plus.yaml``), the precision ``bundle.workflows.resolve_precision`` of ``--amp``.

Modules: :mod:`.harness` (machine, timers, memory monitors, subprocess runner), :mod:`.model` (network, precision
and inputs from the configs), one module per section, :mod:`.report` (the printed tables, as specs) and
:mod:`.cli` (command line, driver, summary). Sections (``--sections``, default ``train,infer,data,loss,flops``;
``ckpt``, ``import``, ``precision`` and ``demo`` are opt-in):

* ``train`` (:mod:`.training`): one optimisation step (forward, HyperCMRLoss with the VGG term off, backward,
  AdamW step): median time, slices/s, per-phase times and peak memory (CUDA ``max_memory_allocated``; on CPU the
  peak RSS sampled by a background thread during the timed steps, and the process-lifetime ``ru_maxrss``);
* ``infer`` (:mod:`.inference`): eval-mode ``no_grad`` forward per batch, per slice, and per whole cine SAX case
  (``--case-slices``, 120 = 12 frames x 10 slices: timed directly when it is estimated to take
  <= ``--case-direct-max-s``, otherwise extrapolated from the per-slice time; the JSON says which);
* ``data`` (:mod:`.data`): slices/s delivered by a real ``DataLoader`` over ``train#preprocessing`` of
  ``configs/train.yaml``, ``ReconDataset`` and ``ShapeGroupBatchSampler`` reading generated v7.3 ``.mat`` files,
  for each ``--data-workers`` count, and CPU ms per transform;
* ``loss`` (:mod:`.training`): HyperCMRLoss forward + backward alone, and its share of the training step;
* ``flops`` (:mod:`.flops`): model FLOPs per slice with ``torch.utils.flop_counter.FlopCounterMode`` and the
  achieved FLOP/s of the timed train and infer sections;
* ``ckpt`` (:mod:`.training`): the training step with and without ``use_checkpoint``, each in its own
  subprocess, and the memory and time ratios;
* ``import`` (:mod:`.weights`): ``scripts/import_weights.py`` on a synthetic PromptMR v1 Lightning checkpoint;
* ``precision`` (:mod:`.precision`): inference per slice in fp32 and in bf16 autocast, alternating, on one
  synthetic batch of ``--size``, and the relative L2 difference of the images;
* ``demo`` (:mod:`.precision`): the same comparison through the inference workflow (``configs/inference.yaml`` +
  ``configs/demo.yaml``) on a generated demo validation tree.

``--malloc-tuning`` makes glibc keep freed memory (``mallopt``): on CPU, at real image sizes, page faults of
freshly ``mmap``-ed activations otherwise take up to half of a training step.

``--subprocess`` runs every (section, size) in a fresh interpreter: a process killed for memory (by the kernel,
or by the ``--mem-limit-gb`` watchdog, which exits with code 99 before the machine runs out) becomes a result
with ``status`` ``"killed"``/``"memory_limit"`` instead of ending the benchmark, and each child's ``ru_maxrss``
is its own peak.
"""

from .cli import EXTRA_SECTIONS, SECTIONS, main, parse_args, parse_sizes
from .harness import MEMORY_LIMIT_EXIT

__all__ = ["EXTRA_SECTIONS", "MEMORY_LIMIT_EXIT", "SECTIONS", "main", "parse_args", "parse_sizes"]
