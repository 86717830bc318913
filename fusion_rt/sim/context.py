"""Scene context: the map raster around the ego and the scene text a navigation system provides."""

from __future__ import annotations

import math

import numpy as np

from fusion_rt.messages import MAP_CODES, MapRaster, TextContext
from fusion_rt.rig import MapGrid
from fusion_rt.sim.ground import paint_ground
from fusion_rt.sim.world import Road, WorldState

__all__ = ["map_raster", "scene_text"]


def map_raster(stamp_ns: int, st: WorldState, road: Road, grid: MapGrid) -> MapRaster:
    """Paint the road's map codes onto `grid` in the ego frame of `st` (row 0 = far edge)."""
    rows, cols = grid.shape
    c, s = math.cos(st.ego_yaw), math.sin(st.ego_yaw)
    # world -> ego: [c s; -s c] (p - e); ego -> pixel: col = (y_max - y)/cell - .5, row = (x_max - x)/cell - .5
    k = 1.0 / grid.cell_m
    ego = np.array([[c, s, -(c * st.ego_x + s * st.ego_y)], [-s, c, (s * st.ego_x - c * st.ego_y)]])
    to_px = np.array([[0.0, -k, grid.y_max_m * k - 0.5], [-k, 0.0, grid.x_max_m * k - 0.5]])
    affine = to_px[:, :2] @ ego
    affine[:, 2] += to_px[:, 2]
    canvas = np.full((rows, cols), MAP_CODES["offroad"], np.uint8)
    reach = math.hypot(max(abs(grid.x_min_m), abs(grid.x_max_m)), max(abs(grid.y_min_m), abs(grid.y_max_m))) + 10.0
    paint_ground(road, st.ego_s - reach, st.ego_s + reach, affine, k, canvas, labels=True)
    return MapRaster(stamp_ns=int(stamp_ns), grid=canvas.astype(np.int8), cell_m=float(grid.cell_m),
                     x_max_m=float(grid.x_max_m), y_max_m=float(grid.y_max_m), frame_id="base_link")


def scene_text(stamp_ns: int, st: WorldState) -> TextContext:
    """E.g. "school zone, rain, 30 km/h": scene type, condition and speed limit, as a scene tagger says it."""
    return TextContext(stamp_ns=int(stamp_ns),
                       text=f"{st.scene_type.replace('_', ' ')}, {st.condition}, {st.speed_limit_kmh} km/h")
