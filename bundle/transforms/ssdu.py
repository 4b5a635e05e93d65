"""Self-supervised (SSDU) splitting of the acquired ky lines: Θ (input), Λ (loss) and Γ (held out for validation).

Yaman et al. (MRM 2020): the acquired set Ω of each sample is split into disjoint Θ (network input and data
consistency) and Λ (loss), ``|Λ| ≈ ρ·|Ω|``, drawn anew at every step. Rules of this bundle (``docs/design.md``,
"Self-supervised training"):

* Cartesian line masks are split by whole ky lines. Every ACS line (the run of acquired lines through the k-space
  centre, which SensNet reads the coil maps from) and every ``always_sampled`` line (k-space zero-padded by design:
  partial Fourier, oversampling) stays in Θ and is never in Λ or Γ.
* When all frames of the stack acquire the same lines, all frames share one split (a different split per neighbour
  frame would let the network copy the centre's loss lines from its neighbours, which is impossible at test time).
* Γ is a fixed, seeded fraction of the non-ACS lines of a file; it is removed from the input of validation (and, in
  scan-specific training, from every training input) and scored there.
* Readout columns that are zero in every acquired line (asymmetric echo, readout padding) carry no information and
  are left out of the loss mask.

Arrays are in model orientation: k-space ``(F, C, nx, ny)`` complex, masks ``(F, nx, ny)``, lines ``(ny,)`` bool.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Mapping

import numpy as np
from monai.transforms import MapTransform, Randomizable

from bundle.errors import CMRDataError
from bundle.transforms.dictionary import portable_name
from bundle.transforms.kspace import sampled_lines

__all__ = [
    "DEFAULT_RHO",
    "DEFAULT_GAMMA_FRACTION",
    "MIN_ACS_LINES",
    "SELECTIONS",
    "acs_lines",
    "protected_lines",
    "loss_line_count",
    "split_lines",
    "holdout_lines",
    "stable_rng",
    "millard_chiew_weight",
    "frame_lines",
    "SSDUSplitd",
]

DEFAULT_RHO = 0.4
DEFAULT_GAMMA_FRACTION = 0.1
#: Fewer contiguous centre lines than this is "no ACS": SensNet could not estimate coil maps from them.
MIN_ACS_LINES = 4
SELECTIONS = ("uniform", "gaussian")


def acs_lines(lines: np.ndarray) -> np.ndarray:
    """``(ny,)`` bool: the run of acquired lines through the k-space centre (``ny // 2``, or ``ceil(ny/2) - 1``)."""
    lines = np.asarray(lines, dtype=bool)
    ny = lines.shape[-1]
    out = np.zeros(ny, dtype=bool)
    for centre in (ny // 2, math.ceil(ny / 2) - 1):
        if lines[centre]:
            lo, hi = centre, centre
            while lo > 0 and lines[lo - 1]:
                lo -= 1
            while hi < ny - 1 and lines[hi + 1]:
                hi += 1
            out[lo : hi + 1] = True
            break
    return out


def protected_lines(
    lines: np.ndarray, always_sampled: np.ndarray | None = None, min_acs_lines: int = MIN_ACS_LINES
) -> np.ndarray:
    """``(ny,)`` bool lines that stay in Θ: the ACS run and ``always_sampled``.

    Raises:
        ValueError: fewer than ``min_acs_lines`` contiguous acquired lines through the centre (no ACS).
    """
    acs = acs_lines(lines)
    if int(acs.sum()) < min_acs_lines:
        raise ValueError(
            f"the mask has no ACS lines ({int(acs.sum())} contiguous acquired line(s) through the k-space centre, "
            f"fewer than {min_acs_lines}); self-supervised training keeps the ACS lines in the input for the coil maps"
        )
    if always_sampled is not None:
        acs = acs | np.asarray(always_sampled, dtype=bool)
    return acs


def loss_line_count(n_acquired: int, n_candidates: int, rho: float) -> int:
    """``|Λ| = round(ρ·|Ω|)``, at most the ``n_candidates`` lines outside the protected set."""
    return min(int(math.floor(rho * n_acquired + 0.5)), n_candidates)


def _pick(candidates: np.ndarray, n: int, rng: np.random.Generator | np.random.RandomState, selection: str, ny: int):
    idx = np.flatnonzero(candidates)
    if selection == "uniform":
        p = None
    elif selection == "gaussian":
        # SSDU's default: lines near the centre are likelier (std = ny / 4, as the reference's 2-D Gaussian).
        w = np.exp(-0.5 * ((idx - ny // 2) / (ny / 4)) ** 2)
        p = w / w.sum()
    else:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    chosen = rng.choice(idx, size=n, replace=False, p=p)
    out = np.zeros(ny, dtype=bool)
    out[chosen] = True
    return out


def split_lines(
    lines: np.ndarray,
    protected: np.ndarray,
    rho: float,
    rng: np.random.Generator | np.random.RandomState,
    selection: str = "uniform",
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(Θ, Λ)``, ``(ny,)`` bool each, of the acquired ``lines`` minus ``exclude`` (Γ).

    Θ ∪ Λ = Ω \\ Γ, Θ ∩ Λ = ∅, ``protected`` ⊂ Θ, ``|Λ| = round(ρ·|Ω \\ Γ|)`` capped at the unprotected lines.

    Raises:
        ValueError: Λ would be empty (every acquired line is protected, or ρ·|Ω| rounds to 0).
    """
    if not 0.0 < rho < 1.0:
        raise ValueError(f"rho must be in (0, 1), got {rho}")
    omega = np.asarray(lines, dtype=bool)
    if exclude is not None:
        omega = omega & ~np.asarray(exclude, dtype=bool)
    protected = np.asarray(protected, dtype=bool) & omega
    candidates = omega & ~protected
    n = loss_line_count(int(omega.sum()), int(candidates.sum()), rho)
    if n < 1:
        raise ValueError(
            f"the loss set Λ would be empty: {int(omega.sum())} acquired line(s), {int(candidates.sum())} outside "
            f"the ACS, rho={rho}; the mask is too sparse for self-supervised training"
        )
    lam = _pick(candidates, n, rng, selection, omega.shape[-1])
    return omega & ~lam, lam


def holdout_lines(lines: np.ndarray, protected: np.ndarray, fraction: float, rng) -> np.ndarray:
    """Γ, ``(ny,)`` bool: ``max(1, round(fraction·n))`` of the ``n`` acquired unprotected lines, uniformly.

    With a single such line, Γ is that line (the validation input is then the protected lines alone).

    Raises:
        ValueError: no acquired line outside the protected set (Γ would be empty).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    candidates = np.asarray(lines, dtype=bool) & ~np.asarray(protected, dtype=bool)
    n_candidates = int(candidates.sum())
    if n_candidates < 1:
        raise ValueError(
            "the held-out set Γ would be empty: no acquired line outside the ACS; the mask is too sparse for "
            "self-supervised validation"
        )
    n = min(max(1, int(math.floor(fraction * n_candidates + 0.5))), n_candidates)
    return _pick(candidates, n, rng, "uniform", candidates.shape[-1])


def stable_rng(*key) -> np.random.RandomState:
    """A random state from a SHA-256 digest of ``repr(key)``: the same in every process, run and machine."""
    digest = hashlib.sha256(repr(tuple(key)).encode()).digest()
    return np.random.RandomState(int.from_bytes(digest[:4], "little"))


def millard_chiew_weight(p_acquired: np.ndarray, p_input: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Per-location loss weight ``(1 − K)^(−1/2)``, ``K = (1 − P̃P)⁻¹(1 − P)`` (Millard and Chiew, IEEE TCI 2023).

    ``p_acquired`` = P (probability that a scan acquires the location), ``p_input`` = P̃ (probability that an acquired
    location is kept in the input). Where ``1 − K`` is not positive (P = 0: never acquired, so never in Λ; or P̃ = 1:
    protected lines, never in Λ) the weight is 1. With one fixed mask for every scan P ∈ {0, 1}: the weight is 1.
    """
    p = np.asarray(p_acquired, dtype=np.float64)
    pt = np.asarray(p_input, dtype=np.float64)
    k = (1.0 - p) / np.maximum(1.0 - pt * p, eps)
    one_minus_k = 1.0 - k
    ok = (one_minus_k > eps) & (p > 0) & (pt < 1)
    return np.where(ok, 1.0 / np.sqrt(np.where(ok, one_minus_k, 1.0)), 1.0).astype(np.float32)


def frame_lines(mask: np.ndarray) -> np.ndarray | None:
    """``(F, ny)`` bool acquired lines of a 0/1 mask ``(F, nx, ny)``, or None when it does not sample whole lines."""
    lines = sampled_lines(np.asarray(mask, dtype=np.float32))
    if lines is None:
        return None
    f = mask.shape[0] if mask.ndim == 3 else 1
    return np.broadcast_to(lines, (f, lines.shape[-1])) if lines.shape[0] == 1 else lines


def _where(d: Mapping) -> str:
    return f"{d.get('file', '<unknown file>')} (z={d.get('z')}, t={d.get('t')})"


class SSDUSplitd(Randomizable, MapTransform):
    """Split an undersampled sample into network input (Θ) and loss target (Λ, or Γ at validation).

    Input keys: ``kspace_masked`` ``(F, C, nx, ny)`` complex (the acquired k-space, zero elsewhere), ``mask``
    ``(F, nx, ny)`` (Ω), optional ``always_sampled`` ``(ny,)`` bool (zero-padded lines to count as sampled), and
    ``file`` (seeds Γ).

    Output: ``kspace_masked`` ← y ⊙ Θ and ``mask`` ← Θ (with ``always_sampled``) for the network; ``kspace_loss``
    ``(C, nx, ny)`` complex, the centre frame's acquired k-space on the loss lines (zero elsewhere); ``loss_mask``
    ``(1, nx, ny)`` float32, the loss lines × the informative readout columns; with ``density`` (Millard–Chiew),
    ``loss_weight`` ``(1, nx, ny)`` float32.

    Args:
        mode: ``"train"``: Λ drawn from this transform's random state (seeded per item and epoch by
            :class:`~bundle.workflows.ReconDataset`); ``"validate"``: the loss set is Γ, the input Ω \\ Γ.
        rho: ρ = |Λ| / |Ω|.
        gamma_fraction: Γ's share of the non-ACS lines.
        holdout: in ``"train"`` mode, also remove Γ from the input and from Λ (scan-specific training, where the
            training scan is also the validation scan).
        seed: seeds Γ together with the file's path below ``MultiCoil`` (unique per file of a tree).
        selection: ``"uniform"`` or ``"gaussian"`` (SSDU's centre-weighted choice) for Λ.
        density: ``{group: (ny,) P}`` acquisition probability per line over the training scans
            (:func:`bundle.data.undersampled.acquisition_density`); enables the Millard–Chiew weight.
    """

    def __init__(
        self,
        mode: str = "train",
        rho: float = DEFAULT_RHO,
        gamma_fraction: float = DEFAULT_GAMMA_FRACTION,
        holdout: bool = False,
        seed: int = 0,
        selection: str = "uniform",
        min_acs_lines: int = MIN_ACS_LINES,
        density: Mapping[str, object] | None = None,
        kspace_key: str = "kspace_masked",
        mask_key: str = "mask",
        always_sampled_key: str = "always_sampled",
    ):
        MapTransform.__init__(self, (kspace_key,))
        if mode not in ("train", "validate"):
            raise ValueError(f"mode must be 'train' or 'validate', got {mode!r}")
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        if not 0.0 < float(rho) < 1.0:
            raise ValueError(f"rho must be in (0, 1), got {rho}")
        self.mode = mode
        self.rho = float(rho)
        self.gamma_fraction = float(gamma_fraction)
        self.holdout = bool(holdout)
        self.seed = int(seed)
        self.selection = selection
        self.min_acs_lines = int(min_acs_lines)
        self.density = None if density is None else {str(k): np.asarray(v, np.float64) for k, v in density.items()}
        self.kspace_key = kspace_key
        self.mask_key = mask_key
        self.always_sampled_key = always_sampled_key

    def randomize(self, data=None) -> None:  # the draws happen in __call__, from self.R
        pass

    def _gamma(self, d: Mapping, lines: np.ndarray, protected: np.ndarray, frame: int | None) -> np.ndarray:
        rng = stable_rng("gamma", portable_name(d.get("file", "")), frame, self.seed)
        return holdout_lines(lines, protected, self.gamma_fraction, rng)

    def _split_one(self, d: Mapping, lines: np.ndarray, always, frame: int | None):
        """``(Θ, loss lines, P̃ of the candidates)`` for one line pattern."""
        protected = protected_lines(lines, always, self.min_acs_lines)
        if self.mode == "validate":
            gamma = self._gamma(d, lines, protected, frame)
            return lines & ~gamma, gamma, None
        exclude = self._gamma(d, lines, protected, frame) if self.holdout else None
        theta, lam = split_lines(lines, protected, self.rho, self.R, self.selection, exclude)
        candidates = (theta | lam) & ~protected
        keep = 1.0 - lam.sum() / max(int(candidates.sum()), 1)
        return theta, lam, keep

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        y, mask = np.asarray(d[self.kspace_key]), np.asarray(d[self.mask_key])
        if y.ndim != 4 or mask.shape != (y.shape[0], *y.shape[2:]):
            raise CMRDataError(
                f"{_where(d)}: SSDU needs k-space (F, C, nx, ny) and mask (F, nx, ny), got {y.shape} and {mask.shape}",
                path=d.get("file"),
            )
        lines = frame_lines(mask)
        if lines is None:
            raise CMRDataError(
                f"{_where(d)}: the mask does not sample whole ky lines; self-supervised splitting supports Cartesian "
                "line masks (radial masks are not supported)",
                path=d.get("file"),
            )
        lines = lines.astype(bool)
        always = d.get(self.always_sampled_key)
        always = None if always is None else np.asarray(always, dtype=bool)
        f, c = y.shape[0], y.shape[0] // 2
        shared = bool((lines == lines[c]).all())
        try:
            if shared:
                theta, loss, keep = self._split_one(d, lines[c], always, None)
                thetas = np.broadcast_to(theta, lines.shape)
            else:  # lines vary over frames (kt masks): each frame its own split, the centre's Λ is scored
                parts = [self._split_one(d, lines[i], always, int(d.get("frames", range(f))[i])) for i in range(f)]
                thetas = np.stack([p[0] for p in parts])
                _, loss, keep = parts[c]
        except ValueError as err:
            raise CMRDataError(f"{_where(d)}: {err}", path=d.get("file"), problem=str(err)) from err
        if always is not None:
            thetas = thetas | always
        theta_mask = np.broadcast_to(thetas[:, None, :], mask.shape).astype(np.float32)
        centre = y[c]
        # Readout columns empty in every acquired line (asymmetric echo, padding): no information, not scored.
        informative = (centre[:, :, lines[c]] != 0).any(axis=(0, 2))
        loss_mask = (informative[:, None] & loss[None, :]).astype(np.float32)[None]
        d[self.kspace_key] = y * theta_mask[:, None]
        d[self.mask_key] = theta_mask
        d["kspace_loss"] = (centre * loss_mask).astype(np.complex64)
        d["loss_mask"] = loss_mask
        if self.density is not None and self.mode == "train":
            p = self.density.get(str(d.get("group", "")))
            if p is None or p.shape != (y.shape[-1],):
                raise CMRDataError(
                    f"{_where(d)}: no acquisition density for group {d.get('group')!r} with ny={y.shape[-1]}",
                    path=d.get("file"),
                )
            w = millard_chiew_weight(p, np.full_like(p, keep))
            d["loss_weight"] = np.broadcast_to(w[None, None, :], loss_mask.shape).astype(np.float32)
        return d
