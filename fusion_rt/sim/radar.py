"""Radar simulation: the world state -> a range-azimuth tensor and CFAR detections.

Each agent is a set of point scatterers (vehicles: points along the box sides that face the
radar, so extended objects spread over several cells; pedestrians and cyclists: a body point
plus a micro-Doppler point for limbs or wheels). Static clutter comes from props (lamp posts,
guard-rail and median segments, cones, barriers, bins) and parked vehicles; multipath ghosts
are a double-bounce copy of vehicles at twice the range and twice the radial velocity, and on
highways a mirror image of vehicles across the guard rail and the median barrier.

Received power follows the radar equation in dB: RCS - 40 log10(R) + a system constant + the
antenna pattern; each scatterer fluctuates per frame (Swerling 1: exponential power), scatterers
behind a nearer vehicle are shadowed, and the point-spread function (Gaussian main lobe plus a
low sidelobe pedestal) spreads each over neighbouring bins. The noise floor is exponential
(speckle), with extra ground clutter at short range. Radar ignores night and fog; rain adds
1 dB of noise and two-way attenuation.

Detections come from a vectorised 2-D smallest-of cell-averaging CFAR on linear power
(azimuth sums via `cv2.boxFilter`, leading/lagging range bands via cumulative sums), kept at
local maxima and refined to sub-bin positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fusion_rt.rig import Rig
from fusion_rt.sim.world import (
    AGENT_PEDESTRIAN,
    AGENT_TRUCK,
    EGO_LANE_D_M,
    PROP_MEDIAN,
    PROP_RAIL,
    PROP_RCS_DBSM,
    PROP_SIZE,
    World,
    WorldState,
)

__all__ = ["RadarSimulator", "RadarFrame", "cfar_detect", "CLASS_RCS_DBSM", "SYSTEM_CONSTANT_DB"]

#: Radar cross-section of each agent class (car, truck, pedestrian, cyclist), dBsm, at 77 GHz, seen
#: end-on; pedestrians and cyclists gain up to 1.5 / 6 dB side-on.
CLASS_RCS_DBSM = np.array([10.0, 20.0, -6.5, -5.0])
#: Received power (dB over the noise floor) of a 0 dBsm target at 1 m on boresight.
SYSTEM_CONSTANT_DB = 90.0
_PSF_SIGMA_RANGE_BINS = 0.6
_PSF_SIGMA_AZ_BINS = 0.75
_SIDELOBE_LEVEL = 0.004  # -24 dB pedestal
_SIDELOBE_SIGMA_AZ_BINS = 5.0
_ANTENNA_EDGE_LOSS_DB = 10.0  # two-way gain loss at the edge of the field of view
_VEL_NOISE_MPS = 0.08
_V_AMBIGUITY_MPS = 40.0
_SHADOW_DB = 20.0  # a scatterer behind a vehicle still leaks some energy (diffraction, multipath under it)
_GHOST_DOUBLE_BOUNCE_DB = -18.0
_GHOST_MIRROR_DB = -9.0
_RAIN_NOISE_DB = 1.0
_RAIN_ATTEN_DB_PER_M = 0.01  # two-way
# CFAR: training and guard half-sizes in (range, azimuth) bins; threshold factor over the mean.
CFAR_TRAIN = (8, 5)
CFAR_GUARD = (2, 2)
CFAR_ALPHA_DB = 12.5
CFAR_MIN_SNR_DB = 11.0  # absolute floor: nothing weaker than this over the noise floor is reported


@dataclass(frozen=True)
class RadarFrame:
    """One simulated radar measurement."""

    tensor: np.ndarray  # [2, range_bins, azimuth_bins] float32: power_db, radial_velocity_mps
    points: np.ndarray  # [N, 5] float32 detections: x, y, z (radar frame), radial velocity, rcs


class RadarSimulator:
    """Renders `WorldState`s for the rig's radar."""

    def __init__(self, rig: Rig, world: World):
        self.radar = rig.radar
        self.world = world
        self.pos = rig.radar.pose.translation()
        self.yaw = rig.radar.pose.yaw
        self.r_centres = self.radar.range_centres()
        self.a_centres = self.radar.azimuth_centres()
        self.r_res = self.radar.range_resolution_m
        self.a_res = self.radar.azimuth_resolution_rad
        na = self.radar.num_azimuth_bins
        # Near-range ground clutter raises the floor in the first metres.
        self.floor = (1.0 + 6.0 * np.exp(-self.r_centres / 3.0))[:, None] * np.ones((1, na))

    def simulate(self, st: WorldState, rng: np.random.Generator) -> RadarFrame:
        x, y, v, pw = self._scatterers(st, rng)  # radar frame, radial velocity, linear power
        floor = self.floor * (10 ** (_RAIN_NOISE_DB / 10) if st.condition == "rain" else 1.0)
        nr, na = floor.shape
        noise = floor * rng.exponential(1.0, (nr, na))
        if len(x):
            r = np.hypot(x, y)
            az = np.arctan2(y, x)
            ri = (r - self.radar.range_min_m) / self.r_res - 0.5  # fractional bin index
            ai = (az + self.radar.azimuth_max_rad) / self.a_res - 0.5
            # Exponents are floored at -40: underflowing into subnormals makes exp ~10x slower.
            dr = np.arange(nr)[None, :] - ri[:, None]
            gr = np.exp(np.maximum(-0.5 * (dr / _PSF_SIGMA_RANGE_BINS) ** 2, -40.0))  # [K, R]
            da = np.arange(na)[None, :] - ai[:, None]
            ga = (np.exp(np.maximum(-0.5 * (da / _PSF_SIGMA_AZ_BINS) ** 2, -40.0))
                  + _SIDELOBE_LEVEL * np.exp(np.maximum(-0.5 * (da / _SIDELOBE_SIGMA_AZ_BINS) ** 2, -40.0)))
            sig = (gr * pw[:, None]).T @ ga  # [R, A]
            sig_v = (gr * (pw * v)[:, None]).T @ ga
        else:
            sig = np.zeros((nr, na))
            sig_v = np.zeros((nr, na))
        total = sig + noise
        v_noise = rng.uniform(-_V_AMBIGUITY_MPS, _V_AMBIGUITY_MPS, (nr, na))
        vel = (sig_v + noise * v_noise) / total + rng.normal(0.0, _VEL_NOISE_MPS, (nr, na))
        tensor = np.stack([10.0 * np.log10(total), vel]).astype(np.float32)
        return RadarFrame(tensor=tensor, points=cfar_detect(tensor, self.radar))

    # ------------------------------------------------------------------------------------------
    def _scatterers(self, st: WorldState, rng: np.random.Generator):
        """All point scatterers: x, y in the radar frame, radial velocity, linear received power."""
        xs, ys, vxs, vys, rcs, owner = [], [], [], [], [], []
        ax, ay, yaw = st.agent_x, st.agent_y, st.agent_yaw
        near = (ax > self.pos[0] - 2.0) & (ax < self.pos[0] + self.radar.range_max_m + 5.0)
        cls = st.agent_cls
        veh = near & (cls <= AGENT_TRUCK)
        # Vehicles: 4 points on each side of the footprint that faces the radar.
        if veh.any():
            i = np.flatnonzero(veh)
            c, s = np.cos(yaw[i]), np.sin(yaw[i])
            hl, hw = st.agent_len[i] / 2, st.agent_wid[i] / 2
            lx = np.array([1, -1, -1, 1]) * hl[:, None]  # corners, counter-clockwise
            ly = np.array([1, 1, -1, -1]) * hw[:, None]
            cx = ax[i, None] + c[:, None] * lx - s[:, None] * ly
            cy = ay[i, None] + s[:, None] * lx + c[:, None] * ly
            ex, ey = np.roll(cx, -1, axis=1), np.roll(cy, -1, axis=1)
            mx, my = (cx + ex) / 2, (cy + ey) / 2
            nx, ny = ey - cy, -(ex - cx)  # outward normals of a counter-clockwise polygon
            facing = nx * (mx - self.pos[0]) + ny * (my - self.pos[1]) < 0  # [V, 4]
            fr = np.array([0.08, 0.36, 0.64, 0.92])
            px = cx[:, :, None] + (ex - cx)[:, :, None] * fr  # [V, 4 edges, 4 points]
            py = cy[:, :, None] + (ey - cy)[:, :, None] * fr
            m = np.broadcast_to(facing[:, :, None], px.shape)
            k = m.sum(axis=(1, 2))
            share = CLASS_RCS_DBSM[cls[i]] - 10 * np.log10(np.maximum(k, 1))
            own = np.broadcast_to(i[:, None, None], px.shape)
            xs.append(px[m]), ys.append(py[m])
            vxs.append(np.broadcast_to(st.agent_vx[i, None, None], px.shape)[m])
            vys.append(np.broadcast_to(st.agent_vy[i, None, None], px.shape)[m])
            rcs.append(np.broadcast_to(share[:, None, None], px.shape)[m] + rng.normal(0, 2.0, int(m.sum())))
            owner.append(own[m])
        # Vulnerable road users: a body point and a micro-Doppler point (limbs / wheels).
        vru = near & (cls >= AGENT_PEDESTRIAN)
        if vru.any():
            i = np.flatnonzero(vru)
            speed = np.hypot(st.agent_vx[i], st.agent_vy[i])
            dirx = np.where(speed > 0.05, st.agent_vx[i] / np.maximum(speed, 1e-6), np.cos(yaw[i]))
            diry = np.where(speed > 0.05, st.agent_vy[i] / np.maximum(speed, 1e-6), np.sin(yaw[i]))
            ped = cls[i] == AGENT_PEDESTRIAN
            # Limbs swing at up to ~2x body speed plus a little when standing; wheel tops at 2x.
            micro = np.where(ped, rng.uniform(-1.0, 1.0, len(i)) * (0.8 * speed + 0.3),
                             rng.uniform(-1.0, 1.0, len(i)) * speed)
            # Aspect dependence: a bicycle seen end-on (the usual view, along the road) is hardly
            # bigger than a pedestrian; side-on its frame and wheels add up to ~+6 dB.
            los = np.arctan2(ay[i] - self.pos[1], ax[i] - self.pos[0])
            side_on = np.abs(np.sin(yaw[i] - los))
            base = CLASS_RCS_DBSM[cls[i]] + np.where(ped, 1.5 * side_on, 6.0 * side_on)
            xs += [ax[i], ax[i] + 0.1 * dirx]
            ys += [ay[i], ay[i] + 0.1 * diry]
            vxs += [st.agent_vx[i], st.agent_vx[i] + micro * dirx]
            vys += [st.agent_vy[i], st.agent_vy[i] + micro * diry]
            rcs += [base - 1.0 + rng.normal(0, 1.5, len(i)), base - 5.0 + rng.normal(0, 1.5, len(i))]
            owner += [i, i]
        # Props: lamp posts, cones, barriers, bins: one point; rail/median segments: two.
        pk = st.prop_kind
        pm = (st.prop_x > self.pos[0] - 2.0) & (st.prop_x < self.pos[0] + self.radar.range_max_m + 5.0)
        if pm.any():
            k = pk[pm]
            seg = (k == PROP_RAIL) | (k == PROP_MEDIAN)
            hx = np.where(seg, PROP_SIZE[k, 0] / 2 - 0.5, 0.0)
            for sgn in (-1.0, 1.0):
                keep = seg | (sgn > 0)
                xs.append((st.prop_x[pm] + sgn * hx * np.cos(st.prop_yaw[pm]))[keep])
                ys.append((st.prop_y[pm] + sgn * hx * np.sin(st.prop_yaw[pm]))[keep])
                vxs.append(np.zeros(int(keep.sum())))
                vys.append(np.zeros(int(keep.sum())))
                rcs.append(PROP_RCS_DBSM[k[keep]] + rng.normal(0, 2.0, int(keep.sum())))
                owner.append(np.full(int(keep.sum()), -1))
        if not xs:
            return np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0)
        x = np.concatenate(xs) - self.pos[0]
        y = np.concatenate(ys) - self.pos[1]
        vx = np.concatenate(vxs)
        vy = np.concatenate(vys)
        rcs_db = np.concatenate(rcs)
        own = np.concatenate(owner)

        # Multipath ghosts of vehicles.
        gx, gy, gvx, gvy, gdb = [], [], [], [], []
        vi = np.flatnonzero(veh)
        if vi.size:
            cxr, cyr = ax[vi] - self.pos[0], ay[vi] - self.pos[1]
            total = CLASS_RCS_DBSM[cls[vi]]
            # Double bounce (target -> ego bumper -> target -> radar): same bearing, twice the range.
            gx.append(2 * cxr), gy.append(2 * cyr)
            gvx.append(2 * st.agent_vx[vi] - st.ego_speed), gvy.append(2 * st.agent_vy[vi])
            # Equivalent RCS at 2R such that the echo is _GHOST_DOUBLE_BOUNCE_DB under the direct one.
            gdb.append(total + _GHOST_DOUBLE_BOUNCE_DB + 40 * np.log10(2.0))
            if st.rail_d > 0:  # mirror images across the right guard rail and the median barrier
                for wall_d in (-st.rail_d, 0.0):
                    my = 2 * (wall_d - EGO_LANE_D_M) - (ay[vi])  # ego-frame mirror (straight-road approximation)
                    gx.append(cxr), gy.append(my - self.pos[1])
                    gvx.append(st.agent_vx[vi]), gvy.append(-st.agent_vy[vi])
                    gdb.append(total + _GHOST_MIRROR_DB)
        if gx:
            x = np.concatenate([x] + gx)
            y = np.concatenate([y] + gy)
            vx = np.concatenate([vx] + gvx)
            vy = np.concatenate([vy] + gvy)
            rcs_db = np.concatenate([rcs_db] + gdb)
            own = np.concatenate([own] + [np.full(len(g), -2) for g in gx])

        r = np.hypot(x, y)
        az = np.arctan2(y, x) - self.yaw
        inside = ((r > self.radar.range_min_m) & (r < self.radar.range_max_m + 1.0)
                  & (np.abs(az) < self.radar.azimuth_max_rad + 0.03))
        x, y, vx, vy, rcs_db, own, r, az = (a[inside] for a in (x, y, vx, vy, rcs_db, own, r, az))

        # Shadowing by nearer vehicles.
        if vi.size and len(x):
            c, s = np.cos(yaw[vi]), np.sin(yaw[vi])
            hl, hw = st.agent_len[vi] / 2, st.agent_wid[vi] / 2
            lx = np.array([1, -1, -1, 1]) * hl[:, None]
            ly = np.array([1, 1, -1, -1]) * hw[:, None]
            cxs = ax[vi, None] + c[:, None] * lx - s[:, None] * ly - self.pos[0]
            cys = ay[vi, None] + s[:, None] * lx + c[:, None] * ly - self.pos[1]
            caz = np.arctan2(cys, cxs)
            amin, amax = caz.min(axis=1), caz.max(axis=1)
            rmin = np.hypot(cxs, cys).min(axis=1)
            behind = ((az[:, None] > amin[None] + 0.01) & (az[:, None] < amax[None] - 0.01)
                      & (r[:, None] > rmin[None] + 1.0) & (own[:, None] != vi[None]))
            rcs_db = rcs_db - _SHADOW_DB * behind.any(axis=1)

        # Radial velocity relative to the moving radar (positive = moving away).
        vrx = st.ego_speed
        vry = st.ego_yaw_rate * self.pos[0]
        ux, uy = x / np.maximum(r, 1e-6), y / np.maximum(r, 1e-6)
        vrad = (vx - vrx) * ux + (vy - vry) * uy
        p_db = rcs_db - 40.0 * np.log10(np.maximum(r, 0.5)) + SYSTEM_CONSTANT_DB
        p_db -= _ANTENNA_EDGE_LOSS_DB * (az / self.radar.azimuth_max_rad) ** 2
        if st.condition == "rain":
            p_db -= _RAIN_ATTEN_DB_PER_M * r
        pw = 10 ** (p_db / 10) * rng.exponential(1.0, len(p_db))  # Swerling 1 fluctuation
        return x, y, vrad, pw


def cfar_detect(tensor: np.ndarray, radar) -> np.ndarray:
    """2-D smallest-of cell-averaging CFAR on the power channel; local maxima only. Returns [N, 5] float32.

    Columns: x, y, z (radar frame; z = 0), radial velocity, RCS estimate (dBsm).
    """
    p_db = tensor[0].astype(np.float32)
    p = np.power(10.0, p_db / 10.0).astype(np.float32)
    (tr, ta), (gr, _) = CFAR_TRAIN, CFAR_GUARD  # the azimuth guard is the local-maximum test
    # Smallest-of CA-CFAR along range: the noise estimate is the lower of the leading and the
    # lagging training bands (each 2*ta+1 azimuth bins wide), so a strong neighbour or a clutter
    # edge on one side does not mask a target.
    band = cv2.boxFilter(p, -1, (2 * ta + 1, 1), normalize=False, borderType=cv2.BORDER_REFLECT)  # azimuth sums
    nr, na = p.shape
    padded = np.pad(band, ((tr + 1, tr + 1), (0, 0)), mode="reflect")
    cs = np.cumsum(padded, axis=0, dtype=np.float64)
    i0 = np.arange(nr) + tr + 1  # row of each cell in the padded array
    lead = cs[i0 - gr - 1] - cs[i0 - tr - 1]
    lag = cs[i0 + tr] - cs[i0 + gr]
    n_half = (tr - gr) * (2 * ta + 1)
    noise = np.maximum(np.minimum(lead, lag) / n_half, 1e-6).astype(np.float32)
    peak = p >= cv2.dilate(p, np.ones((3, 3), np.uint8))
    hit = peak & (p > noise * 10 ** (CFAR_ALPHA_DB / 10)) & (p_db > CFAR_MIN_SNR_DB)
    i, j = np.nonzero(hit)
    if i.size == 0:
        return np.zeros((0, 5), np.float32)
    # Parabolic sub-bin refinement in dB.
    def _offset(lo: np.ndarray, mid: np.ndarray, hi: np.ndarray) -> np.ndarray:
        den = lo - 2 * mid + hi
        ok = np.abs(den) > 1e-6
        return np.where(ok, np.clip(0.5 * (lo - hi) / np.where(ok, den, 1.0), -0.5, 0.5), 0.0)

    di = _offset(p_db[np.maximum(i - 1, 0), j], p_db[i, j], p_db[np.minimum(i + 1, nr - 1), j])
    dj = _offset(p_db[i, np.maximum(j - 1, 0)], p_db[i, j], p_db[i, np.minimum(j + 1, na - 1)])
    r = radar.range_min_m + (i + 0.5 + di) * radar.range_resolution_m
    az = -radar.azimuth_max_rad + (j + 0.5 + dj) * radar.azimuth_resolution_rad
    rcs = (p_db[i, j] - SYSTEM_CONSTANT_DB + 40.0 * np.log10(r)
           + _ANTENNA_EDGE_LOSS_DB * (az / radar.azimuth_max_rad) ** 2)
    pts = np.stack([r * np.cos(az), r * np.sin(az), np.zeros_like(r), tensor[1][i, j], rcs], axis=1)
    return pts.astype(np.float32)
