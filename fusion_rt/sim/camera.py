"""Camera rendering: the world state -> a BGR image, and which agents the image really shows.

Pipeline per frame (all vectorised; the only Python loop is one `cv2.fillConvexPoly` per
visible box face):
1. Ground: every pixel below the horizon has a fixed ground point in the ego frame (flat world,
   rigid camera), precomputed once; per frame those points move to world coordinates with the
   ego pose and one `cv2.remap` samples the painted `GroundWindow` texture (albedo + lamp light).
2. Objects (agents and props) are boxes (cars: body, cabin with dark windows, wheels, lights;
   trucks: cab, cargo box; pedestrians: legs, torso, head; cyclists: bike frame and projected
   wheel circles, rider, helmet) drawn far-to-near, so nearer objects occlude farther ones. Each
   face is also drawn into an object-id buffer and lights into an emissive buffer.
3. Condition: night = ambient 0.05 + headlight beam + street lamps + emissive lights with glow
   + sensor noise; fog = blend to the fog colour with exp(-distance / visibility); rain =
   darker, haze, streaks, blur.
4. Visibility: from the rendered pixels. An agent is `visible_camera` when enough of its
   pixels survive occlusion and their noise-free luminance after the condition differs from
   the background there (or its lights are visibly lit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from fusion_rt.rig import Rig
from fusion_rt.sim.ground import GroundWindow
from fusion_rt.sim.world import (
    AGENT_CAR,
    AGENT_CYCLIST,
    AGENT_PEDESTRIAN,
    AGENT_TRUCK,
    PROP_BARRIER,
    PROP_BGR,
    PROP_BIN,
    PROP_CONE,
    PROP_MEDIAN,
    PROP_POLE,
    PROP_RAIL,
    PROP_SIZE,
    World,
    WorldState,
)

__all__ = ["CameraRenderer", "CameraRender", "FOG_VISIBILITY_M", "VISIBLE_MIN_CONTRAST", "VISIBLE_MIN_PIXELS"]

FOG_VISIBILITY_M = 20.0  # e-folding distance of contrast: a black object fades below 5 % contrast at ~60 m (dense fog)
_RAIN_VISIBILITY_M = 220.0  # rain haze: a mild loss of contrast with distance
_FOG_LEVEL = 196.0  # grey level of the fog
_RAIN_HAZE_LEVEL = 150.0
_NIGHT_AMBIENT = 0.05  # moon and sky glow, relative to daylight
_NIGHT_NOISE_SIGMA = 6.0  # grey levels: high gain in the dark
_DAY_NOISE_SIGMA = 1.5
_RAIN_GAIN = 0.72
_HEADLIGHT_RANGE_M = 20.0  # beam intensity falls as 1 / (1 + (r / range)^2): useful to ~40-50 m
_HEADLIGHT_HALF_ANGLE = 0.4  # radians, Gaussian width of the low beam
_LAMP_GAIN = 0.4  # peak street-lamp illumination on the ground, relative to daylight after auto-exposure
VISIBLE_MIN_PIXELS = 20  # at 640x360; scales with image area
VISIBLE_MIN_CONTRAST = 12.0  # mean |luminance difference| to the background, grey levels
_VISIBLE_MIN_LIGHT_PIXELS = 6  # a pair of lamps big enough to read as a vehicle, not a distant dot (640x360)
_NEAR_M = 0.3  # near clipping plane
_MAX_DRAW_M = 160.0

# Box corner index = 4*ix + 2*iy + iz; faces as corner cycles, with outward normals (local frame).
_FACES = np.array([[0, 2, 3, 1], [4, 6, 7, 5], [0, 4, 5, 1], [2, 6, 7, 3], [0, 4, 6, 2], [1, 5, 7, 3]])
_NORMALS = np.array([[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]], dtype=np.float64)
_SUN = np.array([0.35, 0.45, 0.82]) / np.linalg.norm([0.35, 0.45, 0.82])
_SKIN = np.array([[120, 160, 215], [90, 130, 190], [60, 90, 140], [45, 65, 100]], dtype=np.float64)

_SKY = {  # (top, horizon) BGR
    "day": ((235, 185, 130), (238, 222, 205)),
    "night": ((14, 8, 4), (38, 30, 26)),
    "fog": ((_FOG_LEVEL,) * 3, (_FOG_LEVEL,) * 3),
    "rain": ((140, 138, 132), (175, 174, 170)),
}


@dataclass(frozen=True)
class CameraRender:
    """A rendered frame and per-agent visibility, aligned with the state's agent arrays."""

    image: np.ndarray  # [H, W, 3] uint8 BGR
    visible: np.ndarray  # [A] bool
    pixels: np.ndarray  # [A] unoccluded pixel count
    contrast: np.ndarray  # [A] mean luminance difference to the background after the condition


class CameraRenderer:
    """Renders `WorldState`s for one rig camera. Holds the precomputed per-pixel ground geometry."""

    def __init__(self, rig: Rig, world: World, seed: int):
        self.cam = rig.camera
        k = self.cam.intrinsics
        self.w, self.h = k.width, k.height
        self.world = world
        self.window = GroundWindow(world)
        self.cam_pos = self.cam.pose.translation()
        area = (self.w * self.h) / (640 * 360)
        self.min_pixels = max(6, int(round(VISIBLE_MIN_PIXELS * area)))
        self.min_light_pixels = max(2, int(round(_VISIBLE_MIN_LIGHT_PIXELS * area)))

        # Ground geometry per pixel (flat ground, z = 0).
        uu, vv = np.meshgrid(np.arange(self.w) + 0.5, np.arange(self.h) + 0.5)
        rays = self.cam.ray_ego(np.stack([uu.ravel(), vv.ravel()], axis=1)).reshape(self.h, self.w, 3)
        down = rays[..., 2] < -1e-9
        # sky rays never meet the ground: a large finite distance, not inf (inf * a zero ray
        # component is NaN, masked below but warned about on stderr for odd image widths)
        t = np.where(down, -self.cam_pos[2] / np.where(down, rays[..., 2], -1.0), 1e12)
        gx = self.cam_pos[0] + t * rays[..., 0]
        ground = down & (gx - self.cam_pos[0] < 500.0)
        rows = np.flatnonzero(ground.any(axis=1))
        self.v0 = int(rows[0]) if rows.size else self.h
        sl = slice(self.v0, self.h)
        self.ground_mask = ground[sl]
        self.ground_full = bool(self.ground_mask.all())
        gx = np.where(ground, gx, self.cam_pos[0] + 500.0)
        gy = np.where(ground, self.cam_pos[1] + t * rays[..., 1], 0.0)
        self.gx = gx[sl].astype(np.float32)
        self.gy = gy[sl].astype(np.float32)
        dist = np.where(ground, t, 1e4).astype(np.float32)
        self.depth_g = dist  # [H, W] distance from the camera (sky: far)
        # Headlight beam on the ground (static: it moves with the ego).
        self.head_g = np.where(ground, _headlight(gx, gy), 0.0).astype(np.float32)
        self.t_fog_g = np.exp(-dist / FOG_VISIBILITY_M).astype(np.float32)
        self.t_rain_g = np.exp(-dist / _RAIN_VISIBILITY_M).astype(np.float32)

        # Sky per condition: vertical gradient top -> horizon row.
        horizon = max(self.v0, 1)
        ramp = np.clip(np.arange(self.h, dtype=np.float32) / horizon, 0.0, 1.0)[:, None, None]
        self.sky = {}
        for cond, (top, hor) in _SKY.items():
            col = np.array(top, np.float32) * (1 - ramp) + np.array(hor, np.float32) * ramp
            self.sky[cond] = np.ascontiguousarray(np.broadcast_to(col, (self.h, self.w, 3))).astype(np.uint8)
        self.far_bgr = {cond: tuple(float(c) for c in hor) for cond, (_, hor) in _SKY.items()}

        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xCA3]))
        pad = 32
        self._pad = pad
        # Sensor noise as saturating uint8 positive/negative parts, cropped at a random offset per frame.
        self.noise = {}
        for name, sigma in (("day", _DAY_NOISE_SIGMA), ("night", _NIGHT_NOISE_SIGMA)):
            n = np.round(sigma * rng.standard_normal((self.h + pad, self.w + pad, 3), dtype=np.float32))
            self.noise[name] = (np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8))
        self.streaks = [_rain_streaks(rng, self.h + pad, self.w + pad) for _ in range(3)]
        self.haze = {"fog": np.full((self.h, self.w, 3), _FOG_LEVEL, np.uint8),
                     "rain": np.full((self.h, self.w, 3), _RAIN_HAZE_LEVEL, np.uint8)}

    # ------------------------------------------------------------------------------------------
    def render(self, st: WorldState, rng: np.random.Generator) -> CameraRender:
        cond = st.condition
        h, w, v0 = self.h, self.w, self.v0
        base = self.sky[cond].copy()
        # 1. Ground.
        c, s = math.cos(st.ego_yaw), math.sin(st.ego_yaw)
        ahead = np.array([0.0, 170.0, 170.0, 0.0])
        side = np.array([0.0, -70.0, 70.0, 0.0])
        qx = st.ego_x + c * ahead - s * side
        qy = st.ego_y + s * ahead + c * side
        self.window.ensure(st.ego_x + 100.0 * c, st.ego_y + 100.0 * s, qx, qy, st.ego_s)
        wx = cv2.addWeighted(self.gx, c, self.gy, -s, st.ego_x)
        wy = cv2.addWeighted(self.gx, s, self.gy, c, st.ego_y)
        mx, my = self.window.texel_maps(wx, wy)
        far = (*self.far_bgr["day"], 0.0) if cond != "night" else (40.0, 40.0, 40.0, 0.0)
        tex = cv2.remap(self.window.texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                        borderValue=far)
        if self.ground_full:
            base[v0:] = tex[..., :3]
        else:
            base[v0:][self.ground_mask] = tex[..., :3][self.ground_mask]
        lamp_g = np.zeros((h, w), np.float32)
        lamp_g[v0:] = tex[..., 3].astype(np.float32) * (_LAMP_GAIN / 255.0 / 1.6)

        # 2. Objects.
        img = base.copy()
        ids = np.zeros((h, w), np.uint16)
        emit = np.zeros((h, w, 3), np.uint8)
        night_like = cond != "day"
        obj = self._draw_objects(st, img, ids, emit, lights_on=night_like)
        n_obj = obj["n"]

        # 3. Condition (uint8 OpenCV arithmetic: saturating and fast).
        light_g = None
        lut = None
        if cond == "night":
            light_g = _NIGHT_AMBIENT + self.head_g + lamp_g
            light_g[:v0] = 1.0  # the sky image is already the night sky
            if not self.ground_full:
                light_g[v0:][~self.ground_mask] = 1.0
            lut = np.concatenate([[0.0], obj["light"]]).astype(np.float32)
            light = _with_objects(light_g, ids, lut)
            image = cv2.multiply(img, cv2.merge([light, light, light]), dtype=cv2.CV_8U)
        elif cond in ("fog", "rain"):
            vis = FOG_VISIBILITY_M if cond == "fog" else _RAIN_VISIBILITY_M
            lut = np.concatenate([[0.0], np.exp(-obj["depth"] / vis)]).astype(np.float32)
            trans = _with_objects(self.t_fog_g if cond == "fog" else self.t_rain_g, ids, lut)
            src = img if cond == "fog" else cv2.convertScaleAbs(img, alpha=_RAIN_GAIN)
            image = cv2.blendLinear(src, self.haze[cond], trans, 1.0 - trans)
        else:
            image = img
        if night_like and obj["any_emit"]:
            small = cv2.resize(emit, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
            small = cv2.GaussianBlur(small, (0, 0), 3.0 if cond == "fog" else 1.6)
            glow = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
            gain = {"night": 1.0, "fog": 0.6, "rain": 0.6}[cond]
            image = cv2.addWeighted(image, 1.0, emit, gain, 0.0)
            image = cv2.addWeighted(image, 1.0, glow, 2.5 * gain, 0.0)
        oy, ox = (int(v) for v in rng.integers(0, self._pad, 2))
        pos, neg = self.noise["night" if cond == "night" else "day"]
        image = cv2.subtract(cv2.add(image, pos[oy:oy + h, ox:ox + w]), neg[oy:oy + h, ox:ox + w])
        if cond == "rain":
            streaks = self.streaks[int(rng.integers(len(self.streaks)))][oy:oy + h, ox:ox + w]
            image = cv2.add(image, cv2.merge([streaks, streaks, streaks]))
            image = cv2.GaussianBlur(image, (5, 5), 1.1)

        # 4. Visibility from pixels.
        n_agents = len(st.agent_id)
        pixels = np.zeros(n_agents, np.int64)
        contrast = np.zeros(n_agents)
        visible = np.zeros(n_agents, dtype=bool)
        if n_obj:
            flat_ids = ids.ravel()
            idx = np.flatnonzero(flat_ids)
            oid = flat_ids[idx].astype(np.int64)
            g_obj = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).ravel()[idx].astype(np.float32)
            g_bg = cv2.cvtColor(base, cv2.COLOR_BGR2GRAY).ravel()[idx].astype(np.float32)
            if cond == "night":
                l_obj = g_obj * lut[oid]  # lit body only: lamps count through the light rule below
                l_bg = g_bg * light_g.ravel()[idx]
            elif cond == "fog":
                tb = self.t_fog_g.ravel()[idx]
                l_obj = g_obj * lut[oid] + _FOG_LEVEL * (1 - lut[oid])
                l_bg = g_bg * tb + _FOG_LEVEL * (1 - tb)
            elif cond == "rain":
                tb = self.t_rain_g.ravel()[idx]
                l_obj = g_obj * _RAIN_GAIN * lut[oid] + _RAIN_HAZE_LEVEL * (1 - lut[oid])
                l_bg = g_bg * _RAIN_GAIN * tb + _RAIN_HAZE_LEVEL * (1 - tb)
            else:
                l_obj, l_bg = g_obj, g_bg
            count = np.bincount(oid, minlength=n_obj + 1)
            diff = np.bincount(oid, weights=np.abs(l_obj - l_bg), minlength=n_obj + 1)
            mean_diff = diff / np.maximum(count, 1)
            lit = np.zeros(n_obj + 1)
            if night_like and obj["any_emit"]:
                e = emit.reshape(-1, 3)[idx].max(axis=1)
                bright = e > 0
                lit = np.bincount(oid[bright], minlength=n_obj + 1)
            agent_obj = obj["agent_obj"]  # [A] object id or 0 when not drawn
            drawn = agent_obj > 0
            pixels[drawn] = count[agent_obj[drawn]]
            contrast[drawn] = mean_diff[agent_obj[drawn]]
            seen = (pixels >= self.min_pixels) & (contrast >= VISIBLE_MIN_CONTRAST)
            if cond == "fog":  # lights fade with the fog too
                lit_ok = lit[agent_obj] * lut[agent_obj] >= self.min_light_pixels * 0.25
            else:
                lit_ok = lit[agent_obj] >= self.min_light_pixels
            visible = drawn & (seen | (night_like & lit_ok))
        return CameraRender(image=image, visible=visible, pixels=pixels, contrast=contrast)

    # ------------------------------------------------------------------------------------------
    def _draw_objects(self, st: WorldState, img: np.ndarray, ids: np.ndarray, emit: np.ndarray,
                      lights_on: bool) -> dict:
        """Draw agents and props far-to-near. Returns per-object depth/light LUTs and agent ids."""
        boxes: list[tuple] = []  # (owner, layer, x0, x1, y0, y1, z0, z1, b, g, r, emissive)
        wheels: list[tuple] = []  # (owner, x, z, radius, half_track)
        owners_x, owners_y, owners_yaw, owners_h = [], [], [], []
        agent_obj = np.zeros(len(st.agent_id), np.int64)

        # Agents in view (cheap cull on the ground position).
        ax, ay = st.agent_x, st.agent_y
        rel = ax - self.cam_pos[0]
        in_front = (rel > -6.0) & (rel < _MAX_DRAW_M) & (np.abs(ay) < rel * 1.4 + 8.0)
        for i in np.flatnonzero(in_front):
            owner = len(owners_x) + 1
            agent_obj[i] = owner
            owners_x.append(ax[i])
            owners_y.append(ay[i])
            owners_yaw.append(st.agent_yaw[i])
            owners_h.append(st.agent_hgt[i])
            _agent_shape(int(st.agent_cls[i]), st.agent_len[i], st.agent_wid[i], st.agent_hgt[i],
                         st.agent_primary_bgr[i], st.agent_secondary_bgr[i], bool(st.agent_lights[i]),
                         int(st.agent_id[i]), owner, boxes, wheels)
        prel = st.prop_x - self.cam_pos[0]
        pin = (prel > -4.0) & (prel < _MAX_DRAW_M) & (np.abs(st.prop_y) < prel * 1.4 + 8.0)
        for i in np.flatnonzero(pin):
            kind = int(st.prop_kind[i])
            owner = len(owners_x) + 1
            owners_x.append(st.prop_x[i])
            owners_y.append(st.prop_y[i])
            owners_yaw.append(st.prop_yaw[i])
            owners_h.append(PROP_SIZE[kind, 2])
            _prop_shape(kind, owner, boxes)
        n = len(owners_x)
        out = {"n": n, "agent_obj": agent_obj, "depth": np.zeros(n), "light": np.zeros(n), "any_emit": False}
        if n == 0 or not boxes:
            return out
        ox, oy = np.array(owners_x), np.array(owners_y)
        oyaw, oh = np.array(owners_yaw), np.array(owners_h)
        dist = np.hypot(ox - self.cam_pos[0], oy - self.cam_pos[1])
        out["depth"] = np.hypot(dist, 0.5 * oh - self.cam_pos[2])
        out["light"] = _NIGHT_AMBIENT + _headlight(ox, oy) + _lamp_light(ox, oy, st.lamp_x, st.lamp_y)

        b = np.array(boxes, dtype=np.float64)  # [B, 12]
        owner = b[:, 0].astype(np.int64)
        layer = b[:, 1]
        lo, hi = b[:, 2:8:2], b[:, 3:8:2]  # [B, 3]
        sel = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)])  # [8, 3]
        corners = np.where(sel[None] == 1, hi[:, None, :], lo[:, None, :])  # [B, 8, 3]
        yaw = oyaw[owner - 1]
        cy, sy = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
        ex = ox[owner - 1][:, None] + cy * corners[..., 0] - sy * corners[..., 1]
        ey = oy[owner - 1][:, None] + sy * corners[..., 0] + cy * corners[..., 1]
        pts = np.stack([ex, ey, corners[..., 2]], axis=-1)  # [B, 8, 3]
        uv, depth = self.cam.project(pts.reshape(-1, 3))
        uv = uv.reshape(-1, 8, 2)
        depth = depth.reshape(-1, 8)
        nx = np.cos(yaw)[:, None] * _NORMALS[None, :, 0] - np.sin(yaw)[:, None] * _NORMALS[None, :, 1]
        ny = np.sin(yaw)[:, None] * _NORMALS[None, :, 0] + np.cos(yaw)[:, None] * _NORMALS[None, :, 1]
        nz = np.broadcast_to(_NORMALS[None, :, 2], nx.shape)
        fc = pts[:, _FACES].mean(axis=2)  # [B, 6, 3]
        view = fc - self.cam_pos
        facing = nx * view[..., 0] + ny * view[..., 1] + nz * view[..., 2] < 0
        only = b[:, 12].astype(np.int64)  # lights are one outward face, never seen through the body
        facing &= (only[:, None] < 0) | (np.arange(6)[None, :] == only[:, None])
        shade = 0.6 + 0.4 * np.clip(nx * _SUN[0] + ny * _SUN[1] + nz * _SUN[2], 0.0, 1.0)
        all_front = depth.min(axis=1) > _NEAR_M
        front = depth.max(axis=1) > _NEAR_M
        on_img = ~((uv[..., 0].max(1) < 0) | (uv[..., 0].min(1) > self.w) | (uv[..., 1].max(1) < 0)
                   | (uv[..., 1].min(1) > self.h))
        keep = front & (on_img | ~all_front) & facing.any(axis=1)
        # Far-to-near by owner distance; within an owner by layer (parts attached on top of a
        # volume come later), and by distance among the volumes of one layer (truck cab vs box).
        box_dist = np.hypot(pts[..., 0].mean(1) - self.cam_pos[0], pts[..., 1].mean(1) - self.cam_pos[1])
        order = np.lexsort((-box_dist, layer, -dist[owner - 1]))
        order = order[keep[order]]
        colour = b[:, 8:11]
        emissive = b[:, 11] > 0
        lit = emissive & lights_on
        face_col = np.where(emissive[:, None, None], colour[:, None, :] * (1.0 if lights_on else 0.55),
                            colour[:, None, :] * shade[..., None]).tolist()  # [B][6][3]
        emit_col = colour.tolist()
        # [B, 6, 4, 2] with 3 fractional bits
        face_px = np.ascontiguousarray(np.round(uv * 8.0).astype(np.int32)[:, _FACES])
        facing_l = facing.tolist()
        all_front_l = all_front.tolist()
        lit_l = lit.tolist()
        owner_l = owner.tolist()
        wheel_by_owner: dict[int, list] = {}
        for wl in wheels:
            wheel_by_owner.setdefault(wl[0], []).append(wl)
        any_emit = False
        fill = cv2.fillConvexPoly
        for bi in order.tolist():
            o = owner_l[bi]
            if o in wheel_by_owner:
                self._draw_wheels(wheel_by_owner.pop(o), ox[o - 1], oy[o - 1], oyaw[o - 1], img, ids)
            fb = facing_l[bi]
            for f in range(6):
                if not fb[f]:
                    continue
                if all_front_l[bi]:
                    p = face_px[bi, f]
                else:
                    poly = self._clip_near(pts[bi, _FACES[f]])
                    if poly is None:
                        continue
                    p = np.round(poly * 8.0).astype(np.int32)
                fill(img, p, face_col[bi][f], cv2.LINE_8, 3)
                fill(ids, p, o, cv2.LINE_8, 3)
                if lit_l[bi]:
                    fill(emit, p, emit_col[bi], cv2.LINE_8, 3)
                    any_emit = True
                elif any_emit:  # an unlit face in front hides the lamps behind it
                    fill(emit, p, (0, 0, 0), cv2.LINE_8, 3)
        out["any_emit"] = any_emit
        return out

    def _draw_wheels(self, wheels: list, x: float, y: float, yaw: float, img: np.ndarray, ids: np.ndarray) -> None:
        """Bicycle wheels: circles in the bike's vertical plane, projected, drawn as thick polylines."""
        ang = np.linspace(0, 2 * np.pi, 17)
        c, s = math.cos(yaw), math.sin(yaw)
        for owner, wx, wz, r, _ in wheels:
            lx = wx + r * np.cos(ang)
            lz = wz + r * np.sin(ang)
            pts = np.stack([x + c * lx, y + s * lx, lz], axis=1)
            uv, depth = self.cam.project(pts)
            if depth.min() <= _NEAR_M:
                continue
            thick = max(1, int(round(self.cam.intrinsics.fx * 0.06 / depth.mean())))
            p = np.round(uv * 8).astype(np.int32)
            cv2.polylines(img, [p], True, (25, 25, 25), thick, cv2.LINE_8, 3)
            cv2.polylines(ids, [p], True, owner, thick, cv2.LINE_8, 3)

    def _clip_near(self, pts_ego: np.ndarray) -> np.ndarray | None:
        """Clip a face (ego points [4, 3]) against the near plane; returns pixel polygon or None."""
        pc = self.cam.ego_to_optical(pts_ego)
        out = []
        n = len(pc)
        for i in range(n):
            a, b = pc[i], pc[(i + 1) % n]
            ina, inb = a[2] > _NEAR_M, b[2] > _NEAR_M
            if ina:
                out.append(a)
            if ina != inb:
                t = (_NEAR_M - a[2]) / (b[2] - a[2])
                out.append(a + t * (b - a))
        if len(out) < 3:
            return None
        q = np.array(out)
        k = self.cam.intrinsics
        return np.stack([k.fx * q[:, 0] / q[:, 2] + k.cx, k.fy * q[:, 1] / q[:, 2] + k.cy], axis=1)


def _with_objects(background: np.ndarray, ids: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Per-pixel value: the object's LUT entry where an object is drawn, else the background's."""
    out = background.copy()
    m = ids > 0
    out[m] = lut[ids[m]]
    return out


def _headlight(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Low-beam illumination at ego-frame ground points (headlights at the front bumper)."""
    x = np.asarray(x, dtype=np.float64)
    dx = x - 3.8
    r = np.hypot(dx, y)
    az = np.arctan2(y, np.maximum(dx, 1e-3))
    cone = np.exp(-(az / _HEADLIGHT_HALF_ANGLE) ** 2)
    near = r / (r + 5.0)  # the low beam is aimed down: the first metres get little light
    return np.where(dx > 0.5, 1.4 * cone * near / (1.0 + (r / _HEADLIGHT_RANGE_M) ** 2), 0.0)


def _lamp_light(x: np.ndarray, y: np.ndarray, lx: np.ndarray, ly: np.ndarray) -> np.ndarray:
    """Street-lamp illumination at ego points (the same pools as painted in the ground texture)."""
    if len(lx) == 0:
        return np.zeros(len(x))
    d2 = (x[:, None] - lx[None]) ** 2 + (y[:, None] - ly[None]) ** 2
    return np.clip(_LAMP_GAIN * np.exp(-d2 / (2 * 5.0 ** 2)).sum(axis=1), 0, 1.2)


def _rain_streaks(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    layer = np.zeros((h, w), np.uint8)
    n = int(h * w / 900)
    x = rng.uniform(0, w, n)
    y = rng.uniform(0, h, n)
    length = rng.uniform(8, 24, n) * h / 360.0
    for xi, yi, li, bi in zip(x, y, length, rng.uniform(60, 140, n), strict=True):
        cv2.line(layer, (int(xi), int(yi)), (int(xi + 0.25 * li), int(yi + li)), int(bi), 1, cv2.LINE_AA)
    return (layer.astype(np.float32) * 0.35).astype(np.uint8)


def _box(boxes: list, owner: int, layer: int, x0: float, x1: float, y0: float, y1: float, z0: float, z1: float,
         b: float, g: float, r: float, emissive: int = 0, face: int = -1) -> None:
    """One box part: local extents, colour, whether it is a light, and (lights) its only drawn face."""
    boxes.append((owner, layer, min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1), min(z0, z1), max(z0, z1),
                  b, g, r, emissive, face))


def _agent_shape(cls: int, L: float, W: float, H: float, p: np.ndarray, q: np.ndarray, lights: bool,
                 agent_id: int, owner: int, boxes: list, wheels: list) -> None:
    """Append the boxes (local frame: x forward, y left, z up) that make up one agent."""
    l2, w2 = L / 2, W / 2
    P = tuple(float(v) for v in p)
    Q = tuple(float(v) for v in q)
    dark = (28.0, 28.0, 30.0)
    if cls == AGENT_CAR:
        _box(boxes, owner, 0, -l2 + 0.25, l2 - 0.25, -w2 + 0.12, w2 - 0.12, 0.0, 0.45, *dark, 0)  # wheels/underbody
        _box(boxes, owner, 1, -l2, l2, -w2, w2, 0.3, 0.58 * H, *P, 0)  # body
        _box(boxes, owner, 2, -0.32 * L, 0.18 * L, -w2 + 0.08, w2 - 0.08, 0.58 * H, H, 45.0, 42.0, 40.0, 0)  # glass
        _box(boxes, owner, 3, -0.28 * L, 0.12 * L, -w2 + 0.1, w2 - 0.1, H - 0.06, H, *P, 0)  # roof
        for sgn in (-1.0, 1.0):
            tail = (40.0, 40.0, 235.0)
            head = (235.0, 245.0, 255.0)
            _box(boxes, owner, 4, -l2 - 0.03, -l2, sgn * (w2 - 0.35), sgn * (w2 - 0.08),
                 0.6 * 0.58 * H + 0.1, 0.58 * H - 0.03,
                 *tail, 1 if lights else 0, 0)
            _box(boxes, owner, 4, l2, l2 + 0.03, sgn * (w2 - 0.38), sgn * (w2 - 0.1), 0.6 * 0.58 * H, 0.58 * H - 0.08,
                 *head, 1 if lights else 0, 1)
    elif cls == AGENT_TRUCK:
        cab = 2.2
        _box(boxes, owner, 0, -l2 + 0.4, l2 - 0.3, -w2 + 0.1, w2 - 0.1, 0.0, 1.0, *dark, 0)
        _box(boxes, owner, 1, l2 - cab, l2, -w2, w2, 0.5, 0.8 * H, *P, 0)  # cab
        _box(boxes, owner, 2, l2 - 0.04, l2 + 0.01, -w2 + 0.15, w2 - 0.15, 0.52 * H, 0.76 * H,
             40.0, 38.0, 36.0, 0, 1)  # windscreen
        _box(boxes, owner, 1, -l2, l2 - cab - 0.15, -w2, w2, 0.95, H, *Q, 0)  # cargo box
        for sgn in (-1.0, 1.0):
            _box(boxes, owner, 2, -l2 - 0.03, -l2, sgn * (w2 - 0.4), sgn * (w2 - 0.1), 0.75, 1.0, 40.0, 40.0, 235.0,
                 1 if lights else 0, 0)
            _box(boxes, owner, 2, l2, l2 + 0.03, sgn * (w2 - 0.45), sgn * (w2 - 0.12), 0.7, 0.95, 235.0, 245.0, 255.0,
                 1 if lights else 0, 1)
    elif cls == AGENT_PEDESTRIAN:
        skin = tuple(float(v) for v in _SKIN[agent_id % len(_SKIN)])
        hair = (30.0, 35.0, 45.0) if agent_id % 3 else (60.0, 90.0, 130.0)
        _box(boxes, owner, 1, -l2 * 0.8, l2 * 0.8, -w2 * 0.6, w2 * 0.6, 0.0, 0.47 * H, *Q, 0)  # legs
        _box(boxes, owner, 2, -l2, l2, -w2, w2, 0.47 * H, 0.83 * H, *P, 0)  # torso
        _box(boxes, owner, 3, -0.1, 0.1, -0.09, 0.09, 0.84 * H, 0.95 * H, *skin, 0)  # face
        _box(boxes, owner, 4, -0.11, 0.1, -0.1, 0.1, 0.93 * H, H, *hair, 0)  # hair
    elif cls == AGENT_CYCLIST:
        k = H / 1.75
        wheels.append((owner, -0.56 * L / 1.75, 0.34, 0.34, 0.0))
        wheels.append((owner, 0.56 * L / 1.75, 0.34, 0.34, 0.0))
        _box(boxes, owner, 1, -0.5, 0.5, -0.03, 0.03, 0.4, 0.8, 30.0, 30.0, 160.0, 0)  # frame (dark red)
        _box(boxes, owner, 2, -0.18, 0.12, -0.14, 0.14, 0.55 * k, 0.98 * k, *Q, 0)  # legs on the pedals
        _box(boxes, owner, 3, -0.2, 0.3, -0.2, 0.2, 0.98 * k, 1.45 * k, *P, 0)  # torso, leaning forward
        _box(boxes, owner, 4, 0.02, 0.3, -0.15, 0.15, 1.45 * k, 1.7 * k, *P, 0)  # helmet (jersey colour)
        _box(boxes, owner, 4, -0.55, -0.48, -0.05, 0.05, 0.6, 0.7, 40.0, 40.0, 235.0, 1 if lights else 0, 0)


def _prop_shape(kind: int, owner: int, boxes: list) -> None:
    L, W, H = PROP_SIZE[kind]
    col = tuple(float(v) for v in PROP_BGR[kind])
    if kind == PROP_POLE:
        _box(boxes, owner, 0, -L / 2, L / 2, -W / 2, W / 2, 0.0, H, *col, 0)
        _box(boxes, owner, 1, -0.3, 0.3, -0.25, 0.25, H - 0.2, H, 200.0, 235.0, 255.0, 1)  # lamp head (lit at night)
    elif kind == PROP_RAIL:
        _box(boxes, owner, 0, -L / 2, L / 2, -W / 2, W / 2, 0.4, H, *col, 0)
    elif kind == PROP_CONE:
        _box(boxes, owner, 0, -L / 2, L / 2, -W / 2, W / 2, 0.0, H, *col, 0)
        _box(boxes, owner, 1, -L / 2 - 0.01, L / 2 + 0.01, -W / 2 - 0.01, W / 2 + 0.01, 0.35 * H, 0.55 * H,
             240.0, 240.0, 240.0, 0)
    elif kind in (PROP_BARRIER, PROP_BIN, PROP_MEDIAN):
        _box(boxes, owner, 0, -L / 2, L / 2, -W / 2, W / 2, 0.0, H, *col, 0)
        if kind == PROP_BARRIER:
            _box(boxes, owner, 1, -L / 2 - 0.01, L / 2 + 0.01, -W / 2 - 0.01, W / 2 + 0.01, 0.45 * H, 0.65 * H,
                          240.0, 240.0, 240.0, 0)
