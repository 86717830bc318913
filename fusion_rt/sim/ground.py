"""Painting the road surface: one routine draws either colours (camera texture) or map codes.

`paint_ground` draws road strips, sidewalks, side roads, lane markings and crosswalks from the
road's (s, d) description through any world -> pixel affine transform. The camera renders from
a world-aligned texture window painted this way (`GroundWindow`); the map raster is painted
the same way directly onto the ego-frame map grid, so camera and map always agree.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from fusion_rt.messages import MAP_CODES
from fusion_rt.sim.world import (
    CARRIAGEWAY_HALF_M,
    CROSS_ROAD_HALF_M,
    CROSSWALK_HALF_LEN_M,
    LANE_WIDTH_M,
    PROP_POLE,
    Road,
    World,
)

__all__ = ["paint_ground", "GroundWindow", "ASPHALT_BGR"]

ASPHALT_BGR = (82, 84, 86)
_SIDEWALK_BGR = (158, 160, 160)
_KERB_BGR = (190, 190, 190)
_WHITE_BGR = (228, 228, 228)
_YELLOW_BGR = (40, 190, 225)
_SHIFT = 3  # cv2 sub-pixel bits for polygon vertices
_SCALE = float(1 << _SHIFT)


def _pts(xy: np.ndarray) -> np.ndarray:
    return np.round(xy * _SCALE).astype(np.int32)


def paint_ground(road: Road, s_lo: float, s_hi: float, affine: np.ndarray, px_per_m: float,
                 canvas: np.ndarray, labels: bool) -> None:
    """Paint the road between arc lengths [s_lo, s_hi] onto `canvas`.

    `affine` is 2x3: world (x, y, 1) -> pixel (col, row) with pixel centres at integers.
    With `labels`, values are `MAP_CODES` (canvas uint8 [H, W]); otherwise BGR colours.
    """
    s_lo = max(0.0, s_lo)
    s_hi = min(road.length_m, s_hi)
    if s_hi <= s_lo:
        return
    step = max(1.0, min(4.0, 2.0 / max(px_per_m, 1e-3)))  # finer sampling where pixels are small

    def to_px(s: np.ndarray, d: np.ndarray | float) -> np.ndarray:
        x, y, _ = road.to_world(s, np.broadcast_to(d, np.shape(s)))
        return np.stack([x, y, np.ones_like(x)], axis=-1) @ affine.T  # [..., 2]

    def val(name: str, bgr: tuple[int, int, int]):
        return int(MAP_CODES[name]) if labels else tuple(int(c) for c in bgr)

    def strip(s0: float, s1: float, d0: float, d1: float) -> np.ndarray:
        s = np.linspace(s0, s1, max(2, int(math.ceil((s1 - s0) / step)) + 1))
        return _pts(np.concatenate([to_px(s, d0), to_px(s[::-1], d1)]))

    thin = max(1, int(round(0.18 * px_per_m)))  # lane marking width
    zb = road.zone_bounds
    strips_sidewalk, strips_road, offroad = [], [], []
    for zi, spec in enumerate(road.zone_specs):
        a, b = max(s_lo, float(zb[zi])), min(s_hi, float(zb[zi + 1]))
        if b <= a:
            continue
        kerb = CARRIAGEWAY_HALF_M + spec.shoulder_m
        offroad.append((strip(a, b, -80.0, 80.0), spec.offroad_bgr))
        if spec.sidewalk_m > 0:
            strips_sidewalk.append(strip(a, b, kerb, kerb + spec.sidewalk_m))
            strips_sidewalk.append(strip(a, b, -kerb - spec.sidewalk_m, -kerb))
        strips_road.append(strip(a, b, -kerb, kerb))
    for poly, bgr in offroad:
        cv2.fillPoly(canvas, [poly], val("offroad", bgr), cv2.LINE_8, _SHIFT)
    if strips_sidewalk:
        cv2.fillPoly(canvas, strips_sidewalk, val("sidewalk", _SIDEWALK_BGR), cv2.LINE_8, _SHIFT)
    cv2.fillPoly(canvas, strips_road, val("drivable", ASPHALT_BGR), cv2.LINE_8, _SHIFT)

    # Side roads: straight 14 m strips across, 70 m out to each side.
    inter = road.intersections[(road.intersections > s_lo - 80) & (road.intersections < s_hi + 80)]
    side_roads = []
    for s_i in inter:
        x, y, h = road.centre(np.array([s_i]))
        t = np.array([math.cos(h[0]), math.sin(h[0])])
        nrm = np.array([-t[1], t[0]])
        c = np.array([x[0], y[0]])
        corners = [c + t * CROSS_ROAD_HALF_M * a + nrm * 70.0 * b for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        side_roads.append(_pts(np.c_[np.array(corners), np.ones(4)] @ affine.T))
    if side_roads:
        cv2.fillPoly(canvas, side_roads, val("drivable", ASPHALT_BGR), cv2.LINE_8, _SHIFT)

    # Markings: solid edge lines (broken at intersections), dashed lane lines, double centre line.
    def breaks(s: np.ndarray) -> np.ndarray:
        if len(road.intersections) == 0:
            return np.zeros(len(s), dtype=bool)
        return np.abs(s[:, None] - road.intersections[None, :]).min(axis=1) < CROSS_ROAD_HALF_M + 0.5

    s = np.arange(math.floor(s_lo), s_hi, step)
    if len(s) >= 2:
        gap = breaks(s)
        lines_white, lines_yellow = [], []
        for d in (-CARRIAGEWAY_HALF_M, CARRIAGEWAY_HALF_M):
            p = to_px(s, d)
            for run in np.split(np.arange(len(s)), np.flatnonzero(np.diff(gap.astype(np.int8))) + 1):
                if len(run) >= 2 and not gap[run[0]]:
                    lines_white.append(_pts(p[run]))
        for d in (-0.2, 0.2):
            p = to_px(s, d)
            for run in np.split(np.arange(len(s)), np.flatnonzero(np.diff(gap.astype(np.int8))) + 1):
                if len(run) >= 2 and not gap[run[0]]:
                    lines_yellow.append(_pts(p[run]))
        # Dashes: 3 m painted every 9 m.
        d0 = math.ceil(s_lo / 9.0) * 9.0
        starts = np.arange(d0, s_hi - 3.0, 9.0)
        starts = starts[~breaks(starts) & ~breaks(starts + 3.0)]
        for d in (-LANE_WIDTH_M, LANE_WIDTH_M):
            if len(starts):
                seg = np.stack([to_px(starts, d), to_px(starts + 3.0, d)], axis=1)  # [K, 2, 2]
                lines_white.extend(list(_pts(seg)))
        cv2.polylines(canvas, lines_white, False, val("lane_marking", _WHITE_BGR), thin,
                      cv2.LINE_8 if labels else cv2.LINE_AA, _SHIFT)
        cv2.polylines(canvas, lines_yellow, False, val("lane_marking", _YELLOW_BGR), thin,
                      cv2.LINE_8 if labels else cv2.LINE_AA, _SHIFT)

    # Crosswalks: the whole band is "crosswalk" on the map; the camera sees zebra stripes.
    cws = road.crosswalks[(road.crosswalks > s_lo - 5) & (road.crosswalks < s_hi + 5)]
    for s_c in cws:
        kerb = float(road.kerb_d(s_c))
        if labels:
            cv2.fillPoly(canvas, [strip(s_c - CROSSWALK_HALF_LEN_M, s_c + CROSSWALK_HALF_LEN_M, -kerb, kerb)],
                         val("crosswalk", _WHITE_BGR), cv2.LINE_8, _SHIFT)
        else:
            stripes = [strip(s_c - CROSSWALK_HALF_LEN_M, s_c + CROSSWALK_HALF_LEN_M, d, d + 0.5)
                       for d in np.arange(-kerb + 0.25, kerb - 0.4, 1.0)]
            cv2.fillPoly(canvas, stripes, val("crosswalk", _WHITE_BGR), cv2.LINE_AA, _SHIFT)


class GroundWindow:
    """A square world-aligned texture around the ego: BGR albedo + street-lamp light (uint8 x4).

    Re-painted only when a query leaves the area it covers (every ~50 m of driving), so the
    per-frame cost of the ground is one `cv2.remap`.
    """

    def __init__(self, world: World, size_m: float = 360.0, res_m: float = 0.25):
        self.world = world
        self.res_m = res_m
        self.n = int(round(size_m / res_m))
        self.size_m = self.n * res_m
        self.origin: tuple[float, float] | None = None  # world (x_left, y_top)
        self.texture = np.zeros((self.n, self.n, 4), np.uint8)
        self._grain = _grain_tile(256)

    def covers(self, xs: np.ndarray, ys: np.ndarray, margin_m: float = 0.0) -> bool:
        if self.origin is None:
            return False
        x0, y0 = self.origin
        return bool(xs.min() >= x0 + margin_m and xs.max() <= x0 + self.size_m - margin_m
                    and ys.max() <= y0 - margin_m and ys.min() >= y0 - self.size_m + margin_m)

    def ensure(self, centre_x: float, centre_y: float, xs: np.ndarray, ys: np.ndarray, ego_s: float) -> None:
        """Make the window cover points (xs, ys); if it does not, re-centre it on (centre_x, centre_y)."""
        if self.covers(xs, ys):
            return
        res = self.res_m
        # Snap the origin to the texel grid so the grain pattern stays fixed to the world.
        x0 = math.floor((centre_x - self.size_m / 2) / res) * res
        y0 = math.floor((centre_y + self.size_m / 2) / res) * res
        self.origin = (x0, y0)
        affine = np.array([[1.0 / res, 0.0, -x0 / res - 0.5], [0.0, -1.0 / res, y0 / res - 0.5]])
        bgr = np.empty((self.n, self.n, 3), np.uint8)
        bgr[:] = (100, 110, 110)
        reach = self.size_m * 0.75
        paint_ground(self.world.road, ego_s - reach, ego_s + reach, affine, 1.0 / res, bgr, labels=False)
        # Fine asphalt/grass grain, fixed to world texels.
        i0, j0 = int(round(-y0 / res)), int(round(x0 / res))
        g = self._grain
        rows = np.mod(np.arange(self.n) + i0, g.shape[0])
        cols = np.mod(np.arange(self.n) + j0, g.shape[1])
        grain = g[rows][:, cols]
        self.texture[..., :3] = np.clip(bgr.astype(np.int16) + grain[..., None], 0, 255).astype(np.uint8)
        # Street-lamp light pools (used at night): Gaussian blobs of ~7 m radius.
        # Painted at 1 m per texel and blurred there: the pools are smooth, no need for more.
        q = int(round(1.0 / res))
        nq = self.n // q
        light = np.zeros((nq, nq), np.float32)
        pr = self.world.props
        lamps = pr.kind == PROP_POLE
        px = (pr.x[lamps] - x0) / (res * q)
        py = (y0 - pr.y[lamps]) / (res * q)
        inside = (px > -20) & (px < nq + 20) & (py > -20) & (py < nq + 20)
        for cx, cy in zip(px[inside], py[inside], strict=True):
            cv2.circle(light, (int(round(cx)), int(round(cy))), 4, 1.0, -1)
        light = cv2.GaussianBlur(light, (0, 0), 4.0)
        light = cv2.resize(light, (self.n, self.n), interpolation=cv2.INTER_LINEAR)
        self.texture[..., 3] = np.clip(light * 255.0 * 1.6, 0, 255).astype(np.uint8)

    def texel_maps(self, wx: np.ndarray, wy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World coordinates -> float32 texel maps for cv2.remap."""
        x0, y0 = self.origin
        return ((wx - x0) / self.res_m - 0.5).astype(np.float32), ((y0 - wy) / self.res_m - 0.5).astype(np.float32)


def _grain_tile(n: int) -> np.ndarray:
    """A fixed (seed-independent) tile of soft grain in [-7, 7] grey levels as int16."""
    rng = np.random.default_rng(1234)
    g = rng.normal(0.0, 6.0, (n, n)).astype(np.float32)
    g = cv2.GaussianBlur(g, (0, 0), 0.8)
    return np.clip(g, -12, 12).astype(np.int16)
