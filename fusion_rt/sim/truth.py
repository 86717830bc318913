"""Ground truth for one camera frame: agents with visibility flags, BEV occupancy, scene labels.

`visible_camera` comes from the rendered pixels (`CameraRender`); `visible_radar` means the
agent lies in the radar's field of view and a CFAR detection of the radar frame nearest in
time falls within `RADAR_ASSOCIATION_M` of its footprint (agent and detections both taken at
the radar's stamp, so the association is exact in time).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from fusion_rt.messages import Agent, GroundTruth
from fusion_rt.rig import CLASS_NAMES, Rig
from fusion_rt.sim.camera import CameraRender
from fusion_rt.sim.world import AGENT_PEDESTRIAN, CROSS_ROAD_HALF_M, Road, WorldState

__all__ = ["build_ground_truth", "radar_visible", "footprint_distance", "GT_X_RANGE_M", "GT_Y_HALF_M",
           "HAZARD_RANGE_M", "HAZARD_MARGIN_M", "LABEL_ZONE_X_M", "LABEL_ZONE_Y_M", "RADAR_ASSOCIATION_M"]

GT_X_RANGE_M = (-10.0, 110.0)  # agents listed in ground truth: what any sensor could see, plus a margin
GT_Y_HALF_M = 50.0
HAZARD_RANGE_M = 25.0  # "ahead": 0 < x <= 25 m, about two seconds at urban speed
#: Scene labels "<class> present" look at the zone a driver attends to, not the whole BEV grid: ahead
#: 0 < x <= 30 m and |y| <= 12 m (the road and its sidewalks). Over the whole grid, urban scenes
#: almost always held every class and the labels only restated the scene type.
LABEL_ZONE_X_M = 30.0
LABEL_ZONE_Y_M = 12.0
HAZARD_MARGIN_M = 1.5  # "in or next to the drivable area"
RADAR_ASSOCIATION_M = 2.0


def footprint_distance(px: np.ndarray, py: np.ndarray, ax: np.ndarray, ay: np.ndarray, yaw: np.ndarray,
                       length: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Distance [P, A] from points to agents' footprint rectangles (0 inside), in the ego plane."""
    dx = px[:, None] - ax[None, :]
    dy = py[:, None] - ay[None, :]
    c, s = np.cos(yaw)[None, :], np.sin(yaw)[None, :]
    lx = np.abs(c * dx + s * dy) - length[None, :] / 2
    ly = np.abs(-s * dx + c * dy) - width[None, :] / 2
    return np.hypot(np.maximum(lx, 0.0), np.maximum(ly, 0.0))


def radar_visible(st_radar: WorldState, points: np.ndarray, rig: Rig) -> dict[int, bool]:
    """Agent id -> in the radar FOV with a detection within `RADAR_ASSOCIATION_M` (radar-time frame)."""
    radar = rig.radar
    rx = st_radar.agent_x - radar.pose.x
    ry = st_radar.agent_y - radar.pose.y
    r = np.hypot(rx, ry)
    az = np.arctan2(ry, rx) - radar.pose.yaw
    in_fov = (r <= radar.range_max_m) & (r >= radar.range_min_m) & (np.abs(az) <= radar.azimuth_max_rad)
    hit = np.zeros(len(rx), dtype=bool)
    if len(points) and len(rx):
        det = radar.pose.to_ego(points[:, :3].astype(np.float64))
        dist = footprint_distance(det[:, 0], det[:, 1], st_radar.agent_x, st_radar.agent_y, st_radar.agent_yaw,
                                  st_radar.agent_len, st_radar.agent_wid)
        hit = (dist <= RADAR_ASSOCIATION_M).any(axis=0)
    ok = in_fov & hit
    return {int(i): bool(v) for i, v in zip(st_radar.agent_id, ok, strict=True)}


def _distance_to_drivable(road: Road, s: np.ndarray, d: np.ndarray) -> np.ndarray:
    kerb = road.kerb_d(s)
    dist = np.maximum(np.abs(d) - kerb, 0.0)
    if len(road.intersections):
        in_side_road = np.abs(s[:, None] - road.intersections[None, :]).min(axis=1) <= CROSS_ROAD_HALF_M
        dist = np.where(in_side_road, 0.0, dist)
    return dist


def build_ground_truth(stamp_ns: int, st: WorldState, render: CameraRender, radar_vis: dict[int, bool],
                       road: Road, rig: Rig) -> GroundTruth:
    """Assemble the `GroundTruth` of the camera frame rendered from `st`."""
    sel = np.flatnonzero((st.agent_x >= GT_X_RANGE_M[0]) & (st.agent_x <= GT_X_RANGE_M[1])
                         & (np.abs(st.agent_y) <= GT_Y_HALF_M))
    agents = tuple(
        Agent(id=int(st.agent_id[i]), class_name=CLASS_NAMES[int(st.agent_cls[i])],
              x=float(st.agent_x[i]), y=float(st.agent_y[i]), z=float(st.agent_hgt[i] / 2),
              vx=float(st.agent_vx[i]), vy=float(st.agent_vy[i]),
              length=float(st.agent_len[i]), width=float(st.agent_wid[i]), height=float(st.agent_hgt[i]),
              yaw=float(st.agent_yaw[i]), visible_camera=bool(render.visible[i]),
              visible_radar=bool(radar_vis.get(int(st.agent_id[i]), False)))
        for i in sel)

    bev = rig.bev
    rows, cols = bev.shape
    occ = np.zeros((len(CLASS_NAMES), rows, cols), np.uint8)
    near = ((st.agent_x > bev.x_min_m - 6.0) & (st.agent_x < bev.x_max_m + 6.0)
            & (st.agent_y > bev.y_min_m - 6.0) & (st.agent_y < bev.y_max_m + 6.0))  # long trucks reach in
    for i in np.flatnonzero(near):
        c, s = math.cos(st.agent_yaw[i]), math.sin(st.agent_yaw[i])
        hl, hw = st.agent_len[i] / 2, st.agent_wid[i] / 2
        lx = np.array([hl, -hl, -hl, hl])
        ly = np.array([hw, hw, -hw, -hw])
        x = st.agent_x[i] + c * lx - s * ly
        y = st.agent_y[i] + s * lx + c * ly
        px = np.stack([(bev.y_max_m - y) / bev.cell_m - 0.5, (bev.x_max_m - x) / bev.cell_m - 0.5], axis=1)
        cv2.fillConvexPoly(occ[int(st.agent_cls[i])], np.round(px * 16).astype(np.int32), 1, cv2.LINE_8, 4)
    r, c, ok = bev.cell_of(st.agent_x, st.agent_y)  # small agents always mark the cell they stand in
    occ[st.agent_cls[ok], r[ok], c[ok]] = 1

    zone = (st.agent_x > 0.0) & (st.agent_x <= LABEL_ZONE_X_M) & (np.abs(st.agent_y) <= LABEL_ZONE_Y_M)
    labels = {name: int(np.any(zone & (st.agent_cls == k))) for k, name in enumerate(CLASS_NAMES)}
    vru = (st.agent_cls >= AGENT_PEDESTRIAN) & (st.agent_x > 0.0) & (st.agent_x <= HAZARD_RANGE_M)
    hazard = False
    if vru.any():
        hazard = bool(np.any(_distance_to_drivable(road, st.agent_s[vru], st.agent_d[vru]) <= HAZARD_MARGIN_M))
    labels["hazard"] = int(hazard)
    return GroundTruth(
        stamp_ns=int(stamp_ns), labels=labels, agents=agents, bev=occ, bev_classes=tuple(CLASS_NAMES),
        scene_type=st.scene_type, condition=st.condition, ego_speed_mps=float(st.ego_speed),
        extras={"speed_limit_kmh": float(st.speed_limit_kmh), "ego_yaw_rate_rps": float(st.ego_yaw_rate),
                "ego_world_x_m": float(st.ego_x), "ego_world_y_m": float(st.ego_y),
                "ego_world_yaw_rad": float(st.ego_yaw), "drive_time_s": float(st.t)},
    )
