"""The procedural world every simulated sensor observes: road, scene zones, ego, agents, props.

One seeded `World` holds a road centre line (straights and arcs, with intersections and
crosswalks), a sequence of scene zones (urban, highway, school zone, construction) that set the
cross-section, the speed limit and the agent mix, static props (lamp posts, guard rails, cones,
barriers, bins) and a population of agents (car, truck, pedestrian, cyclist). `state_at(t)`
returns everything in the ego frame at drive time `t` seconds, so each sensor renders the world
at its own stamp.

Road coordinates: `s` is arc length along the centre line, `d` the lateral offset (positive to
the left). Traffic is right-handed: the ego's direction uses lanes at d < 0. Each direction has
two 3.5 m lanes, then a shoulder (parking in towns, work area in construction zones), a kerb and
a sidewalk (none on highways, which have guard rails and a median barrier instead).

Vehicles in lanes follow the Intelligent Driver Model (IDM) on a fixed 50 ms grid, yield to
pedestrians on the carriageway and slow down before lower speed limits; pedestrians walk along
sidewalks or cross at crosswalks (and a few mid-block); cyclists ride at the lane edge.
Everything is a pure function of the seed and `t` (the IDM grid is stepped lazily but always
from t = 0), so sensors can query any stamp in any order within the kept history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CONDITIONS", "SCENE_TYPES", "SceneSpec", "SCENES", "World", "WorldState", "Props", "Road",
           "AGENT_CAR", "AGENT_TRUCK", "AGENT_PEDESTRIAN", "AGENT_CYCLIST"]

CONDITIONS: tuple[str, ...] = ("day", "night", "fog", "rain")
SCENE_TYPES: tuple[str, ...] = ("urban", "highway", "school_zone", "construction")

# Class indices follow fusion_rt.rig.CLASS_NAMES.
AGENT_CAR, AGENT_TRUCK, AGENT_PEDESTRIAN, AGENT_CYCLIST = 0, 1, 2, 3

LANE_WIDTH_M = 3.5
CARRIAGEWAY_HALF_M = 7.0  # two lanes per direction
EGO_LANE_D_M = -1.75  # the ego keeps to the inner lane of its direction, so lane counts never move it
_LANE_D = np.array([-1.75, -5.25, 1.75, 5.25])  # lanes 0,1 go with the ego (+s), 2,3 against it
_LANE_DIR = np.array([1.0, 1.0, -1.0, -1.0])
CROSSWALK_HALF_LEN_M = 2.0  # a crosswalk is a 4 m band across the road
CROSS_ROAD_HALF_M = 7.0  # side roads at intersections are 14 m wide

_DT = 0.05  # IDM step; 20 Hz is plenty for vehicle dynamics and keeps stepping cheap
_HISTORY_STEPS = 80  # 4 s of kept states: sensors query within ~100 ms of each other
_EGO_SPEED_MAX = 30.0  # bounds the route length


@dataclass(frozen=True)
class SceneSpec:
    """What a scene type looks like and who lives there. Densities are per km of road."""

    name: str
    speed_limit_kmh: int
    shoulder_m: float  # between the outer lane edge and the kerb
    sidewalk_m: float  # 0: no sidewalk (highway: grass and guard rails)
    zone_seconds: tuple[float, float]  # how long the ego spends in one zone of this type
    intersection_every_m: float  # 0: none
    midblock_crosswalk_every_m: float  # 0: none
    lamp_every_m: float
    moving_cars: float
    moving_trucks: float
    parked_cars: float
    walkers: float
    crossers_per_crosswalk: float
    jaywalkers: float
    cyclists: float
    workers: float
    cone_every_m: float  # 0: no cones
    bins: float
    offroad_bgr: tuple[int, int, int]


SCENES: dict[str, SceneSpec] = {
    "urban": SceneSpec("urban", 50, 2.2, 3.5, (18.0, 28.0), 170.0, 0.0, 30.0,
                       moving_cars=26.0, moving_trucks=3.0, parked_cars=28.0, walkers=34.0,
                       crossers_per_crosswalk=1.5, jaywalkers=1.5, cyclists=8.0, workers=0.0,
                       cone_every_m=0.0, bins=12.0, offroad_bgr=(112, 116, 120)),
    "highway": SceneSpec("highway", 100, 3.0, 0.0, (14.0, 22.0), 0.0, 0.0, 60.0,
                         moving_cars=22.0, moving_trucks=9.0, parked_cars=0.0, walkers=0.0,
                         crossers_per_crosswalk=0.0, jaywalkers=0.0, cyclists=0.0, workers=0.0,
                         cone_every_m=0.0, bins=0.0, offroad_bgr=(70, 122, 88)),
    "school_zone": SceneSpec("school_zone", 30, 2.2, 4.0, (20.0, 30.0), 140.0, 70.0, 30.0,
                             moving_cars=14.0, moving_trucks=0.5, parked_cars=34.0, walkers=110.0,
                             crossers_per_crosswalk=3.0, jaywalkers=3.0, cyclists=45.0, workers=0.0,
                             cone_every_m=0.0, bins=10.0, offroad_bgr=(86, 136, 104)),
    "construction": SceneSpec("construction", 40, 2.5, 3.0, (16.0, 24.0), 0.0, 0.0, 40.0,
                              moving_cars=18.0, moving_trucks=8.0, parked_cars=0.0, walkers=8.0,
                              crossers_per_crosswalk=0.0, jaywalkers=0.0, cyclists=4.0, workers=30.0,
                              cone_every_m=6.0, bins=0.0, offroad_bgr=(96, 128, 150)),
}

# Agent kinds (how an agent moves).
_K_IDM, _K_STATIC, _K_WALK, _K_CROSS = 0, 1, 2, 3

# Prop kinds (static clutter: camera and radar see them, ground truth does not list them).
PROP_POLE, PROP_CONE, PROP_BARRIER, PROP_BIN, PROP_RAIL, PROP_MEDIAN = 0, 1, 2, 3, 4, 5
# Radar cross-section of each prop kind, dBsm; rail/median segments give two points of this RCS
# each (grazing incidence: most energy is reflected away).
PROP_RCS_DBSM = np.array([3.0, -8.0, 2.0, 0.0, -8.0, -6.0])
# Size (length along yaw, width, height) and colour of each prop kind.
PROP_SIZE = np.array([[0.18, 0.18, 7.0], [0.35, 0.35, 0.7], [1.2, 0.4, 1.0], [0.6, 0.6, 1.1],
                      [4.0, 0.12, 0.75], [4.0, 0.5, 0.8]])
PROP_BGR = np.array([[70, 75, 80], [20, 110, 245], [40, 90, 230], [40, 90, 40], [175, 180, 185],
                     [165, 170, 170]], dtype=np.float64)


def _scene_of(name: str) -> SceneSpec:
    return SCENES[name]


class Road:
    """A centre line sampled every `ds` metres, scene zones, intersections and crosswalks."""

    ds = 0.5

    def __init__(self, length_m: float, zone_types: list[str], zone_bounds: np.ndarray, rng: np.random.Generator):
        n = int(math.ceil(length_m / self.ds)) + 1
        self.length_m = (n - 1) * self.ds
        self.s = np.arange(n) * self.ds
        self.zone_types = zone_types
        self.zone_bounds = zone_bounds  # [Z + 1] increasing s; zone i covers [b[i], b[i+1])
        self.zone_specs = [_scene_of(z) for z in zone_types]
        self.zone_limit_mps = np.array([sp.speed_limit_kmh / 3.6 for sp in self.zone_specs])
        self.zone_shoulder = np.array([sp.shoulder_m for sp in self.zone_specs])
        self.zone_sidewalk = np.array([sp.sidewalk_m for sp in self.zone_specs])

        # Curvature: straights of 100-300 m and arcs of 60-220 m with radius 300-900 m; the first
        # 300 m are straight so every drive starts settled.
        kappa = np.zeros(n)
        straight = np.ones(n, dtype=bool)
        pos = 300.0
        while pos < self.length_m:
            pos += rng.uniform(100.0, 300.0)
            arc = rng.uniform(60.0, 220.0)
            i0, i1 = int(pos / self.ds), min(n, int((pos + arc) / self.ds))
            if i0 < n:
                kappa[i0:i1] = rng.choice([-1.0, 1.0]) / rng.uniform(300.0, 900.0)
                straight[max(0, i0 - 60):min(n, i1 + 60)] = False  # 30 m clearance for intersections
            pos += arc
        self.kappa = kappa
        self.heading = np.concatenate([[0.0], np.cumsum(0.5 * (kappa[1:] + kappa[:-1]) * self.ds)])
        self.x = np.concatenate([[0.0], np.cumsum(np.cos(0.5 * (self.heading[1:] + self.heading[:-1])) * self.ds)])
        self.y = np.concatenate([[0.0], np.cumsum(np.sin(0.5 * (self.heading[1:] + self.heading[:-1])) * self.ds)])

        # Intersections on straights of zones that have them; crosswalks on both sides of each,
        # plus mid-block crosswalks (school zones).
        inter, cross = [], []
        for zi, spec in enumerate(self.zone_specs):
            a, b = float(zone_bounds[zi]), float(zone_bounds[zi + 1])
            if spec.intersection_every_m > 0:
                p = a + rng.uniform(0.3, 0.9) * spec.intersection_every_m
                while p < b - 30.0:
                    if straight[int(p / self.ds)]:
                        inter.append(p)
                        p += spec.intersection_every_m * rng.uniform(0.8, 1.25)
                    else:
                        p += 10.0
            if spec.midblock_crosswalk_every_m > 0:
                p = a + rng.uniform(0.3, 1.0) * spec.midblock_crosswalk_every_m
                while p < b - 10.0:
                    cross.append(p)
                    p += spec.midblock_crosswalk_every_m * rng.uniform(0.8, 1.25)
        self.intersections = np.array(sorted(inter))
        off = CROSS_ROAD_HALF_M + CROSSWALK_HALF_LEN_M + 1.0
        cross += [p - off for p in inter] + [p + off for p in inter]
        cross = sorted(cross)
        kept: list[float] = []
        for c in cross:  # a mid-block crosswalk inside an intersection is dropped
            if all(abs(c - i) > CROSS_ROAD_HALF_M + 1.0 for i in inter) and (not kept or c - kept[-1] > 6.0):
                kept.append(c)
        self.crosswalks = np.array(kept)

    # --- lookups -------------------------------------------------------------------------------
    def zone_index(self, s: np.ndarray | float) -> np.ndarray:
        return np.clip(np.searchsorted(self.zone_bounds, s, side="right") - 1, 0, len(self.zone_types) - 1)

    def kerb_d(self, s: np.ndarray | float) -> np.ndarray:
        """Distance of the kerb (outer edge of the shoulder) from the centre line at `s`."""
        return CARRIAGEWAY_HALF_M + self.zone_shoulder[self.zone_index(s)]

    def centre(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World x, y, heading of the centre line at `s` (linear interpolation)."""
        f = np.clip(np.asarray(s, dtype=np.float64) / self.ds, 0.0, len(self.s) - 1.000001)
        i = f.astype(np.int64)
        w = f - i
        x = self.x[i] * (1 - w) + self.x[i + 1] * w
        y = self.y[i] * (1 - w) + self.y[i + 1] * w
        h = self.heading[i] * (1 - w) + self.heading[i + 1] * w
        return x, y, h

    def to_world(self, s: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Road (s, d) -> world x, y and the road heading there."""
        x, y, h = self.centre(s)
        d = np.asarray(d, dtype=np.float64)
        return x - d * np.sin(h), y + d * np.cos(h), h


@dataclass(frozen=True)
class Props:
    """Static clutter in world coordinates: kind, position, yaw (world)."""

    kind: np.ndarray  # [P] int
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray


@dataclass(frozen=True)
class WorldState:
    """The world at one instant, in the ego frame (x forward, y left) of that instant.

    Agent arrays are [A] (only agents near the ego); `agent_*_bgr` are [A, 3] colours.
    """

    t: float
    scene_type: str
    condition: str
    speed_limit_kmh: int
    ego_x: float  # world pose of the ego (rear axle on the ground)
    ego_y: float
    ego_yaw: float
    ego_speed: float
    ego_yaw_rate: float
    ego_s: float
    agent_id: np.ndarray
    agent_cls: np.ndarray
    agent_x: np.ndarray
    agent_y: np.ndarray
    agent_yaw: np.ndarray
    agent_vx: np.ndarray  # over ground, ego axes
    agent_vy: np.ndarray
    agent_len: np.ndarray
    agent_wid: np.ndarray
    agent_hgt: np.ndarray
    agent_primary_bgr: np.ndarray
    agent_secondary_bgr: np.ndarray
    agent_lights: np.ndarray  # bool: head/tail lights on
    agent_s: np.ndarray  # road coordinates (for context, hazard and ghosts)
    agent_d: np.ndarray
    prop_kind: np.ndarray
    prop_x: np.ndarray  # ego frame
    prop_y: np.ndarray
    prop_yaw: np.ndarray
    lamp_x: np.ndarray  # street lamps (ego frame) for night lighting
    lamp_y: np.ndarray
    rail_d: float  # |d| of the outer guard rails at the ego (0: none)


_CAR_COLOURS = np.array([[235, 235, 235], [30, 30, 32], [180, 180, 175], [40, 40, 170], [150, 80, 30],
                         [120, 120, 120], [60, 60, 50], [40, 140, 200], [50, 100, 40], [200, 200, 210]],
                        dtype=np.float64)
_TRUCK_CABS = np.array([[230, 230, 230], [30, 60, 170], [160, 90, 30], [30, 170, 230], [40, 40, 40]], dtype=np.float64)
_CLOTHES = np.array([[50, 50, 50], [90, 60, 40], [120, 110, 100], [60, 40, 110], [30, 50, 80], [140, 140, 140],
                     [40, 70, 40], [100, 90, 150], [70, 40, 30]], dtype=np.float64)
_TROUSERS = np.array([[40, 30, 25], [90, 60, 30], [35, 35, 35], [110, 110, 110], [60, 80, 110]], dtype=np.float64)
_JERSEYS = np.array([[0, 220, 255], [0, 140, 255], [255, 120, 0], [0, 0, 230], [40, 230, 40], [230, 0, 200]],
                    dtype=np.float64)
_VEST_BGR = (0.0, 150.0, 255.0)  # high-visibility orange for road workers


class World:
    """A seeded procedural world; `state_at(t)` is the only way sensors see it."""

    def __init__(self, seconds: float, seed: int, conditions: str, scene_type: str | None):
        root = np.random.SeedSequence([int(seed), 0x5EED])
        r_zones, r_road, r_agents, r_cond, r_props = (np.random.default_rng(s) for s in root.spawn(5))
        self.seconds = float(seconds)

        # Zones: the ego spends `zone_seconds` in each; lengths follow from the speed limit.
        ego_start = 250.0
        reach = ego_start + _EGO_SPEED_MAX * self.seconds + 450.0
        types: list[str] = []
        bounds = [0.0]
        order = list(SCENE_TYPES)
        while bounds[-1] < reach:
            if scene_type is not None:
                name = scene_type
            else:
                choices = [z for z in order if not types or z != types[-1]]
                name = choices[int(r_zones.integers(len(choices)))]
            spec = SCENES[name]
            length = spec.speed_limit_kmh / 3.6 * r_zones.uniform(*spec.zone_seconds)
            if not types:
                length += ego_start  # the first zone also covers the run-up behind the ego
            types.append(name)
            bounds.append(bounds[-1] + length)
        if scene_type is not None:  # one zone, not many of the same kind
            types, bounds = [scene_type], [0.0, bounds[-1]]
        self.road = Road(bounds[-1], types, np.array(bounds), r_road)
        self._ego_start = ego_start

        self._condition_bounds, self._condition_names = self._condition_timeline(conditions, r_cond)
        self.props = self._make_props(r_props)
        self._lamps = self.props.kind == PROP_POLE
        self._make_agents(r_agents)
        # Lazily stepped IDM history.
        self._hist_u = np.zeros((_HISTORY_STEPS, self._n_idm))
        self._hist_v = np.zeros((_HISTORY_STEPS, self._n_idm))
        self._hist_u[0] = self._idm_u
        self._hist_v[0] = self._idm_v
        self._step = 0  # index of the newest stored step

    # --- conditions ----------------------------------------------------------------------------
    def _condition_timeline(self, conditions: str, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
        if conditions != "mixed":
            return np.array([0.0]), [conditions]
        # A new condition every 10-20 s, never the same twice in a row.
        bounds, names = [0.0], [CONDITIONS[int(rng.integers(len(CONDITIONS)))]]
        while bounds[-1] < self.seconds:
            bounds.append(bounds[-1] + rng.uniform(10.0, 20.0))
            names.append([c for c in CONDITIONS if c != names[-1]][int(rng.integers(len(CONDITIONS) - 1))])
        return np.array(bounds), names

    def condition_at(self, t: float) -> str:
        i = int(np.searchsorted(self._condition_bounds, t, side="right") - 1)
        return self._condition_names[max(i, 0)]

    # --- props ---------------------------------------------------------------------------------
    def _make_props(self, rng: np.random.Generator) -> Props:
        road = self.road
        kind, s_all, d_all, yaw_rel = [], [], [], []

        def add(k: int, s: np.ndarray, d: np.ndarray, yr: float | np.ndarray = 0.0) -> None:
            s = np.atleast_1d(np.asarray(s, dtype=np.float64))
            kind.append(np.full(len(s), k))
            s_all.append(s)
            d_all.append(np.broadcast_to(np.asarray(d, dtype=np.float64), s.shape))
            yaw_rel.append(np.broadcast_to(np.asarray(yr, dtype=np.float64), s.shape))

        for zi, spec in enumerate(road.zone_specs):
            a, b = float(road.zone_bounds[zi]), float(road.zone_bounds[zi + 1])
            kerb = CARRIAGEWAY_HALF_M + spec.shoulder_m
            if spec.sidewalk_m > 0:  # lamps on both kerbs, staggered
                s = np.arange(a + rng.uniform(0, spec.lamp_every_m), b, spec.lamp_every_m)
                add(PROP_POLE, s, -(kerb + 0.5))
                add(PROP_POLE, s + spec.lamp_every_m / 2, kerb + 0.5)
                n_bins = rng.poisson(spec.bins * (b - a) / 1000.0)
                sb = rng.uniform(a, b, n_bins)
                add(PROP_BIN, sb, rng.choice([-1.0, 1.0], n_bins) * (kerb + spec.sidewalk_m - 0.6))
            else:  # highway: lamps on the median, guard rails on both outer edges
                add(PROP_POLE, np.arange(a + rng.uniform(0, spec.lamp_every_m), b, spec.lamp_every_m), 0.0)
                seg = np.arange(a + 2.0, b - 2.0, 4.0)
                add(PROP_RAIL, seg, -(kerb + 0.3))
                add(PROP_RAIL, seg, kerb + 0.3)
                add(PROP_MEDIAN, seg, 0.0)
            if spec.cone_every_m > 0:  # close the ego-side shoulder: cones on the edge line, barriers at both ends
                s = np.arange(a + 15.0, b - 15.0, spec.cone_every_m)
                add(PROP_CONE, s, -(CARRIAGEWAY_HALF_M + 0.3))
                add(PROP_BARRIER, np.array([a + 10.0, b - 10.0]), -(CARRIAGEWAY_HALF_M + spec.shoulder_m / 2),
                    math.pi / 2)
                nb = max(1, int((b - a) / 60.0))
                add(PROP_BARRIER, rng.uniform(a + 20, b - 20, nb), -(kerb + 0.8))
        k = np.concatenate(kind)
        s = np.concatenate(s_all)
        d = np.concatenate(d_all)
        yr = np.concatenate(yaw_rel)
        keep = (s > 0) & (s < road.length_m)
        if len(road.intersections):  # nothing stands in a side road
            near = np.abs(s[:, None] - road.intersections[None, :]).min(axis=1) < CROSS_ROAD_HALF_M + 1.0
            keep &= ~(near & (np.abs(d) > CARRIAGEWAY_HALF_M))
        k, s, d, yr = k[keep], s[keep], d[keep], yr[keep]
        x, y, h = road.to_world(s, d)
        return Props(kind=k, x=x, y=y, yaw=h + yr)

    # --- agents --------------------------------------------------------------------------------
    def _make_agents(self, rng: np.random.Generator) -> None:
        road = self.road
        rows: dict[str, list] = {k: [] for k in ("cls", "kind", "lane", "s", "d", "v", "yaw_rel", "a", "b",
                                                  "wait", "phase", "len", "wid", "hgt", "p", "q", "lights")}

        def add(cls, kind, s, d=0.0, v=0.0, lane=-1, yaw_rel=0.0, a=0.0, b=0.0, wait=0.0, phase=0.0,
                size=(1, 1, 1), p=(0, 0, 0), q=(0, 0, 0), lights=False):
            for key, val in (("cls", cls), ("kind", kind), ("lane", lane), ("s", s), ("d", d), ("v", v),
                             ("yaw_rel", yaw_rel), ("a", a), ("b", b), ("wait", wait), ("phase", phase),
                             ("len", size[0]), ("wid", size[1]), ("hgt", size[2]), ("p", p), ("q", q),
                             ("lights", lights)):
                rows[key].append(val)

        def car_size():
            return (rng.uniform(3.9, 4.9), rng.uniform(1.72, 1.92), rng.uniform(1.38, 1.62))

        def truck_size():
            return (rng.uniform(7.0, 11.5), rng.uniform(2.35, 2.5), rng.uniform(3.0, 3.8))

        def car_colour():
            return tuple(_CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))] * rng.uniform(0.85, 1.1))

        def truck_colours():
            return tuple(_TRUCK_CABS[int(rng.integers(len(_TRUCK_CABS)))]), tuple(rng.uniform(170, 240) * np.ones(3))

        def pedestrian(kind, s, d, v=0.0, a=0.0, b=0.0, wait=0.0, phase=0.0, child_share=0.0, worker=False):
            h = rng.uniform(1.05, 1.4) if rng.random() < child_share else rng.uniform(1.55, 1.92)
            shirt = _VEST_BGR if worker else tuple(_CLOTHES[int(rng.integers(len(_CLOTHES)))] * rng.uniform(0.8, 1.2))
            trousers = tuple(_TROUSERS[int(rng.integers(len(_TROUSERS)))])
            add(AGENT_PEDESTRIAN, kind, s, d, v, a=a, b=b, wait=wait, phase=phase,
                size=(rng.uniform(0.3, 0.4), rng.uniform(0.45, 0.55) * h / 1.75, h), p=shirt, q=trousers)

        # Ego first (IDM agent 0): a mid-size car, never rendered.
        add(AGENT_CAR, _K_IDM, self._ego_start, EGO_LANE_D_M, SCENES[road.zone_types[0]].speed_limit_kmh / 3.6 * 0.9,
            lane=0, size=(4.6, 1.85, 1.5), lights=True)
        self._ego_factor = 1.0

        # Sidewalk runs (maximal spans of zones with sidewalks) bound walkers and cyclists.
        runs: list[tuple[float, float]] = []
        for zi, spec in enumerate(road.zone_specs):
            a, b = float(road.zone_bounds[zi]), float(road.zone_bounds[zi + 1])
            if spec.sidewalk_m > 0:
                if runs and abs(runs[-1][1] - a) < 1e-6:
                    runs[-1] = (runs[-1][0], b)
                else:
                    runs.append((a, b))

        def run_of(s: float) -> tuple[float, float]:
            for a, b in runs:
                if a <= s < b:
                    return a, b
            return s - 1.0, s + 1.0

        for zi, spec in enumerate(road.zone_specs):
            a, b = float(road.zone_bounds[zi]), float(road.zone_bounds[zi + 1])
            km = (b - a) / 1000.0
            kerb = CARRIAGEWAY_HALF_M + spec.shoulder_m
            limit = spec.speed_limit_kmh / 3.6
            child = 0.55 if spec.name == "school_zone" else 0.08
            # Moving vehicles, spread over the four lanes; trucks prefer outer lanes.
            for cls, dens in ((AGENT_CAR, spec.moving_cars), (AGENT_TRUCK, spec.moving_trucks)):
                for _ in range(rng.poisson(dens * km)):
                    p_lane = [0.3, 0.2, 0.3, 0.2] if cls == AGENT_CAR else [0.1, 0.4, 0.1, 0.4]
                    lane = int(rng.choice([0, 1, 2, 3], p=p_lane))
                    s = rng.uniform(a, b)
                    if lane in (0, 1) and abs(s - self._ego_start) < 25.0:
                        continue  # keep the ego's surroundings clear at t = 0
                    if cls == AGENT_CAR:
                        add(cls, _K_IDM, s, _LANE_D[lane], limit * rng.uniform(0.85, 1.1), lane=lane, size=car_size(),
                            p=car_colour(), q=(25, 25, 30), lights=True)
                    else:
                        cab, box = truck_colours()
                        add(cls, _K_IDM, s, _LANE_D[lane], min(limit, 24.0) * rng.uniform(0.85, 1.0), lane=lane,
                            size=truck_size(), p=cab, q=box, lights=True)
            # Parked cars in the shoulder, both sides, facing the traffic direction of their side.
            for _ in range(rng.poisson(spec.parked_cars * km)):
                side = rng.choice([-1.0, 1.0])
                s = rng.uniform(a + 5.0, b - 5.0)
                if len(road.crosswalks) and np.min(np.abs(road.crosswalks - s)) < 8.0:
                    continue
                if len(road.intersections) and np.min(np.abs(road.intersections - s)) < 14.0:
                    continue
                add(AGENT_CAR, _K_STATIC, s, side * (CARRIAGEWAY_HALF_M + spec.shoulder_m / 2 + rng.uniform(-0.1, 0.1)),
                    yaw_rel=(0.0 if side < 0 else math.pi) + rng.normal(0, 0.03), size=car_size(), p=car_colour(),
                    q=(25, 25, 30))
            # Walkers on sidewalks: some stand, most walk at 0.7-1.8 m/s (children run up to 2.5 m/s).
            if spec.sidewalk_m > 0:
                for _ in range(rng.poisson(spec.walkers * km)):
                    side = rng.choice([-1.0, 1.0])
                    s = rng.uniform(a, b)
                    ra, rb = run_of(s)
                    # A quarter stand; children (and hurrying adults) run at up to ~3 m/s.
                    v = (0.0 if rng.random() < 0.25
                         else rng.uniform(0.7, 1.8) * (1.6 if rng.random() < 0.5 * child + 0.05 else 1.0))
                    pedestrian(_K_WALK, s, side * (kerb + rng.uniform(0.4, spec.sidewalk_m - 0.3)),
                               v * rng.choice([-1.0, 1.0]), ra, rb, child_share=child)
                for _ in range(rng.poisson(spec.cyclists * km)):
                    s = rng.uniform(a, b)
                    ra, rb = run_of(s)
                    direction = rng.choice([1.0, -1.0], p=[0.6, 0.4])
                    # children ride slowly
                    v = rng.uniform(1.5, 4.5) if spec.name == "school_zone" else rng.uniform(2.5, 6.5)
                    if rng.random() < 0.12:
                        v = 0.0  # waiting at the kerb
                    h = rng.uniform(1.45, 1.6) if rng.random() < child else rng.uniform(1.65, 1.85)
                    jersey = tuple(_JERSEYS[int(rng.integers(len(_JERSEYS)))] * rng.uniform(0.8, 1.0))
                    add(AGENT_CYCLIST, _K_WALK, s, -direction * (CARRIAGEWAY_HALF_M - 0.35), v * direction, a=ra, b=rb,
                        size=(rng.uniform(1.65, 1.8), 0.6, h), p=jersey,
                        q=tuple(_CLOTHES[int(rng.integers(len(_CLOTHES)))]))
            # Crossers at crosswalks in this zone, and a few mid-block crossers.
            cws = road.crosswalks[(road.crosswalks >= a) & (road.crosswalks < b)]
            spots = [(c, spec.crossers_per_crosswalk, rng.uniform(28.0, 45.0)) for c in cws]
            if spec.jaywalkers > 0:
                spots += [(rng.uniform(a, b), 1.0, rng.uniform(35.0, 70.0))
                          for _ in range(rng.poisson(spec.jaywalkers * km))]
            for c, mean_n, period in spots:
                spot_phase = rng.uniform(0.0, period)
                for _ in range(rng.poisson(mean_n)):
                    # a = kerb sign at even cycles, b = start delay within the walk phase.
                    pedestrian(_K_CROSS, c + rng.uniform(-1.4, 1.4), kerb + 0.7, rng.uniform(1.1, 1.7),
                               a=float(rng.choice([-1.0, 1.0])), b=rng.uniform(0.0, 2.5), wait=period,
                               phase=spot_phase, child_share=child)
            # Road works: workers in the closed shoulder, parked work trucks.
            if spec.workers > 0:
                for _ in range(rng.poisson(spec.workers * km)):
                    s = rng.uniform(a + 20, b - 20)
                    pedestrian(_K_WALK, s, -(CARRIAGEWAY_HALF_M + rng.uniform(0.6, spec.shoulder_m + 1.5)),
                               rng.uniform(0.2, 0.8) * rng.choice([-1.0, 1.0]), s - rng.uniform(3, 12),
                               s + rng.uniform(3, 12), worker=True)
                for _ in range(max(1, int((b - a) / 120.0))):
                    cab, box = truck_colours()
                    add(AGENT_TRUCK, _K_STATIC, rng.uniform(a + 25, b - 25),
                        -(CARRIAGEWAY_HALF_M + spec.shoulder_m / 2 + 0.1),
                        yaw_rel=rng.normal(0, 0.03), size=truck_size(), p=(30, 160, 240), q=box)
        # Cars waiting on side roads at intersections (lights on, not moving).
        for s_i in road.intersections:
            kerb = float(road.kerb_d(s_i))
            for side in (-1.0, 1.0):
                if rng.random() < 0.6:
                    size = car_size()
                    add(AGENT_CAR, _K_STATIC, s_i - side * 1.75, side * (kerb + 4.5 + size[0] / 2),
                        yaw_rel=-side * math.pi / 2, size=size, p=car_colour(), q=(25, 25, 30), lights=True)

        self._cls = np.array(rows["cls"], dtype=np.int64)
        self._kind = np.array(rows["kind"], dtype=np.int64)
        self._lane = np.array(rows["lane"], dtype=np.int64)
        self._s0 = np.array(rows["s"], dtype=np.float64)
        self._d0 = np.array(rows["d"], dtype=np.float64)
        self._v0 = np.array(rows["v"], dtype=np.float64)
        self._yaw_rel = np.array(rows["yaw_rel"], dtype=np.float64)
        self._a = np.array(rows["a"], dtype=np.float64)
        self._b = np.array(rows["b"], dtype=np.float64)
        self._wait = np.array(rows["wait"], dtype=np.float64)
        self._phase = np.array(rows["phase"], dtype=np.float64)
        self._len = np.array(rows["len"], dtype=np.float64)
        self._wid = np.array(rows["wid"], dtype=np.float64)
        self._hgt = np.array(rows["hgt"], dtype=np.float64)
        self._p = np.array(rows["p"], dtype=np.float64).reshape(-1, 3)
        self._q = np.array(rows["q"], dtype=np.float64).reshape(-1, 3)
        self._lights = np.array(rows["lights"], dtype=bool)

        idm = np.flatnonzero(self._kind == _K_IDM)
        assert idm[0] == 0  # the ego is IDM agent 0
        self._idm = idm
        self._n_idm = len(idm)
        lanes = self._lane[idm]
        self._idm_lane = lanes
        self._idm_dir = _LANE_DIR[lanes]
        self._idm_len = self._len[idm]
        self._idm_factor = self._v0[idm] / np.maximum(road.zone_limit_mps[road.zone_index(self._s0[idm])], 1.0)
        self._idm_factor[0] = 0.97  # the ego keeps a little under the limit
        self._idm_truck = self._cls[idm] == AGENT_TRUCK
        # Spread vehicles so that no lane starts with overlaps: shift forward until gaps >= 12 m.
        u = self._s0[idm] * self._idm_dir
        for lane in range(4):
            m = np.flatnonzero(lanes == lane)
            if m.size < 2:
                continue
            o = m[np.argsort(u[m], kind="stable")]
            for j in range(1, len(o)):
                lo = u[o[j - 1]] + 0.5 * (self._idm_len[o[j - 1]] + self._idm_len[o[j]]) + 12.0
                if u[o[j]] < lo and o[j] != 0:
                    u[o[j]] = lo
        self._idm_u = u
        self._idm_v = self._v0[idm].copy()
        self._u_lo = np.where(self._idm_dir > 0, 5.0, -road.length_m + 5.0)
        self._u_hi = np.where(self._idm_dir > 0, road.length_m - 5.0, -5.0)

    # --- dynamics ------------------------------------------------------------------------------
    def _crossers_sd(self, t: float, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Crossers: one crossing per cycle of their spot, alternating kerbs. Returns d, d-rate, facing sign.

        A spot (crosswalk or mid-block place) has a cycle of `period` seconds whose first part is the
        walk phase; every crosser of the spot starts within it (own delay and speed), so vehicles
        get a clear road for the rest of the cycle, as at a signalised crossing.
        """
        D = self._d0[idx]  # standing offset on the kerb
        v = self._v0[idx]
        period = self._wait[idx]
        tau_abs = t + self._phase[idx]
        cycle = np.floor(tau_abs / period)
        tau = tau_abs - cycle * period
        start = self._a[idx] * np.where(np.mod(cycle, 2.0) == 0, 1.0, -1.0)  # kerb sign at cycle start
        delay = self._b[idx]
        progress = np.clip((tau - delay) * v, 0.0, 2.0 * D)
        d = start * (D - progress)
        moving = (progress > 0) & (progress < 2.0 * D)
        dd = np.where(moving, -start * v, 0.0)
        face = -start  # facing the way it crosses (or will cross back)
        face = np.where(progress >= 2.0 * D, start, face)
        return d, dd, face

    def _pedestrians_on_road(self, t: float) -> np.ndarray:
        """s of crossers currently on the carriageway (vehicles yield to them)."""
        idx = np.flatnonzero(self._kind == _K_CROSS)
        if idx.size == 0:
            return np.zeros(0)
        d, _, _ = self._crossers_sd(t, idx)
        return np.sort(self._s0[idx][np.abs(d) < CARRIAGEWAY_HALF_M + 0.8])

    def _idm_step(self, t: float, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        road = self.road
        direction = self._idm_dir
        s = u * direction
        limit = np.minimum(road.zone_limit_mps[road.zone_index(s)],
                           road.zone_limit_mps[road.zone_index(s + 60.0 * direction)])  # slow before a lower limit
        v0 = limit * self._idm_factor
        v0 = np.where(self._idm_truck, np.minimum(v0, 24.0), v0)
        # Leader in the same lane.
        order = np.lexsort((u, self._idm_lane))
        gap = np.full(len(u), 1e4)
        dv = np.zeros(len(u))
        same = self._idm_lane[order[1:]] == self._idm_lane[order[:-1]]
        f, r = order[:-1][same], order[1:][same]
        gap[f] = u[r] - u[f] - 0.5 * (self._idm_len[r] + self._idm_len[f])
        dv[f] = v[f] - v[r]
        # Pedestrians on the carriageway are standing obstacles for every lane.
        peds = self._pedestrians_on_road(t)
        if peds.size:
            front = u + 0.5 * self._idm_len
            for sign in (1.0, -1.0):
                m = direction == sign
                obst = np.sort(peds * sign)
                k = np.searchsorted(obst, front[m] - 1.0)
                has = k < len(obst)
                g = np.full(m.sum(), 1e4)
                g[has] = obst[np.minimum(k[has], len(obst) - 1)] - front[m][has] - 2.5
                idx = np.flatnonzero(m)
                closer = (g < gap[idx]) & (g < 60.0)
                gap[idx[closer]] = np.maximum(g[closer], 0.1)
                dv[idx[closer]] = v[idx[closer]]
        a_max = np.where(self._idm_truck, 0.8, 1.6)
        b_comf, t_head, s_min = 2.5, 1.3, 2.0
        s_star = s_min + v * t_head + v * dv / (2.0 * np.sqrt(a_max * b_comf))
        acc = a_max * (1.0 - (v / np.maximum(v0, 0.5)) ** 4 - (np.maximum(s_star, 0.0) / np.maximum(gap, 0.1)) ** 2)
        acc = np.clip(acc, -9.0, a_max)
        v_new = np.maximum(v + acc * _DT, 0.0)
        u_new = u + 0.5 * (v + v_new) * _DT
        # Wrap vehicles leaving the route (far from the ego) to its other end.
        span = self._u_hi - self._u_lo
        out = u_new > self._u_hi
        out[0] = False
        u_new = np.where(out, u_new - span, u_new)
        return u_new, v_new

    def _idm_at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """IDM positions/speeds at time t (linear interpolation on the 50 ms grid)."""
        k = t / _DT
        k0 = int(math.floor(k))
        while self._step < k0 + 1:
            i = self._step % _HISTORY_STEPS
            u, v = self._idm_step(self._step * _DT, self._hist_u[i], self._hist_v[i])
            self._step += 1
            self._hist_u[self._step % _HISTORY_STEPS] = u
            self._hist_v[self._step % _HISTORY_STEPS] = v
        if k0 < self._step - _HISTORY_STEPS + 1 or k0 < 0:
            raise ValueError(f"world time {t} is older than the kept history")  # internal invariant
        w = k - k0
        ua, va = self._hist_u[k0 % _HISTORY_STEPS], self._hist_v[k0 % _HISTORY_STEPS]
        ub, vb = self._hist_u[(k0 + 1) % _HISTORY_STEPS], self._hist_v[(k0 + 1) % _HISTORY_STEPS]
        jump = np.abs(ub - ua) > 100.0  # a wrap between the two steps: take the later one
        u = np.where(jump, ub, ua * (1 - w) + ub * w)
        return u, va * (1 - w) + vb * w

    def _reflect(self, t: float, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Walkers and cyclists go back and forth inside their sidewalk run. Returns s and signed speed."""
        a, b = self._a[idx], self._b[idx]
        span = np.maximum(b - a, 1.0)
        p = np.mod(self._s0[idx] - a + self._v0[idx] * t, 2 * span)
        back = p > span
        s = a + np.where(back, 2 * span - p, p)
        return s, np.where(back, -self._v0[idx], self._v0[idx])

    def state_at(self, t: float) -> WorldState:
        """The world at drive time `t` seconds, in the ego frame of that instant."""
        road = self.road
        n = len(self._cls)
        s = self._s0.copy()
        d = self._d0.copy()
        speed_s = np.zeros(n)  # along +s
        speed_d = np.zeros(n)  # along +d
        yaw_rel = self._yaw_rel.copy()

        u, v = self._idm_at(t)
        s[self._idm] = u * self._idm_dir
        speed_s[self._idm] = v * self._idm_dir
        yaw_rel[self._idm] = np.where(self._idm_dir > 0, 0.0, math.pi)

        walk = np.flatnonzero(self._kind == _K_WALK)
        if walk.size:
            sw, vw = self._reflect(t, walk)
            s[walk] = sw
            speed_s[walk] = vw
            standing = np.where(vw == 0, 0.5 * np.sign(self._d0[walk]) * math.pi, 0.0)  # face the road
            yaw_rel[walk] = np.where(vw < 0, math.pi, 0.0) + standing
            cyc = self._cls[walk] == AGENT_CYCLIST
            # A cyclist turning back keeps to its own edge (it rides on the other side's edge line).
            yaw_rel[walk[cyc]] = np.where(vw[cyc] < 0, math.pi, 0.0)
        cross = np.flatnonzero(self._kind == _K_CROSS)
        if cross.size:
            dc, ddc, face = self._crossers_sd(t, cross)
            d[cross] = dc
            speed_d[cross] = ddc
            yaw_rel[cross] = face * math.pi / 2

        # Ego pose: the ego is IDM agent 0, on its lane centre line.
        ego_s = float(s[0])
        ex, ey, eh = road.to_world(np.array([ego_s]), np.array([EGO_LANE_D_M]))
        ex, ey, eh = float(ex[0]), float(ey[0]), float(eh[0])
        ego_speed = float(v[0])
        ego_kappa = float(np.interp(ego_s, road.s, road.kappa))
        ego_yaw_rate = ego_speed * ego_kappa

        # Nearby agents only (the ego itself excluded): 150 m ahead, 60 m behind along s.
        near = np.flatnonzero((s > ego_s - 60.0) & (s < ego_s + 160.0))
        near = near[near != 0]
        wx, wy, h = road.to_world(s[near], d[near])
        c, sn = math.cos(eh), math.sin(eh)
        dx, dy = wx - ex, wy - ey
        ax = c * dx + sn * dy
        ay = -sn * dx + c * dy
        yaw = h + yaw_rel[near] - eh
        # Velocity over ground in world axes, then into ego axes. (Curvature terms are negligible.)
        vwx = speed_s[near] * np.cos(h) - speed_d[near] * np.sin(h)
        vwy = speed_s[near] * np.sin(h) + speed_d[near] * np.cos(h)
        avx = c * vwx + sn * vwy
        avy = -sn * vwx + c * vwy

        pr = self.props
        pdx, pdy = pr.x - ex, pr.y - ey
        px = c * pdx + sn * pdy
        py = -sn * pdx + c * pdy
        pm = (px > -40.0) & (px < 200.0) & (np.abs(py) < 80.0)
        lamps = pm & self._lamps

        zi = int(road.zone_index(ego_s))
        spec = road.zone_specs[zi]
        return WorldState(
            t=float(t), scene_type=spec.name, condition=self.condition_at(t), speed_limit_kmh=spec.speed_limit_kmh,
            ego_x=ex, ego_y=ey, ego_yaw=eh, ego_speed=ego_speed, ego_yaw_rate=ego_yaw_rate, ego_s=ego_s,
            agent_id=near.astype(np.int64), agent_cls=self._cls[near], agent_x=ax, agent_y=ay,
            agent_yaw=np.mod(yaw + math.pi, 2 * math.pi) - math.pi, agent_vx=avx, agent_vy=avy,
            agent_len=self._len[near], agent_wid=self._wid[near], agent_hgt=self._hgt[near],
            agent_primary_bgr=self._p[near], agent_secondary_bgr=self._q[near], agent_lights=self._lights[near],
            agent_s=s[near], agent_d=d[near],
            prop_kind=pr.kind[pm], prop_x=px[pm], prop_y=py[pm], prop_yaw=pr.yaw[pm] - eh,
            lamp_x=px[lamps], lamp_y=py[lamps],
            rail_d=(CARRIAGEWAY_HALF_M + spec.shoulder_m + 0.3) if spec.sidewalk_m == 0 else 0.0,
        )
