"""Procedural chest-X-ray-like phantoms with ground truth (``doll data phantom``).

:func:`render_case` draws one frontal "radiograph" (air dark, bone bright, soft
tissue mid-grey) with the five JSRT/SCR anatomy masks and a mask for every one of
the 13 CheXpert findings it drew. :func:`make_phantoms` writes a whole data set in
the CheXpert layout (plus ``findings/`` masks and a JSRT/SCR-like ``anatomy/``
folder) so that every pipeline of doll can run, and be checked, without
downloading anything.

Geometry is defined in relative coordinates (fractions of the image side) and
drawn at ``max(size, 128)`` pixels in a canonical frame; one random affine map
(rotation of a few degrees, scale, shift) then moves image and masks together,
and the result is area-downsampled to ``size`` (masks: nearest neighbour). The
random stream is consumed identically whatever findings are asked for, so two
calls with the same generator state and different ``findings`` differ only by
those findings (the tests rely on it).
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from doll.data.base import CHEXPERT_CLASSES, FINDINGS, JSRT_STRUCTURES
from doll.errors import DollError
from doll.outputs import record_written, releases_outputs
from doll.utils import atomic_path, prepare_out_dir

PHANTOM_VERSION = 1
CHEXPERT_DIRNAME = "CheXpert-v1.0-phantom"

# Probability that render_case(findings=None) draws each finding (independently).
PREVALENCE = {
    "Enlarged Cardiomediastinum": 0.2,
    "Cardiomegaly": 0.25,
    "Lung Opacity": 0.3,
    "Lung Lesion": 0.2,
    "Edema": 0.2,
    "Consolidation": 0.2,
    "Pneumonia": 0.2,
    "Atelectasis": 0.25,
    "Pneumothorax": 0.2,
    "Pleural Effusion": 0.25,
    "Pleural Other": 0.2,
    "Fracture": 0.2,
    "Support Devices": 0.3,
}
CSV_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_CLASSES]
GT_HEADER = ["Path", "finding", "area_fraction", "zone", "centroid_x", "centroid_y", "chest_tube"]

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT
_AIR = 0.04


# ----------------------------------------------------------------------------- drawing helpers
class _Canvas:
    """Drawing in relative coordinates on an R x R grid."""

    def __init__(self, R: int):
        self.R = R

    def pts(self, p) -> np.ndarray:
        return np.round(np.asarray(p, np.float64) * self.R * _ONE).astype(np.int32).reshape(-1, 1, 2)

    def px(self, frac: float, lo: int = 1) -> int:
        return max(lo, int(round(frac * self.R)))

    def zeros(self, dtype=np.float32) -> np.ndarray:
        return np.zeros((self.R, self.R), dtype)

    def poly(self, img, p, value=1.0):
        cv2.fillPoly(img, [self.pts(p)], value, cv2.LINE_AA if img.dtype == np.float32 else cv2.LINE_8, _SHIFT)
        return img

    def line(self, img, p, thick_frac, value=1.0, closed=False):
        cv2.polylines(img, [self.pts(p)], closed, value, self.px(thick_frac),
                      cv2.LINE_AA if img.dtype == np.float32 else cv2.LINE_8, _SHIFT)
        return img

    def ellipse(self, img, center, axes, angle=0.0, value=1.0):
        c = tuple(int(v) for v in np.round(np.asarray(center) * self.R * _ONE))
        a = tuple(max(1, int(v)) for v in np.round(np.asarray(axes) * self.R * _ONE))
        cv2.ellipse(img, c, a, float(angle), 0, 360, value, -1,
                    cv2.LINE_AA if img.dtype == np.float32 else cv2.LINE_8, _SHIFT)
        return img

    def blur(self, img, sigma_frac):
        s = max(0.3, sigma_frac * self.R)
        k = int(2 * math.ceil(3 * s) + 1)
        return cv2.GaussianBlur(img, (k, k), s)


def _mirror(p, mirror: bool) -> np.ndarray:
    p = np.asarray(p, np.float64).copy()
    if mirror:
        p[..., 0] = 1.0 - p[..., 0]
    return p


def _curve(a, b, bulge, n=16):
    """Points from a to b, bowed sideways by ``bulge`` (fraction units, + = left of a->b)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    t = np.linspace(0, 1, n)[:, None]
    d = b - a
    normal = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
    return a + t * d + bulge * np.sin(np.pi * t) * normal


# ----------------------------------------------------------------------------- render_case
def _sample_findings(u: np.ndarray) -> dict[str, bool]:
    return {f: bool(u[i] < PREVALENCE[f]) for i, f in enumerate(FINDINGS)}


def _check_findings(findings) -> dict[str, bool]:
    unknown = [k for k in findings if k not in FINDINGS]
    if unknown:
        raise DollError(f"unknown finding(s) {', '.join(map(repr, unknown))}; choose from {', '.join(FINDINGS)}")
    return {f: bool(findings.get(f, False)) for f in FINDINGS}


@dataclass(frozen=True)
class Anatomy:
    """One phantom's jittered anatomy, pose and exposure (canonical frame, fractions of the side).

    Pairs are (image-left = patient right, image-right = patient left). Built by
    :func:`_anatomy` from the 40 normal draws of :func:`render_case`; nothing here is random.
    """

    top: float  # lung apex height
    cp_v: tuple  # costophrenic angle height, per lung
    dome_h: tuple  # diaphragm dome height, per lung
    lat: tuple  # lateral wall distance from the border, per lung
    hw_upper: float  # mediastinum half-width (upper)
    heart_c: tuple
    heart_ax: tuple
    heart_ang: float
    rib_sp: float  # rib spacing
    rib_v0: float  # first rib height
    angle: float  # pose: rotation (degrees), scale, shift
    scale: float
    shift: tuple
    contrast: float  # exposure
    bright: float
    gamma: float
    lung_dark: float
    body_widen: float  # body outline width jitter
    clav_medial: tuple  # clavicles: medial end (x, y) jitter and lateral end y jitter, per side
    clav_lateral_y: tuple


def _anatomy(g: np.ndarray) -> Anatomy:
    """The anatomy of jitter ``g`` (normal draws, each clipped to +-2.5 and scaled)."""
    j = lambda k, s: float(np.clip(g[k], -2.5, 2.5) * s)  # noqa: E731 - jitter k with std s
    top = 0.13 + j(0, 0.012)
    return Anatomy(
        top=top,
        cp_v=(0.78 + j(1, 0.015), 0.80 + j(2, 0.015)),
        dome_h=(0.08 + j(3, 0.01), 0.06 + j(4, 0.01)),
        lat=(0.095 + j(5, 0.01), 0.095 + j(6, 0.01)),
        hw_upper=0.06 + j(7, 0.005),
        heart_c=(0.545 + j(8, 0.01), 0.62 + j(9, 0.012)),
        heart_ax=(0.14 + j(10, 0.008), 0.11 + j(11, 0.006)),
        heart_ang=-12 + j(12, 3),
        rib_sp=0.073 + j(13, 0.003),
        rib_v0=top - 0.03 + j(14, 0.008),
        angle=j(15, 1.5),
        scale=1.0 + j(16, 0.02),
        shift=(j(17, 0.012), j(18, 0.012)),
        contrast=1.0 + j(19, 0.06),
        bright=j(20, 0.02),
        gamma=float(np.exp(j(21, 0.08))),
        lung_dark=0.30 + j(22, 0.02),
        body_widen=j(24, 0.02),
        clav_medial=tuple((0.44 + j(25 + side, 0.006), 0.145 + j(27 + side, 0.008)) for side in (0, 1)),
        clav_lateral_y=tuple(0.095 + j(29 + side, 0.01) for side in (0, 1)),
    )


def _lung_poly(a: Anatomy, side: int, shrink=None):
    """Lung ``side`` (0: image-left = patient right; 1: image-right = patient left) as a polygon.

    Returns ``(polygon, lateral wall (unmirrored), mirrored)``; ``shrink = (anchor, fx, fy)``
    scales the (unmirrored) polygon towards ``anchor``.
    """
    m = side == 1
    L, cv, dh, top = a.lat[side], a.cp_v[side], a.dome_h[side], a.top
    apex = (0.30, top)
    s = np.linspace(0, 1, 14)
    wall = np.stack([L + (apex[0] - L) * (1 - s) ** 2.2, top + (cv - top) * s], 1)
    t = np.linspace(0, 1, 12)[1:]
    med_base = (0.455, cv - 0.03)
    base = np.stack([L + (med_base[0] - L) * t, cv + (med_base[1] - cv) * t - dh * np.sin(np.pi * t * 0.9)], 1)
    medial = np.array([[0.46, 0.45], [0.45, top + 0.06], [0.39, top + 0.005]])
    p = np.concatenate([wall, base, medial])
    if shrink is not None:
        anchor, fx, fy = shrink
        p = anchor + (p - anchor) * np.array([fx, fy])
    return _mirror(p, m), wall, m


def _mediastinum_poly(hw_u: float) -> np.ndarray:
    """The mediastinum, upper half-width ``hw_u``."""
    return np.array([[0.5 - hw_u, 0.0], [0.5 - hw_u, 0.42], [0.5 - 0.075, 0.5], [0.5 - 0.075, 0.9],
                     [0.5 + 0.075, 0.9], [0.5 + 0.075, 0.5], [0.5 + hw_u, 0.42], [0.5 + hw_u, 0.0]])


@dataclass(eq=False)
class _Scene:
    """One phantom being drawn: the canvas, anatomy, masks (R x R) and the attenuation image."""

    C: _Canvas
    size: int  # the output's side (C.R is the drawing's)
    a: Anatomy
    want: dict
    medi: np.ndarray  # mediastinum as drawn (enlarged if so)
    heart: np.ndarray  # heart as drawn (enlarged if so)
    lungpoly_m: list  # lung polygons, before the mediastinum and heart are cut out
    lungs_m: list  # lung fields
    lung_any: np.ndarray
    lung_f: np.ndarray
    att: np.ndarray  # attenuation (canonical frame, float32), drawn in place
    ptx_region: np.ndarray | None = None  # pneumothorax: the lost lung field, and its side
    ptx_side: int | None = None
    body: np.ndarray | None = None
    thorax: np.ndarray | None = None
    frac_info: tuple | None = None  # fracture: (side, rib, point index, offset, break point)
    clav_m: list = field(default_factory=list)
    fmask: dict = field(default_factory=dict)


def _scene(C: _Canvas, size: int, a: Anatomy, want: dict, frng: dict) -> _Scene:
    """The mediastinum, heart and lung masks, with the findings that change them drawn in."""
    if want["Enlarged Cardiomediastinum"]:
        hw_upper_drawn = a.hw_upper + frng["Enlarged Cardiomediastinum"].uniform(0.035, 0.06)
    else:
        hw_upper_drawn = a.hw_upper
    heart_c, heart_ax = a.heart_c, a.heart_ax
    if want["Cardiomegaly"]:
        r = frng["Cardiomegaly"]
        fx, fy = r.uniform(1.3, 1.5), r.uniform(1.1, 1.25)
        heart_ax_d = (heart_ax[0] * fx, heart_ax[1] * fy)
        heart_c_d = (heart_c[0] + heart_ax[0] * (fx - 1) * 0.45, heart_c[1] + heart_ax[1] * (fy - 1) * 0.3)
    else:
        heart_ax_d, heart_c_d = heart_ax, heart_c
    lung_polys = [_lung_poly(a, 0)[0], _lung_poly(a, 1)[0]]
    medi = C.poly(C.zeros(np.uint8), _mediastinum_poly(hw_upper_drawn))
    heart = C.ellipse(C.zeros(np.uint8), heart_c_d, heart_ax_d, a.heart_ang)
    lungpoly_m = [C.poly(C.zeros(np.uint8), p) for p in lung_polys]
    not_central = (1 - np.maximum(medi, heart)).astype(np.uint8)
    lungs_m = [lp & not_central for lp in lungpoly_m]
    lung_any = lungs_m[0] | lungs_m[1]
    sc = _Scene(C=C, size=size, a=a, want=want, medi=medi, heart=heart, lungpoly_m=lungpoly_m, lungs_m=lungs_m,
                lung_any=lung_any, lung_f=lung_any.astype(np.float32), att=C.zeros())
    if want["Pneumothorax"]:  # the lost lung field (the lung markings stop at it)
        r = frng["Pneumothorax"]
        side = sc.ptx_side = int(r.integers(2))
        anchor = np.array([0.45, 0.76])
        fx, fy = r.uniform(0.62, 0.8), r.uniform(0.78, 0.9)
        collapsed = _lung_poly(a, side, (anchor, fx, fy))[0]
        coll_m = C.poly(C.zeros(np.uint8), collapsed)
        sc.ptx_region = lungs_m[side] & (1 - coll_m)
        if not sc.ptx_region.any():
            sc.ptx_region = lungs_m[side].copy()
    return sc


# ----------------------------------------------------------------------------- anatomy layers
def _draw_body(sc: _Scene):
    """Body outline, air, the dark lung fields, spine, trachea and heart."""
    C, att = sc.C, sc.att
    body = np.array([[0.02, 1.05], [0.03, 0.3], [0.12, 0.12], [0.32, 0.05], [0.38, 0.0], [0.62, 0.0],
                     [0.68, 0.05], [0.88, 0.12], [0.97, 0.3], [0.98, 1.05]])
    body[:, 0] = 0.5 + (body[:, 0] - 0.5) * (1.0 + sc.a.body_widen)
    sc.body = body
    C.poly(att, body, 0.5)
    att += _AIR
    lung_soft = C.blur(sc.lung_f, 0.006)
    att -= sc.a.lung_dark * lung_soft
    spine = C.poly(C.zeros(), [[0.46, 0.0], [0.54, 0.0], [0.545, 1.0], [0.455, 1.0]])
    att += 0.08 * C.blur(spine, 0.01)
    trachea = C.line(C.zeros(), [[0.5, 0.0], [0.5, 0.3], [0.49, 0.37]], 0.028)
    att -= 0.1 * C.blur(trachea, 0.006)
    att += 0.04 * C.blur(sc.heart.astype(np.float32), 0.01)


def _draw_markings(sc: _Scene, mrng: np.random.Generator):
    """Lung markings: vessels radiating from the hila, none in a pneumothorax."""
    C = sc.C
    marks = C.zeros()
    for side in (0, 1):
        hil = np.array([0.40, 0.47]) if side == 0 else np.array([0.60, 0.48])
        for _ in range(12):
            a = mrng.uniform(100, 255) if side == 0 else mrng.uniform(-75, 80)
            a = np.deg2rad(a)
            ln = mrng.uniform(0.12, 0.3)
            d = np.array([np.cos(a), -np.sin(a)])
            nrm = np.array([-d[1], d[0]])
            pts = np.array([hil + d * ln * t + nrm * mrng.normal(0, 0.012) * (t > 0) for t in (0, 0.33, 0.66, 1.0)])
            C.line(marks, pts[:3], 0.011, 1.0)
            C.line(marks, pts[2:], 0.006, 0.8)
            bt = mrng.uniform(0.3, 0.7)
            b0 = hil + d * ln * bt
            bd = d * np.cos(0.5) + nrm * np.sin(0.5) * mrng.choice([-1, 1])
            C.line(marks, [b0, b0 + bd * ln * 0.4], 0.006, 0.7)
        C.ellipse(marks, hil, (0.03, 0.045), 0, 1.0)
    allowed = sc.lung_f if sc.ptx_region is None else sc.lung_f * (1 - sc.ptx_region)
    sc.att += 0.075 * C.blur(marks, 0.004) * allowed


def _draw_ribs(sc: _Scene, frng: dict):
    """Ribs (posterior arcs), one per side per level; a fracture breaks one (``sc.frac_info``)."""
    C = sc.C
    ribs = C.zeros()
    frac_info = None
    if sc.want["Fracture"]:
        r = frng["Fracture"]
        frac_info = (int(r.integers(2)), int(r.integers(2, 7)), int(r.integers(8, 16)), r.uniform(0.02, 0.03) * r.choice([-1, 1]))
    for side in (0, 1):
        for k in range(9):
            v0 = sc.a.rib_v0 + k * sc.a.rib_sp
            t = np.linspace(0, 1, 24)
            p = np.stack([0.47 - t * (0.47 - 0.05), v0 - 0.035 * np.sin(np.pi * t * 0.85) + 0.07 * t ** 2], 1)
            p = _mirror(p, side == 1)
            th = 0.016 + 0.0015 * k
            if frac_info and frac_info[0] == side and frac_info[1] == k:
                _, _, i, off = frac_info
                C.line(ribs, p[:i], th)
                C.line(ribs, p[i + 2:] + np.array([0, off]), th)
                frac_info = frac_info + (p[i],)
            else:
                C.line(ribs, p, th)
    sc.frac_info = frac_info
    sc.thorax = (C.poly(C.zeros(), sc.body) * (1 - C.poly(C.zeros(), [[0, 0.9], [1, 0.9], [1, 1], [0, 1]])))
    sc.att += 0.11 * C.blur(ribs, 0.003) * sc.thorax


def _draw_clavicles(sc: _Scene):
    """Both clavicles, into the image and ``sc.clav_m``."""
    C = sc.C
    for side in (0, 1):
        p = _curve(sc.a.clav_medial[side], (0.13, sc.a.clav_lateral_y[side]), 0.012 * (1 if side == 0 else -1), 12)
        p = _mirror(p, side == 1)
        cm = C.line(C.zeros(np.uint8), p, 0.03)
        sc.clav_m.append(cm)
        sc.att += 0.2 * C.blur(C.line(C.zeros(), p, 0.03), 0.003)


# ----------------------------------------------------------------------------- findings
def _zone_point(sc: _Scene, r, side, vert):
    """A random point of the lung field of ``side`` in the vertical third ``vert`` (0..2)."""
    R = sc.C.R
    ys, xs = np.nonzero(sc.lungs_m[side])
    if not len(ys):
        return np.array([0.3 if side == 0 else 0.7, 0.5])
    y0, y1 = ys.min(), ys.max()
    lo = y0 + (y1 - y0) * vert / 3
    hi = y0 + (y1 - y0) * (vert + 1) / 3
    sel = np.nonzero((ys >= lo) & (ys <= hi))[0]
    if not len(sel):
        sel = np.arange(len(ys))
    i = sel[r.integers(len(sel))]
    return np.array([(xs[i] + 0.5) / R, (ys[i] + 0.5) / R])


def _enlarged_cardiomediastinum(sc: _Scene, r):
    C = sc.C
    normal = C.poly(C.zeros(np.uint8), _mediastinum_poly(sc.a.hw_upper))
    m = sc.medi & (1 - normal) & (sc.lungpoly_m[0] | sc.lungpoly_m[1])
    if not m.any():
        m = sc.medi & (1 - normal)
    sc.att += 0.03 * C.blur(m.astype(np.float32), 0.006)
    sc.fmask["Enlarged Cardiomediastinum"] = m


def _cardiomegaly(sc: _Scene, r):
    sc.att += 0.03 * sc.C.blur(sc.heart.astype(np.float32), 0.006)
    sc.fmask["Cardiomegaly"] = sc.heart.copy()


def _lung_opacity(sc: _Scene, r):
    C = sc.C
    side = int(r.integers(2))
    c = _zone_point(sc, r, side, int(r.integers(3)))
    lay = C.ellipse(C.zeros(), c, (r.uniform(0.06, 0.11), r.uniform(0.06, 0.12)), r.uniform(0, 180))
    lay = C.blur(lay, 0.03) * sc.lung_f
    pk = lay.max()
    sc.fmask["Lung Opacity"] = (lay > 0.35 * pk).astype(np.uint8) if pk > 0 else C.ellipse(C.zeros(np.uint8), c, (0.03, 0.03))
    sc.att += r.uniform(0.17, 0.25) * lay / max(pk, 1e-6)


def _lung_lesion(sc: _Scene, r):
    C, size = sc.C, sc.size
    side = int(r.integers(2))
    c = _zone_point(sc, r, side, int(r.integers(3)))
    rad = float(np.exp(r.uniform(np.log(max(0.018, 1.2 / size)), np.log(0.06))))
    m = C.ellipse(C.zeros(np.uint8), c, (rad, rad * r.uniform(0.85, 1.15)), r.uniform(0, 180))
    lay = C.blur(C.ellipse(C.zeros(), c, (rad, rad), 0), 0.003)
    sc.att += r.uniform(0.3, 0.4) * lay
    sc.fmask["Lung Lesion"] = m


def _edema(sc: _Scene, r):
    C = sc.C
    lay = C.zeros()
    for side in (0, 1):
        c = (0.37 if side == 0 else 0.63, 0.48 + r.normal(0, 0.015))
        C.ellipse(lay, c, (r.uniform(0.09, 0.13), r.uniform(0.12, 0.16)), r.uniform(-20, 20))
    blobs = C.zeros()
    for _ in range(25):
        side = int(r.integers(2))
        c = (0.37 if side == 0 else 0.63) + r.normal(0, 0.06), 0.48 + r.normal(0, 0.08)
        C.ellipse(blobs, c, (0.02, 0.02), 0)
    lay = C.blur(lay, 0.035) + 0.3 * C.blur(blobs, 0.01)
    lay *= sc.lung_f
    pk = lay.max()
    sc.fmask["Edema"] = (lay > 0.35 * pk).astype(np.uint8)
    sc.att += r.uniform(0.17, 0.25) * lay / max(pk, 1e-6)


def _consolidation(sc: _Scene, r):
    C = sc.C
    side = int(r.integers(2))
    upper = bool(r.integers(2))
    # fissure: oblique line through the hilum region
    fis = np.array([[0.05, 0.32], [0.47, 0.55]]) if upper else np.array([[0.05, 0.5], [0.47, 0.42]])
    fis = fis + np.array([0, r.normal(0, 0.03)])
    if upper:
        half = [[0.0, 0.0], [0.5, 0.0], fis[1], fis[0]]
    else:
        half = [fis[0], fis[1], [0.5, 1.0], [0.0, 1.0]]
    half = _mirror(half, side == 1)
    crop_c = _zone_point(sc, r, side, 0 if upper else 2)
    crop = C.ellipse(C.zeros(np.uint8), crop_c, (r.uniform(0.09, 0.16), r.uniform(0.08, 0.14)), r.uniform(0, 180))
    m = C.poly(C.zeros(np.uint8), half) & sc.lungs_m[side] & crop
    if not m.any():
        m = sc.lungs_m[side] & crop
    if not m.any():
        m = crop
    lay = C.blur(m.astype(np.float32), 0.006)
    br = C.zeros()
    for _ in range(3):
        a = _zone_point(sc, r, side, 0 if upper else 2)
        C.line(br, [a, a + r.normal(0, 0.04, 2)], 0.008)
    sc.att += r.uniform(0.3, 0.38) * lay - 0.08 * C.blur(br, 0.003) * m
    sc.fmask["Consolidation"] = m


def _pneumonia(sc: _Scene, r):
    C = sc.C
    side = int(r.integers(2))
    c = _zone_point(sc, r, side, int(r.integers(3)))
    rad = r.uniform(0.05, 0.1)
    blobs = C.zeros()
    for _ in range(int(r.integers(10, 18))):
        off = r.normal(0, rad * 0.5, 2)
        C.ellipse(blobs, c + off, (r.uniform(0.012, 0.028),) * 2, 0)
    blobs = C.blur(np.minimum(blobs, 1.0), 0.008) * sc.lung_f
    m = (C.blur(blobs, 0.01) > 0.15).astype(np.uint8) & sc.lung_any
    if not m.any():
        m = C.ellipse(C.zeros(np.uint8), c, (rad, rad))
    sc.att += r.uniform(0.25, 0.33) * blobs
    sc.fmask["Pneumonia"] = m


def _atelectasis(sc: _Scene, r):
    C, a = sc.C, sc.a
    side = int(r.integers(2))
    lay = C.zeros()
    if r.random() < 0.5:  # plate-like band above the base
        v = a.cp_v[side] - a.dome_h[side] - r.uniform(0.03, 0.1)
        p = [[a.lat[side] + 0.04, v + r.normal(0, 0.02)], [0.42, v + r.normal(0, 0.02)]]
        C.line(lay, _mirror(p, side == 1), r.uniform(0.018, 0.03))
    else:  # wedge from the hilum to the base
        tip = [0.4, 0.5]
        b = a.cp_v[side] - a.dome_h[side] * 0.5
        p = [tip, [a.lat[side] + r.uniform(0.05, 0.12), b], [0.42, b + 0.02]]
        C.poly(lay, _mirror(p, side == 1))
    m = (lay > 0.5).astype(np.uint8) & sc.lungpoly_m[side]
    if not m.any():
        m = (lay > 0.5).astype(np.uint8)
    sc.att += r.uniform(0.28, 0.36) * C.blur(lay, 0.004) * sc.lungpoly_m[side]
    sc.fmask["Atelectasis"] = m


def _pneumothorax(sc: _Scene, r):
    """The lost lung field (drawn by :func:`_scene`) darkens; its visceral pleural line shows."""
    C, ptx_region = sc.C, sc.ptx_region
    sc.att -= r.uniform(0.09, 0.13) * C.blur(ptx_region.astype(np.float32), 0.004)
    # thin visceral pleural line: the collapsed lung's edge, inside the original lung
    edge = cv2.dilate(ptx_region, np.ones((3, 3), np.uint8)) & (1 - ptx_region) & sc.lung_any
    sc.att += 0.14 * C.blur(edge.astype(np.float32), 0.002)
    sc.fmask["Pneumothorax"] = ptx_region


def _pleural_effusion(sc: _Scene, r):
    C = sc.C
    side = int(r.integers(2))
    h = r.uniform(0.16, 0.32)
    L = sc.a.lat[side]
    uu = np.linspace(0, 1, 16)
    curve = np.stack([L - 0.02 + (0.5 - L + 0.02) * uu, sc.a.cp_v[side] - h * (1 - 0.7 * uu ** 0.8)], 1)
    p = np.concatenate([curve, [[0.5, 1.0], [L - 0.05, 1.0]]])
    p = _mirror(p, side == 1)
    reg = C.poly(C.zeros(np.uint8), p)
    m = reg & sc.lungpoly_m[side]
    if not m.any():
        m = reg & (1 - sc.medi)
    lay = C.blur(m.astype(np.float32), 0.006)
    sc.att += r.uniform(0.3, 0.36) * lay
    sc.fmask["Pleural Effusion"] = m


def _pleural_other(sc: _Scene, r):
    C = sc.C
    side = int(r.integers(2))
    _, wall, _ = _lung_poly(sc.a, side)
    a = int(r.integers(2, 7))
    b = min(len(wall), a + int(r.integers(4, 8)))
    p = _mirror(wall[a:b], side == 1)
    band = C.line(C.zeros(np.uint8), p, r.uniform(0.05, 0.07))
    m = band & sc.lungpoly_m[side]
    if not m.any():
        m = band
    sc.att += r.uniform(0.28, 0.35) * C.blur(m.astype(np.float32), 0.004)
    sc.fmask["Pleural Other"] = m


def _fracture(sc: _Scene, r):
    """A callus at the rib break that :func:`_draw_ribs` drew."""
    C, frac_info = sc.C, sc.frac_info
    bp = frac_info[4]
    C_ = C.ellipse(C.zeros(), bp + np.array([0, frac_info[3] / 2]), (0.016, 0.024), 0)
    sc.att += 0.28 * C.blur(C_, 0.004) * sc.thorax
    sc.fmask["Fracture"] = C.ellipse(C.zeros(np.uint8), bp + np.array([0, frac_info[3] / 2]), (0.036, 0.036), 0)


def _support_devices(sc: _Scene, r):
    C = sc.C
    dev = C.zeros()
    devm = C.zeros(np.uint8)
    kinds = r.random(3) < 0.6
    if not kinds.any():
        kinds[int(r.integers(3))] = True
    if kinds[0]:  # endotracheal tube
        tip = r.uniform(0.28, 0.36)
        p = [[0.5 + r.normal(0, 0.005), 0.0], [0.5, tip * 0.5], [0.5 + r.normal(0, 0.005), tip]]
        C.line(dev, p, 0.016)
        C.line(devm, p, 0.05)
    if kinds[1]:  # central venous line from the subclavian to the SVC
        s = int(r.integers(2))
        p = _mirror([[0.12, 0.12 + r.normal(0, 0.01)], [0.3, 0.17], [0.44, 0.22], [0.46, 0.32 + r.uniform(0, 0.08)]], s == 1)
        C.line(dev, p, 0.01)
        C.line(devm, p, 0.045)
    if kinds[2]:  # nasogastric tube down to the stomach
        p = [[0.505, 0.0], [0.51, 0.4], [0.53, 0.75], [0.62, 0.86 + r.uniform(0, 0.05)]]
        C.line(dev, p, 0.012)
        C.line(devm, p, 0.045)
    for _ in range(int(r.integers(0, 3))):  # ECG electrodes
        c = (r.uniform(0.15, 0.85), r.uniform(0.1, 0.3))
        C.ellipse(dev, c, (0.02, 0.02), 0)
        C.ellipse(devm, c, (0.035, 0.035), 0)
    sc.att += 0.4 * C.blur(np.minimum(dev, 1.0), 0.002)
    sc.fmask["Support Devices"] = devm


# One renderer per finding, called in FINDINGS order with the finding's own generator:
# each adds its layer to ``sc.att`` and its mask (R x R, uint8) to ``sc.fmask``.
FINDING_RENDERERS = {
    "Enlarged Cardiomediastinum": _enlarged_cardiomediastinum,
    "Cardiomegaly": _cardiomegaly,
    "Lung Opacity": _lung_opacity,
    "Lung Lesion": _lung_lesion,
    "Edema": _edema,
    "Consolidation": _consolidation,
    "Pneumonia": _pneumonia,
    "Atelectasis": _atelectasis,
    "Pneumothorax": _pneumothorax,
    "Pleural Effusion": _pleural_effusion,
    "Pleural Other": _pleural_other,
    "Fracture": _fracture,
    "Support Devices": _support_devices,
}


def _draw_chest_tube(sc: _Scene, r: np.random.Generator):
    """A chest tube (no label, no mask), on the pneumothorax side if there is one."""
    s = int(r.integers(2))
    if sc.ptx_side is not None:
        s = sc.ptx_side
    p = _mirror([[-0.02, 0.74 + r.normal(0, 0.02)], [0.09, 0.66], [0.16, 0.45], [0.22 + r.normal(0, 0.02), 0.22]], s == 1)
    tube = sc.C.line(sc.C.zeros(), p, 0.018)
    sc.att += 0.38 * sc.C.blur(tube, 0.002)


# ----------------------------------------------------------------------------- pose, exposure, resampling
def _expose(sc: _Scene, size: int, noise_rng: np.random.Generator):
    """Global blur, pose, downsampling, intensity and noise: ``(uint8 image, the pose matrix M)``."""
    C, a, R = sc.C, sc.a, sc.C.R
    att = C.blur(sc.att, 0.003)
    M = cv2.getRotationMatrix2D((R / 2 - 0.5, R / 2 - 0.5), a.angle, a.scale)
    M[:, 2] += np.array(a.shift) * R
    att = cv2.warpAffine(att, M, (R, R), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if R != size:
        att = cv2.resize(att, (size, size), interpolation=cv2.INTER_AREA)
    img = np.clip(att, 0, 1) ** a.gamma * a.contrast + a.bright
    img = img + noise_rng.normal(0, 0.012, img.shape).astype(np.float32)
    img = np.clip(img * 255.0, 0, 255).round().astype(np.uint8)
    return img, M


def _resample_masks(masks: dict, M: np.ndarray, R: int, size: int) -> dict:
    """Move the R x R masks by the pose ``M`` to ``size`` (nearest neighbour, all in one warp
    as bits of one float image); a mask too small to survive keeps its centre pixel."""
    all_hi = list(masks.items())
    s = size / R
    Mo = M * s
    Mo[:, 2] += 0.5 * s - 0.5
    packed = np.zeros((R, R), np.float32)
    for i, (_, m) in enumerate(all_hi):
        packed += m.astype(np.float32) * float(1 << i)
    packed = cv2.warpAffine(packed, Mo, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    pk = packed.astype(np.int32)
    out = {}
    for i, (name, m) in enumerate(all_hi):
        mo = ((pk >> i) & 1).astype(np.uint8)
        if not mo.any() and m.any():  # too small to survive: keep its centre pixel
            ys, xs = np.nonzero(m)
            x, y = Mo @ np.array([xs.mean(), ys.mean(), 1.0])
            mo[int(np.clip(round(y), 0, size - 1)), int(np.clip(round(x), 0, size - 1))] = 1
        out[name] = mo
    return out


def render_case(rng: np.random.Generator, size: int, findings: dict[str, bool] | None = None,
                chest_tube: bool = False):
    """Draw one phantom.

    Returns ``(image, anatomy, finding_masks, meta)``: ``image`` uint8 (size, size);
    ``anatomy`` {structure: uint8 0/1} for the 5 JSRT_STRUCTURES; ``finding_masks``
    {finding: uint8 0/1}, only for the findings drawn (each nonzero); ``meta`` =
    ``{"findings": {finding: {"area_fraction", "zone", "centroid": (x, y)}},
    "chest_tube": bool, "size": size}`` where the centroid is in fractions of the
    side (x to the image right, y down) and ``zone`` is ``<upper|middle|lower>-<left|
    right|central|bilateral>`` with left/right the *patient's* side (image right =
    patient left). ``findings=None`` samples each finding with its PREVALENCE; a
    dict draws exactly the findings mapped to True.

    The parts: :func:`_anatomy` (jitter to geometry), :func:`_scene` (mediastinum,
    heart, lungs), the anatomy layers (:func:`_draw_body`, :func:`_draw_markings`,
    :func:`_draw_ribs`, :func:`_draw_clavicles`), one :data:`FINDING_RENDERERS` entry
    per finding, :func:`_draw_chest_tube`, then :func:`_expose` and
    :func:`_resample_masks`. Each finding and layer draws from its own generator,
    seeded below, so the published phantoms stay byte for byte (tests pin them).
    """
    size = int(size)
    if size < 32:
        raise DollError(f"phantom size must be at least 32 pixels, got {size}")
    # -- every random number is drawn here, in a fixed order, whatever is asked for
    u = rng.random(len(FINDINGS))
    want = _sample_findings(u) if findings is None else _check_findings(findings)
    g = rng.normal(size=40)  # anatomy jitter
    seeds = rng.integers(0, 2**63 - 1, size=len(FINDINGS) + 3)
    frng = {f: np.random.default_rng(int(seeds[i])) for i, f in enumerate(FINDINGS)}
    noise_rng = np.random.default_rng(int(seeds[-2]))
    tube_rng = np.random.default_rng(int(seeds[-1]))
    mrng = np.random.default_rng(int(seeds[-3]))  # lung markings

    R = max(size, 128)
    sc = _scene(_Canvas(R), size, _anatomy(g), want, frng)
    _draw_body(sc)
    _draw_markings(sc, mrng)
    _draw_ribs(sc, frng)
    _draw_clavicles(sc)
    for f, draw in FINDING_RENDERERS.items():
        if want[f]:
            draw(sc, frng[f])
    if chest_tube:
        _draw_chest_tube(sc, tube_rng)
    img, M = _expose(sc, size, noise_rng)

    anat_hi = {"left lung": sc.lungs_m[1], "right lung": sc.lungs_m[0], "heart": sc.heart,
               "left clavicle": sc.clav_m[1], "right clavicle": sc.clav_m[0]}
    out = _resample_masks({**anat_hi, **sc.fmask}, M, R, size)
    anatomy = {k: out[k] for k in JSRT_STRUCTURES}
    finding_masks = {f: out[f] for f in FINDINGS if f in sc.fmask}

    lungs_out = anatomy["left lung"] | anatomy["right lung"]
    meta = {"findings": {f: _describe(m, lungs_out) for f, m in finding_masks.items()},
            "chest_tube": bool(chest_tube), "size": size}
    return img, anatomy, finding_masks, meta


def _describe(mask: np.ndarray, lungs: np.ndarray) -> dict:
    size = mask.shape[0]
    ys, xs = np.nonzero(mask)
    cx, cy = (xs.mean() + 0.5) / size, (ys.mean() + 0.5) / size
    ly = np.nonzero(lungs.any(1))[0]
    y0, y1 = (ly.min() / size, (ly.max() + 1) / size) if len(ly) else (0.15, 0.8)
    rel = (cy - y0) / max(y1 - y0, 1e-6)
    vert = "upper" if rel < 1 / 3 else ("middle" if rel < 2 / 3 else "lower")
    left_share = float((xs >= size / 2).mean())  # image right = patient left
    if 0.25 <= left_share <= 0.75 and xs.min() < 0.35 * size and xs.max() > 0.65 * size:
        side = "bilateral"
    elif abs(cx - 0.5) < 0.08:
        side = "central"
    else:
        side = "left" if cx > 0.5 else "right"
    return {"area_fraction": float(len(xs) / size / size), "zone": f"{vert}-{side}",
            "centroid": (float(cx), float(cy))}


# ----------------------------------------------------------------------------- make_phantoms
def _rate(name, value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DollError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not (0.0 <= v <= 1.0) or math.isnan(v):
        raise DollError(f"{name} must be in [0, 1], got {value!r}")
    return v


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def _write_bytes(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    record_written(path)  # in the output's manifest: doll replaces or deletes only files it lists
    with open(path, "wb") as fh:
        fh.write(data)


def _png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise DollError("cannot encode a PNG (OpenCV failed)")
    return buf.tobytes()


def _jpg(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise DollError("cannot encode a JPEG (OpenCV failed)")
    return buf.tobytes()


def _write_csv(path: Path, header: list[str], rows: list[list]):
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    with atomic_path(path) as tmp:  # listed in the manifest; a killed run leaves no stray file
        tmp.write_text(buf.getvalue(), encoding="utf-8")


@dataclass
class _Plan:
    """Who is imaged: ``studies`` = [(patient, study number)], the validation patients, sex and age."""

    studies: list
    n_pat: int
    valid_pat: set
    sex: dict
    age: dict


def _plan_studies(prng: np.random.Generator, n: int, valid_fraction: float) -> _Plan:
    """``n`` studies (a quarter of the patients have two) and ``valid_fraction`` of the patients held out."""
    studies = []  # (patient index, study number)
    pi = 0
    while len(studies) < n:
        pi += 1
        k = 2 if prng.random() < 0.25 else 1
        for s in range(1, min(k, n - len(studies)) + 1):
            studies.append((pi, s))
    n_pat = pi
    n_valid = int(round(valid_fraction * n_pat))
    if valid_fraction > 0:
        n_valid = max(1, n_valid)
    n_valid = min(n_valid, n_pat - 1)
    valid_pat = set((prng.permutation(n_pat)[:n_valid] + 1).tolist())
    sex = {p: ("Male" if prng.random() < 0.5 else "Female") for p in range(1, n_pat + 1)}
    age = {p: int(prng.integers(18, 91)) for p in range(1, n_pat + 1)}
    return _Plan(studies, n_pat, valid_pat, sex, age)


def _label_values(drawn: dict, flips: np.ndarray, split: str, noise: float, uncertain: float,
                  blank: float) -> list[str]:
    """One image's CSV label per finding: the truth, and in train flipped (``noise``),
    uncertain ("-1.0") or, for a negative, blank, as ``flips`` (3 x findings uniforms) say."""
    labels = []
    for i, f in enumerate(FINDINGS):
        t = 1.0 if drawn[f] else 0.0
        if split == "train":
            if flips[0, i] < noise:
                t = 1.0 - t
            if flips[1, i] < uncertain:
                v = "-1.0"
            elif t == 0.0 and flips[2, i] < blank:
                v = ""
            else:
                v = _fmt(t)
        else:
            v = _fmt(t)
        labels.append(v)
    return labels


def _write_chexpert(out: Path, prng: np.random.Generator, img_ss: np.random.SeedSequence, plan: _Plan,
                    size: int, noise: float, uncertain: float, blank: float, confound: float, bar) -> dict:
    """The CheXpert part (images, train/valid CSVs) and ``findings/`` (masks, ground truth,
    chest tubes); returns the tallies for the summary."""
    n = len(plan.studies)
    rows = {"train": [], "valid": []}
    gt_rows, tube_rows = [], []
    tally = {"counts": {sp: {f: 0 for f in FINDINGS} for sp in ("train", "valid")},
             "images": {"train": 0, "valid": 0}, "no_finding": {"train": 0, "valid": 0},
             "chest_tubes": {"pneumothorax": 0, "other": 0},
             "label_values": {v: 0 for v in ("1.0", "0.0", "-1.0", "")}}
    child = img_ss.spawn(n)
    cx_root = out / CHEXPERT_DIRNAME
    for idx, (p, s) in enumerate(plan.studies):
        split = "valid" if p in plan.valid_pat else "train"
        u = prng.random(len(FINDINGS))
        drawn = _sample_findings(u)
        tube_u = prng.random()
        tube = bool(confound > 0 and tube_u < (confound if drawn["Pneumothorax"] else 0.05))
        flips = prng.random((3, len(FINDINGS)))
        ap = "AP" if prng.random() < 0.6 else "PA"
        rel = f"{split}/patient{p:05d}/study{s}/view1_frontal.jpg"
        path = f"{CHEXPERT_DIRNAME}/{rel}"
        img, _, fm, meta = render_case(np.random.default_rng(child[idx]), size, drawn, chest_tube=tube)
        tube_rows.append([path, int(tube)])
        _write_bytes(cx_root / rel, _jpg(img))
        for f, m in fm.items():
            _write_bytes(out / "findings" / "masks" / f / Path(rel).with_suffix(".png"), _png(m * 255))
            d = meta["findings"][f]
            gt_rows.append([path, f, f"{d['area_fraction']:.6f}", d["zone"], f"{d['centroid'][0]:.4f}",
                            f"{d['centroid'][1]:.4f}", int(tube)])
        labels = _label_values(drawn, flips, split, noise, uncertain, blank)
        for f, v in zip(FINDINGS, labels):
            tally["label_values"][v] += 1
            tally["counts"][split][f] += int(drawn[f])
        nf = not any(drawn[f] for f in FINDINGS if f != "Support Devices")
        tally["no_finding"][split] += int(nf)
        tally["images"][split] += 1
        if tube:
            tally["chest_tubes"]["pneumothorax" if drawn["Pneumothorax"] else "other"] += 1
        rows[split].append([path, plan.sex[p], plan.age[p] + (s - 1), "Frontal", ap, "1.0" if nf else "0.0", *labels])
        if bar:
            bar.update(1)
    _write_csv(cx_root / "train.csv", CSV_HEADER, rows["train"])
    _write_csv(cx_root / "valid.csv", CSV_HEADER, rows["valid"])
    _write_csv(out / "findings" / "ground_truth.csv", GT_HEADER, gt_rows)
    _write_csv(out / "findings" / "chest_tubes.csv", ["Path", "chest_tube"], tube_rows)  # every image, findings or not
    return tally


def _write_anatomy(out: Path, anat_ss: np.random.SeedSequence, size: int, n_anatomy: int, bar) -> tuple[int, int]:
    """The JSRT/SCR-like ``anatomy/`` part (JPCLN* with a lung lesion, JPCNN* without);
    returns ``(with lesion, without)``."""
    arng = np.random.default_rng(anat_ss)
    n_ln = n_nn = 0
    for _ in range(n_anatomy):
        img, anat, fm, _ = render_case(arng, size)
        if "Lung Lesion" in fm:
            n_ln += 1
            name = f"JPCLN{n_ln:03d}.png"
        else:
            n_nn += 1
            name = f"JPCNN{n_nn:03d}.png"
        _write_bytes(out / "anatomy" / "images" / name, _png(img))
        for st in JSRT_STRUCTURES:
            _write_bytes(out / "anatomy" / "masks" / st / name, _png(anat[st] * 255))
        if bar:
            bar.update(1)
    return n_ln, n_nn


def _summary(plan: _Plan, tally: dict, n_anatomy: int, n_ln: int, n_nn: int) -> dict:
    """The ``summary`` of ``phantom.json`` (and of :func:`make_phantoms`)."""
    n = len(plan.studies)
    counts = tally["counts"]
    total = {f: counts["train"][f] + counts["valid"][f] for f in FINDINGS}
    return {
        "images": dict(tally["images"]),
        "patients": {"train": plan.n_pat - len(plan.valid_pat), "valid": len(plan.valid_pat)},
        "studies_with_2": sum(1 for _, s in plan.studies if s == 2),
        "anatomy": {"images": n_anatomy, "with_lesion": n_ln, "without_lesion": n_nn},
        "counts": {"train": counts["train"], "valid": counts["valid"], "all": total},
        "prevalence": {f: round(total[f] / n, 4) for f in FINDINGS},
        "no_finding": dict(tally["no_finding"]),
        "chest_tubes": tally["chest_tubes"],
        "label_values": {("blank" if k == "" else k): v for k, v in tally["label_values"].items()},
    }


def _progress_bar(total: int, progress: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc="phantoms", unit="img", disable=not progress)


@releases_outputs
def make_phantoms(out, n=200, size=64, seed=0, n_anatomy=None, noise=0.05, uncertain=0.05, blank=0.1,
                  confound=0.0, valid_fraction=0.2, progress=True, overwrite=True) -> dict:
    """Write a phantom data set under ``out`` and return its summary.

    Layout: ``phantom.json`` (written last: a folder without it is an incomplete
    run), ``CheXpert-v1.0-phantom/{train,valid}.csv`` + JPEG images,
    ``findings/masks/<finding>/<split>/<patient>/<study>/view1_frontal.png``,
    ``findings/ground_truth.csv`` (a row per drawn finding), ``findings/chest_tubes.csv``
    (a row per image) and ``anatomy/{images,masks/<structure>}/JPC*.png``.
    Existing ``CheXpert-v1.0-phantom``, ``findings`` and ``anatomy`` folders under
    ``out`` are replaced, or, with ``overwrite=False`` (the CLI's default), refused.

    The parts: :func:`_plan_studies`, :func:`_write_chexpert`, :func:`_write_anatomy`
    and :func:`_summary`.
    """
    try:
        n, size, seed = int(n), int(size), int(seed)
    except (TypeError, ValueError):
        raise DollError(f"n, size and seed must be integers, got n={n!r}, size={size!r}, seed={seed!r}") from None
    if n < 4:
        raise DollError(f"phantom needs at least 4 images (n >= 4), got n={n}")
    if size < 32:
        raise DollError(f"phantom size must be at least 32 pixels, got {size}")
    if seed < 0:
        raise DollError(f"seed must be a non-negative integer, got {seed}")
    noise, uncertain, blank = _rate("noise", noise), _rate("uncertain", uncertain), _rate("blank", blank)
    confound, valid_fraction = _rate("confound", confound), _rate("valid_fraction", valid_fraction)
    if n_anatomy is None:
        n_anatomy = max(20, n // 2)
    n_anatomy = int(n_anatomy)
    if n_anatomy < 0:
        raise DollError(f"n_anatomy must be >= 0, got {n_anatomy}")

    # only what an earlier `doll data phantom` wrote there is replaced (its manifest lists it)
    out = prepare_out_dir(Path(out).expanduser(), overwrite=overwrite, command="data phantom",
                          holds="a phantom data set")
    meta_path = out / "phantom.json"

    ss = np.random.SeedSequence([seed, PHANTOM_VERSION])
    plan_ss, img_ss, anat_ss = ss.spawn(3)
    prng = np.random.default_rng(plan_ss)
    plan = _plan_studies(prng, n, valid_fraction)
    bar = _progress_bar(n + n_anatomy, progress)
    tally = _write_chexpert(out, prng, img_ss, plan, size, noise, uncertain, blank, confound, bar)
    n_ln, n_nn = _write_anatomy(out, anat_ss, size, n_anatomy, bar)
    if bar:
        bar.close()

    summary = _summary(plan, tally, n_anatomy, n_ln, n_nn)
    doc = {"format": "doll-phantom", "version": PHANTOM_VERSION, "n": n, "size": size, "seed": seed,
           "noise": noise, "uncertain": uncertain, "blank": blank, "confound": confound,
           "valid_fraction": valid_fraction, "n_anatomy": n_anatomy,
           "classes": CHEXPERT_CLASSES, "structures": JSRT_STRUCTURES, "findings": FINDINGS,
           "chexpert_dir": CHEXPERT_DIRNAME, "summary": summary}
    with atomic_path(meta_path) as tmp:  # written last: a folder without it is an unfinished run
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return summary
