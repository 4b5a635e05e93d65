"""Dynamic numerical cardiac phantom and multi-coil k-space simulator for synthetic CMRxRecon2024 data.

The phantom is built from soft-edged ellipses (and one annulus for the aortic arch) painted into tissue
property maps (proton density, T1, T2, a blood flag and a through-plane velocity). Each series type then
turns those maps into a complex image per frame with its own contrast:

* ``cine_*`` and ``aorta_*``: bSSFP-like bright blood, ``S = PD * sqrt(T2 / T1)``;
* ``T1map``: 9 MOLLI-like inversion times, ``S = PD * (1 - 2 exp(-TI / T1*))``, no motion;
* ``T2map``: 3 T2-prep echo times, ``S = PD * exp(-TE / T2)``, no motion;
* ``tagging``: spoiled-GRE contrast times a SPAMM grid that deforms with the myocardium and fades;
* ``flow2d``: GRE magnitude of a transverse aorta slice with velocity-encoded phase in the vessels;
* ``blackblood``: T2-weighted with nulled blood, a single frame.

The heart contracts periodically over the ``nt`` frames (frame ``nt`` would equal frame 0), and the
anatomy changes along z (base-to-apex heart size, long-axis views, the lateral cut through the aortic arch).

Geometry uses "anatomical units": one unit is ``nx / 4`` pixels, i.e. half of the readout field of view
without its 2x oversampling, and pixels are square. Images are indexed ``[..., iy, ix]``, the h5py axis
order of the challenge files (ny = phase encode, nx = readout).

Everything is vectorised NumPy and deterministic given a :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bundle.mri import fft2c_np, rss_np

__all__ = [
    "SERIES_KINDS",
    "KMAX_RANGE",
    "RSS_MAX_RANGE",
    "Anatomy",
    "random_anatomy",
    "contraction",
    "render_images",
    "coil_sensitivities",
    "simulate_kspace",
    "synthesize_kspace",
]

SERIES_KINDS = (
    "cine_sax",
    "cine_lax",
    "cine_lvot",
    "aorta_sag",
    "aorta_tra",
    "T1map",
    "T2map",
    "tagging",
    "flow2d",
    "blackblood",
)

# Targets, inside the per-volume ranges of the real training data (docs/design.md "Data format": max |k| 1.2e-3 to
# 1.8e-2, RSS max 7.8e-4 to 7.7e-3), kept a little inside so that noise cannot push a volume out.
KMAX_RANGE = (1.5e-3, 1.5e-2)
RSS_MAX_RANGE = (1.0e-3, 6.0e-3)

# Proton density, T1 [ms], T2 [ms], blood flag. Roughly 1.5-3 T values; only the contrasts matter.
_TISSUES = {
    "air": (0.0, 1000.0, 50.0, 0.0),
    "fat": (0.9, 350.0, 80.0, 0.0),
    "muscle": (0.7, 1100.0, 40.0, 0.0),
    "myocardium": (0.75, 1200.0, 45.0, 0.0),
    "blood": (0.95, 1800.0, 250.0, 1.0),
    "lung": (0.12, 1200.0, 30.0, 0.0),
    "liver": (0.75, 800.0, 40.0, 0.0),
    "bone": (0.55, 600.0, 60.0, 0.0),
}
_NPROP = 5  # PD, T1, T2, blood, velocity

# MOLLI 4(1)3(1)2 inversion times with RR = 1000 ms; T2-prep echo times of the challenge protocol.
_T1_INVERSION_TIMES = (100.0, 180.0, 260.0, 1100.0, 1180.0, 1260.0, 2100.0, 2180.0, 3100.0)
_T2_ECHO_TIMES = (0.0, 35.0, 55.0)


@dataclass(frozen=True)
class Anatomy:
    """Patient-level shape parameters, in anatomical units (see module docstring) and radians.

    One instance is shared by all series of a patient so that the heart looks alike across modalities.
    """

    body_rx: float
    body_ry: float
    fat: float
    heart_x: float
    heart_y: float
    heart_angle: float
    lv_radius: float
    myo_thickness: float
    systolic_scale: float
    systole_skew: float
    rv_scale: float
    lung_scale: float
    aorta_radius: float


def random_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw a plausible adult anatomy."""
    body_rx = rng.uniform(0.80, 0.95)
    return Anatomy(
        body_rx=body_rx,
        body_ry=body_rx * rng.uniform(0.62, 0.74),
        fat=rng.uniform(0.03, 0.06),
        heart_x=rng.uniform(-0.08, 0.08),
        heart_y=rng.uniform(-0.10, 0.02),
        heart_angle=rng.uniform(-0.4, 0.4),
        lv_radius=rng.uniform(0.12, 0.16),
        myo_thickness=rng.uniform(0.045, 0.06),
        systolic_scale=rng.uniform(0.62, 0.74),
        systole_skew=rng.uniform(0.3, 0.6),
        rv_scale=rng.uniform(0.9, 1.15),
        lung_scale=rng.uniform(0.9, 1.1),
        aorta_radius=rng.uniform(0.075, 0.095),
    )


def contraction(nt: int, skew: float = 0.45, delay: float = 0.0) -> np.ndarray:
    """Periodic contraction ``c(t)`` in [0, 1] for frames ``t = 0 .. nt-1``: 0 at end-diastole (frame 0).

    ``c = (1 - cos(2 pi w)) / 2`` of the warped phase ``w = phi + skew (1 - cos(2 pi phi)) / (2 pi)``. The warp
    is monotonic for ``skew < 1`` and moves end-systole (``w = 1/2``) before mid-cycle, to about 37 % of the
    cycle for the default, so systole is shorter than diastole; the curve stays smooth and periodic, so a
    frame ``nt`` would equal frame 0. Shape ``(nt,)``.
    """
    if not 0.0 <= skew < 1.0:
        raise ValueError(f"skew must be in [0, 1) to keep the phase warp monotonic, got {skew}")
    phi = np.arange(nt) / nt - delay
    warped = phi + skew * (1.0 - np.cos(2 * np.pi * phi)) / (2 * np.pi)
    return 0.5 - 0.5 * np.cos(2 * np.pi * warped)


def _rotate(dx, dy, angle):
    c, s = np.cos(angle), np.sin(angle)
    return dx * c + dy * s, -dx * s + dy * c


def _ellipse(x, y, cx, cy, a, b, angle, edge):
    """Soft ellipse mask (1 inside, linear 1-pixel edge) and the normalised radius ``q`` (1 on the rim).

    Parameters broadcast: scalars or ``(nt, 1, 1)`` arrays against the ``(ny, nx)`` grid.
    """
    u, v = _rotate(x - cx, y - cy, angle)
    q = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    # (q - 1) * min(a, b) underestimates the distance outside, which only softens the edge a little.
    dist = (q - 1.0) * np.minimum(a, b)
    return np.clip(0.5 - dist / edge, 0.0, 1.0), q


def _halfplane(x, y, px, py, angle, edge):
    """Soft mask of the side of the line through ``(px, py)`` that ``angle`` (its normal) points away from."""
    u, _ = _rotate(x - px, y - py, angle)
    return np.clip(0.5 - u / edge, 0.0, 1.0)


def _capsule(x, y, x0, y0, x1, y1, w, edge):
    """Soft mask of a tube of half-width ``w`` around the segment ``(x0, y0)-(x1, y1)``, and ``dist / w``."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    dist = np.sqrt((x - x0 - t * dx) ** 2 + (y - y0 - t * dy) ** 2)
    return np.clip(0.5 - (dist - w) / edge, 0.0, 1.0), dist / w


class _Canvas:
    """Tissue property maps ``(5, nt, ny, nx)``: PD, T1, T2, blood flag, through-plane velocity."""

    def __init__(self, nt: int, ny: int, nx: int):
        unit = nx / 4.0
        self.edge = 1.0 / unit
        iy = (np.arange(ny) - ny // 2) / unit
        ix = (np.arange(nx) - nx // 2) / unit
        self.y, self.x = iy[:, None], ix[None, :]
        air = _TISSUES["air"]
        self.props = np.empty((_NPROP, nt, ny, nx), np.float32)
        for i, value in enumerate((*air, 0.0)):
            self.props[i] = value

    def ellipse(self, cx, cy, a, b, angle=0.0):
        return _ellipse(self.x, self.y, cx, cy, a, b, angle, self.edge)

    def capsule(self, x0, y0, x1, y1, w):
        return _capsule(self.x, self.y, x0, y0, x1, y1, w, self.edge)

    def paint(self, mask, tissue: str, velocity=0.0):
        """Alpha-composite ``tissue`` over the maps where ``mask`` (broadcast to ``(nt, ny, nx)``) is 1."""
        mask = np.asarray(mask, np.float32)
        for i, value in enumerate((*_TISSUES[tissue], velocity)):
            self.props[i] += mask * (np.float32(value) - self.props[i])


def _torso(cv: _Canvas, an: Anatomy, lung_grow: float = 1.0, liver: float = 0.0, axial: bool = True) -> np.ndarray:
    """Body with subcutaneous fat, lungs, optionally the liver dome, and for ``axial`` cuts the spine and the
    descending aorta in cross-section.

    Returns the soft mask of the body interior (inside the fat), used to keep organs inside the body.
    """
    rx, ry = an.body_rx, an.body_ry
    outer, _ = cv.ellipse(0.0, 0.0, rx, ry)
    cv.paint(outer, "fat")
    inner, _ = cv.ellipse(0.0, 0.0, rx - an.fat, ry - an.fat)
    cv.paint(inner, "muscle")
    ls = an.lung_scale * lung_grow
    for side in (-1.0, 1.0):
        lung, _ = cv.ellipse(side * 0.45 * rx, -0.05 * ry, 0.30 * rx * ls, 0.72 * ry * ls, side * 0.2)
        cv.paint(lung * inner, "lung")
    if liver > 0:
        lv, _ = cv.ellipse(-0.35 * rx, 0.4 * ry, 0.35 * rx * liver, 0.4 * ry * liver, 0.3)
        cv.paint(lv * inner, "liver")
    if not axial:
        return inner
    spine, _ = cv.ellipse(0.0, 0.72 * ry, 0.09, 0.075)
    cv.paint(spine, "bone")
    aorta, q = cv.ellipse(0.12, 0.52 * ry, 0.85 * an.aorta_radius, 0.85 * an.aorta_radius)
    cv.paint(aorta, "blood", velocity=-0.8 * np.clip(1 - q**2, 0, 1))
    return inner


@dataclass(frozen=True)
class _LeftVentricle:
    """Diastolic LV geometry of one slice plus the contraction curve, for the tag deformation."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float
    wall: float  # outer/inner radius ratio at diastole
    scale: np.ndarray  # (nt, 1, 1) inner-radius scale over time, 1 at diastole


def _heart_sax(cv: _Canvas, an: Anatomy, c: np.ndarray, zeta: float) -> _LeftVentricle:
    """Short-axis heart: LV blood pool and myocardial ring, papillary muscles, RV crescent, epicardial fat.

    ``c`` is the contraction ``(nt, 1, 1)``; ``zeta`` in [0, 1] goes from base to apex (the heart shrinks
    towards the apex and the RV disappears).
    """
    shrink = 1.0 - 0.45 * zeta**1.5
    a0 = an.lv_radius * shrink
    b0 = a0 * 1.08
    t0 = an.myo_thickness * (1.0 - 0.2 * zeta)
    cx, cy, ang = an.heart_x, an.heart_y, an.heart_angle
    s = 1.0 - (1.0 - an.systolic_scale) * c  # inner radius scale
    # Myocardial volume is conserved: the wall thickens as the cavity shrinks.
    a_out = np.sqrt((a0 * s) ** 2 + (a0 + t0) ** 2 - a0**2)
    b_out = np.sqrt((b0 * s) ** 2 + (b0 + t0) ** 2 - b0**2)
    rv0 = an.rv_scale * (1.0 - 0.8 * zeta)
    fx, fy = _rotate(-0.75 * a0 * rv0, 0.0, -ang)
    fat, _ = cv.ellipse(cx + fx, cy + fy, a0 + t0 + 0.8 * a0 * rv0 + 0.04, max(b0 + t0, 1.7 * b0 * rv0) + 0.03, ang)
    cv.paint(0.6 * fat, "fat")
    rv = rv0 * (1.0 - 0.2 * c)
    if rv0 > 0.05:
        dx, dy = _rotate(-(a0 + t0 + 0.55 * a0 * rv), -0.02 * a0, -ang)
        rv_a, rv_b = 0.95 * a0 * rv, 1.7 * b0 * rv
        wall, _ = cv.ellipse(cx + dx, cy + dy, rv_a + 0.02, rv_b + 0.02, ang)
        cv.paint(wall, "myocardium")
        blood, _ = cv.ellipse(cx + dx, cy + dy, rv_a, rv_b, ang)
        cv.paint(blood, "blood")
    myo, _ = cv.ellipse(cx, cy, a_out, b_out, ang)
    cv.paint(myo, "myocardium")
    pool, _ = cv.ellipse(cx, cy, a0 * s, b0 * s, ang)
    cv.paint(pool, "blood")
    for pap in (0.7, 2.1):  # papillary muscles near the free wall, moving with it
        px, py = _rotate(0.65 * a0 * s * math.cos(pap), 0.65 * b0 * s * math.sin(pap), -ang)
        m, _ = cv.ellipse(cx + px, cy + py, 0.2 * a0 * s, 0.16 * a0 * s, ang + pap)
        cv.paint(m, "myocardium")
    return _LeftVentricle(cx, cy, a0, b0, ang, (a0 + t0) / a0, s)


def _heart_long_axis(cv: _Canvas, an: Anatomy, c: np.ndarray, view: int) -> None:
    """Long-axis heart. ``view`` 0: two-chamber (LV, LA); 1: three-chamber (adds the aortic root, also the
    LVOT view); 2: four-chamber (adds RV and RA). Atria fill while the ventricles contract."""
    ang = an.heart_angle + 0.6
    cx, cy = an.heart_x, an.heart_y
    a0, b0 = 1.9 * an.lv_radius, an.lv_radius
    t0 = an.myo_thickness
    s_long = 1.0 - 0.5 * (1.0 - an.systolic_scale) * c
    s_short = 1.0 - (1.0 - an.systolic_scale) * c
    a_out = np.sqrt((a0 * s_long) ** 2 + (a0 + t0) ** 2 - a0**2)
    b_out = np.sqrt((b0 * s_short) ** 2 + (b0 + t0) ** 2 - b0**2)
    axis = np.array(_rotate(1.0, 0.0, -ang))  # unit vector from apex to base
    side = np.array(_rotate(0.0, 1.0, -ang))
    atrium = 0.85 * b0 * (1.0 + 0.25 * c)
    if view == 2:
        rv_c = np.array([cx, cy]) - side * (b0 + t0 + 0.75 * b0 * an.rv_scale) + axis * 0.1 * a0
        rv_a, rv_b = 0.85 * a0 * an.rv_scale * s_long, 0.7 * b0 * an.rv_scale * s_short
        wall, _ = cv.ellipse(rv_c[0], rv_c[1], rv_a + 0.02, rv_b + 0.02, ang)
        cv.paint(wall, "myocardium")
        blood, _ = cv.ellipse(rv_c[0], rv_c[1], rv_a, rv_b, ang)
        cv.paint(blood, "blood")
        reach = rv_a + 0.8 * atrium
        blood, _ = cv.ellipse(rv_c[0] + axis[0] * reach, rv_c[1] + axis[1] * reach, 0.9 * atrium, 0.9 * atrium, ang)
        cv.paint(blood, "blood")
    myo, _ = cv.ellipse(cx, cy, a_out, b_out, ang)
    cv.paint(myo, "myocardium")
    pool, _ = cv.ellipse(cx, cy, a0 * s_long, b0 * s_short, ang)
    cv.paint(pool, "blood")
    # The atrium overlaps the LV base, opening the mitral valve plane.
    la_x = cx + axis[0] * (a0 * s_long + 0.8 * atrium)
    la_y = cy + axis[1] * (a0 * s_long + 0.8 * atrium)
    la, _ = cv.ellipse(la_x, la_y, atrium, 1.1 * atrium, ang)
    cv.paint(la, "blood")
    if view == 1:
        root = np.array([cx, cy]) + axis * 0.8 * a0 - side * 0.8 * b0
        end = root + np.array(_rotate(0.9 * a0, 0.0, -(ang + 0.9)))
        wall, _ = cv.capsule(root[0], root[1], end[0], end[1], an.aorta_radius + 0.015)
        cv.paint(wall, "myocardium")
        tube, _ = cv.capsule(root[0], root[1], end[0], end[1], an.aorta_radius * (1 + 0.08 * c))
        cv.paint(tube, "blood")


def _aorta_transverse(cv: _Canvas, an: Anatomy, c_aorta: np.ndarray, zeta: float) -> None:
    """Transverse cut at the great vessels: ascending aorta, pulmonary artery, SVC, left atrium below.

    Vessels pulse with ``c_aorta`` ``(nt, 1, 1)`` and carry a parabolic through-plane velocity profile.
    ``zeta`` in [0, 1] runs from superior to inferior.
    """
    r = an.aorta_radius * (1.0 + 0.12 * c_aorta)
    hx, hy = an.heart_x, an.heart_y - 0.05
    vessels = (
        # The ascending aorta also moves with the heart during systole.
        (hx - 0.02 + 0.03 * c_aorta, hy - 0.12 + 0.05 * zeta + 0.02 * c_aorta, r, 1.0),
        (hx + 0.17, hy - 0.20, 0.95 * r * (1.0 - 0.5 * zeta), 0.9),  # pulmonary trunk
        (hx - 0.20, hy - 0.06, 0.55 * r, -0.3),  # superior vena cava
    )
    if zeta > 0.5:
        la, _ = cv.ellipse(hx + 0.05, hy + 0.12, 0.12 * (zeta - 0.3) / 0.7 + 0.05, 0.08, 0.2)
        cv.paint(la, "blood")
    fat, _ = cv.ellipse(hx + 0.02, hy - 0.13, 0.3, 0.16)
    cv.paint(0.5 * fat, "fat")
    for vx, vy, rad, vel in vessels:
        m, q = cv.ellipse(vx, vy, rad, rad)
        cv.paint(m, "blood", velocity=vel * np.clip(1 - q**2, 0, 1))


def _aorta_sagittal(cv: _Canvas, an: Anatomy, c_aorta: np.ndarray, zeta: float) -> None:
    """Oblique-sagittal "candy cane": ascending aorta, arch and descending aorta, plus the vertebrae.

    ``zeta`` in [-1, 1] is the lateral offset of the slice; off-centre slices cut the tube narrower.
    """
    ry = an.body_ry
    inner, _ = cv.ellipse(0.0, 0.0, an.body_rx - an.fat, ry - an.fat)
    for k in range(-6, 7):  # vertebral bodies along the spine
        vert, _ = cv.ellipse(0.14 * k, 0.68 * ry, 0.055, 0.05)
        cv.paint(vert * inner, "bone")
    lv, _ = cv.ellipse(an.heart_x + 0.35, an.heart_y + 0.05, 1.6 * an.lv_radius, an.lv_radius, 0.5)
    cv.paint(lv, "myocardium")
    pool, _ = cv.ellipse(an.heart_x + 0.35, an.heart_y + 0.05, 1.3 * an.lv_radius, 0.7 * an.lv_radius, 0.5)
    cv.paint(pool, "blood")
    cut = math.sqrt(max(0.0, 1.0 - (0.6 * zeta) ** 2))
    w = an.aorta_radius * cut * (1.0 + 0.08 * c_aorta)
    ax, ay, radius = -0.3, 0.05, 0.22
    rho = np.sqrt((cv.x - ax) ** 2 + (cv.y - ay) ** 2)
    band = np.clip(0.5 - (np.abs(rho - radius) - w) / cv.edge, 0.0, 1.0)
    arch = band * _halfplane(cv.x, cv.y, ax, ay, 0.0, cv.edge)  # the superior half (x < ax)
    cv.paint(arch, "blood")
    asc, _ = cv.capsule(ax, ay - radius, ax + 0.3, ay - radius + 0.04, w)
    cv.paint(asc, "blood")
    desc, _ = cv.capsule(ax, ay + radius, ax + 0.9, ay + radius - 0.05, 0.9 * w)
    cv.paint(desc, "blood")


def _tag_pattern(cv: _Canvas, lv: _LeftVentricle, nt: int) -> np.ndarray:
    """SPAMM grid ``(nt, ny, nx)`` in [0, 1] laid down at end-diastole and carried by the LV deformation.

    Each pixel is pulled back to its diastolic (material) position with an area-preserving radial map
    around the LV: the cavity scales, the wall thickens, and the displacement decays outside the heart.
    """
    u, v = _rotate(cv.x - lv.cx, cv.y - lv.cy, lv.angle)
    q = np.sqrt((u / lv.a) ** 2 + (v / lv.b) ** 2) + 1e-9
    s = lv.scale
    q_out = np.sqrt(s**2 + lv.wall**2 - 1.0)
    shift = 1.0 - s**2
    q0_wall = np.sqrt(q**2 + shift * np.exp(-np.maximum(q - q_out, 0.0) / 0.5))
    q0 = np.where(q < s, q / s, q0_wall)
    u0, v0 = u * q0 / q, v * q0 / q
    x0, y0 = _rotate(u0, v0, -lv.angle)
    spacing = max(0.045, 5.0 * cv.edge)  # about 7 mm, but never under 5 pixels
    width = 0.22 * spacing

    def lines(p):
        d = ((p / spacing + 0.5) % 1.0 - 0.5) * spacing
        return np.exp(-((d / width) ** 2))

    lx, ly = lines(x0), lines(y0)
    grid = lx + ly - lx * ly
    return np.broadcast_to(grid, (nt, *grid.shape[1:]))


def _texture(cv: _Canvas, rng: np.random.Generator, waves: int = 12) -> np.ndarray:
    """Static multiplicative texture ``(ny, nx)`` around 1 (about +-6 %): a sum of random plane waves of
    0.5 to 4 cycles per unit, so that tissues are not perfectly flat."""
    freq = rng.uniform(0.5, 4.0, waves) * 2 * np.pi
    theta = rng.uniform(0.0, np.pi, waves)
    shift = rng.uniform(0.0, 2 * np.pi, waves)
    field = sum(np.cos(f * (cv.x * math.cos(t) + cv.y * math.sin(t)) + p) for f, t, p in zip(freq, theta, shift))
    return 1.0 + 0.06 * field / math.sqrt(waves / 2)


def _smooth_phase(cv: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Slowly varying background phase ``(ny, nx)``: a random quadratic of up to about one radian."""
    p = rng.normal(0.0, [1.0, 0.4, 0.4, 0.25, 0.25, 0.2])
    x, y = cv.x, cv.y
    return p[0] + p[1] * x + p[2] * y + p[3] * x * y + p[4] * (x**2 - y**2) + p[5] * (x**2 + y**2)


def _contrast(kind: str, props: np.ndarray, tags: np.ndarray | None, nt: int) -> np.ndarray:
    """Real-valued signal ``(nt, ny, nx)`` (signed for T1 inversion recovery) from the property maps."""
    pd, t1, t2, blood, _ = props
    if kind == "T1map":
        ti = np.asarray(_T1_INVERSION_TIMES[:nt], np.float32)[:, None, None]
        return 0.5 * pd * (1.0 - 2.0 * np.exp(-ti / (0.8 * t1)))
    if kind == "T2map":
        te = np.asarray(_T2_ECHO_TIMES[:nt], np.float32)[:, None, None]
        return 0.5 * pd * np.exp(-te / t2)
    if kind == "blackblood":
        return pd * np.exp(-60.0 / t2) * (1.0 - 0.97 * blood)
    if kind in ("tagging", "flow2d"):
        # Spoiled gradient echo (flip 12 deg, TR 6 ms) with inflow-enhanced blood.
        e1 = np.exp(-6.0 / t1)
        sa, ca = math.sin(math.radians(12)), math.cos(math.radians(12))
        signal = 12.0 * pd * sa * (1 - e1) / (1 - ca * e1) * (1.0 + 1.2 * blood)
        if tags is not None:
            fade = np.exp(-1.2 * np.arange(nt) / nt)[:, None, None]  # T1 recovery of the tags
            depth = 0.85 * fade * (1.0 - 0.8 * blood)  # flowing blood washes the tags out
            signal = signal * (1.0 - depth * tags)
        return signal
    return pd * np.sqrt(t2 / t1)  # bSSFP


def render_images(
    kind: str, nt: int, nz: int, ny: int, nx: int, anatomy: Anatomy, rng: np.random.Generator
) -> np.ndarray:
    """Coil-free complex images of one series, ``(nt, nz, ny, nx)`` complex64, peak magnitude about 1.

    ``kind`` is one of :data:`SERIES_KINDS`. Mapping, tagging and the other contrasts follow the module
    docstring. Any ``nt`` and ``nz`` work, except that T1map and T2map have at most 9 and 3 frames.
    """
    if kind not in SERIES_KINDS:
        raise ValueError(f"unknown series kind {kind!r}; expected one of {SERIES_KINDS}")
    times = {"T1map": _T1_INVERSION_TIMES, "T2map": _T2_ECHO_TIMES}.get(kind)
    if times is not None and nt > len(times):
        raise ValueError(f"{kind} has at most {len(times)} frames (one per contrast), got nt={nt}")
    if min(nt, nz, ny, nx) < 1:
        raise ValueError(f"sizes must be positive, got nt={nt} nz={nz} ny={ny} nx={nx}")
    static = kind in ("T1map", "T2map", "blackblood")
    c = np.zeros(nt) if static else contraction(nt, anatomy.systole_skew)
    c = c.astype(np.float32)[:, None, None]
    c_aorta = contraction(nt, anatomy.systole_skew, delay=0.05).astype(np.float32)[:, None, None]
    out = np.empty((nt, nz, ny, nx), np.complex64)
    for z in range(nz):
        zeta = z / (nz - 1) if nz > 1 else 0.5
        cv = _Canvas(nt, ny, nx)
        lv = None
        if kind in ("cine_sax", "tagging", "T1map", "T2map", "blackblood"):
            _torso(cv, anatomy, liver=max(0.0, zeta - 0.4) / 0.6)
            lv = _heart_sax(cv, anatomy, c, zeta)
        elif kind in ("cine_lax", "cine_lvot"):
            _torso(cv, anatomy, lung_grow=1.1)
            _heart_long_axis(cv, anatomy, c, 1 if kind == "cine_lvot" else (2, 0, 1)[z % 3])
        elif kind in ("aorta_tra", "flow2d"):
            _torso(cv, anatomy, lung_grow=1.15)
            _aorta_transverse(cv, anatomy, c_aorta, zeta)
        else:  # aorta_sag
            _torso(cv, anatomy, lung_grow=0.9, axial=False)
            _aorta_sagittal(cv, anatomy, c_aorta, 2 * zeta - 1 if nz > 1 else 0.0)
        tags = _tag_pattern(cv, lv, nt) if kind == "tagging" else None
        cv.props[0] *= _texture(cv, rng).astype(np.float32)
        signal = _contrast(kind, cv.props, tags, nt)
        phase = _smooth_phase(cv, rng)
        if kind == "flow2d":
            # Velocity encoding: phase = pi * v / venc, with the peak systolic velocity at 0.8 venc.
            flow = 0.05 + 0.95 * contraction(nt, anatomy.systole_skew, delay=0.05)[:, None, None]
            phase = phase + np.pi * 0.8 * flow * cv.props[4]
        out[:, z] = signal * np.exp(1j * phase)
    peak = np.abs(out).max()
    return out / np.float32(peak if peak > 0 else 1.0)


def coil_sensitivities(nc: int, nz: int, ny: int, nx: int, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Smooth complex sensitivities ``(nz, nc, ny, nx)`` complex64 of ``nc`` loops around the chest.

    Loops sit just outside the body in two rows (z = +-0.15) at jittered angles. The magnitude is the
    on-axis Biot-Savart fall-off of a loop of radius ``a``, ``(a^2 / (a^2 + d^2))^1.5``, evaluated at the 3-D
    distance ``d`` (slices are 0.05 units apart); the phase is a per-coil offset plus a gentle gradient.
    """
    unit = nx / 4.0
    y = ((np.arange(ny) - ny // 2) / unit)[:, None]
    x = ((np.arange(nx) - nx // 2) / unit)[None, :]
    angles = 2 * np.pi * (np.arange(nc) + 0.5) / nc + rng.uniform(-0.15, 0.15, nc)
    rows = np.where(np.arange(nc) % 2 == 0, 0.15, -0.15)
    loop = rng.uniform(0.45, 0.6, nc)
    offsets = rng.uniform(0.0, 2 * np.pi, nc)
    grads = rng.normal(0.0, 0.6, (nc, 2))
    maps = np.empty((nz, nc, ny, nx), np.complex64)
    for z in range(nz):
        zs = (z - (nz - 1) / 2) * 0.05
        for k in range(nc):
            px = (anatomy.body_rx + 0.1) * math.cos(angles[k])
            py = (anatomy.body_ry + 0.1) * math.sin(angles[k])
            d2 = (x - px) ** 2 + (y - py) ** 2 + (zs - rows[k]) ** 2
            mag = (loop[k] ** 2 / (loop[k] ** 2 + d2)) ** 1.5
            phase = offsets[k] + grads[k, 0] * x + grads[k, 1] * y
            maps[z, k] = mag * np.exp(1j * phase)
    return maps


def simulate_kspace(
    images: np.ndarray,
    sens: np.ndarray,
    rng: np.random.Generator,
    noise: float | None = None,
    kmax_range: tuple[float, float] = KMAX_RANGE,
    rss_range: tuple[float, float] = RSS_MAX_RANGE,
) -> np.ndarray:
    """Multi-coil k-space ``(nt, nz, nc, ny, nx)`` complex64 from images ``(nt, nz, ny, nx)`` and
    sensitivities ``(nz, nc, ny, nx)``.

    k = fft2c(S * x) * scale + complex Gaussian noise (same standard deviation in image and k-space, the
    FFT being orthonormal). ``noise`` is that standard deviation relative to the noise-free RSS maximum
    (default: drawn in [0.5 %, 1.2 %]). ``scale`` is drawn log-uniformly from the scales that put both the
    max |k| in ``kmax_range`` and the RSS image maximum in ``rss_range``; if no scale satisfies both (large
    matrices concentrate more energy at the k-space centre), the k-space bound wins, since that is what
    numerical code is most sensitive to.

    Works one slice at a time, so the peak memory is the output plus about one slice of coil images.
    """
    nt, nz, ny, nx = images.shape
    kspace = np.empty((nt, nz, sens.shape[1], ny, nx), np.complex64)
    kmax = rmax = 0.0
    for z in range(nz):
        coil = images[:, z, None] * sens[z][None]  # (nt, nc, ny, nx)
        kspace[:, z] = fft2c_np(coil, axes=(-2, -1))
        kmax = max(kmax, float(np.abs(kspace[:, z]).max()))
        rmax = max(rmax, float(rss_np(coil, axis=1).max()))
    lo = max(kmax_range[0] / kmax, rss_range[0] / rmax)
    hi = min(kmax_range[1] / kmax, rss_range[1] / rmax)
    if lo > hi:
        lo, hi = kmax_range[0] / kmax, kmax_range[1] / kmax
    scale = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    sigma = (rng.uniform(0.005, 0.012) if noise is None else noise) * rmax * scale
    for z in range(nz):
        kz = kspace[:, z]
        kz *= np.float32(scale)
        # Real and imaginary parts each get sigma / sqrt(2), so |noise| has standard deviation sigma.
        noise_ri = rng.standard_normal((*kz.shape, 2), np.float32) * np.float32(sigma / math.sqrt(2))
        kz += noise_ri.view(np.complex64)[..., 0]
    return kspace


def synthesize_kspace(
    kind: str,
    nt: int,
    nz: int,
    ny: int,
    nx: int,
    rng: np.random.Generator,
    nc: int = 10,
    anatomy: Anatomy | None = None,
) -> np.ndarray:
    """Fully sampled multi-coil k-space of one series, ``(nt, nz, nc, ny, nx)`` complex64 (h5py order).

    Pass the patient's ``anatomy`` to make a patient's series consistent; without it one is drawn.
    """
    if anatomy is None:
        anatomy = random_anatomy(rng)
    images = render_images(kind, nt, nz, ny, nx, anatomy, rng)
    sens = coil_sensitivities(nc, nz, ny, nx, anatomy, rng)
    return simulate_kspace(images, sens, rng)
