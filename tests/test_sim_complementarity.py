"""The simulated world must make fusion matter: numbers that show what each sensor can and cannot do.

Run with `-s` to see the measured figures. Drives of one condition share a seed, so the agents
are the same and only the condition differs.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fusion_rt.messages import CameraFrame, GroundTruth, RadarDetections
from fusion_rt.sim import DriveConfig, simulate_drive

_SEED = 7
_SECONDS = 12.0


def _truths(cfg: DriveConfig) -> list[GroundTruth]:
    return [m for m in simulate_drive(cfg) if isinstance(m, GroundTruth)]


@pytest.fixture(scope="module")
def urban_by_condition() -> dict[str, list[GroundTruth]]:
    return {c: _truths(DriveConfig(seconds=_SECONDS, seed=_SEED, conditions=c, scene_type="urban"))
            for c in ("day", "night", "fog")}


def test_camera_loses_radar_detected_agents_at_night_and_in_fog(urban_by_condition):
    frac = {}
    for cond, truths in urban_by_condition.items():
        radar = [a for t in truths for a in t.agents if a.visible_radar]
        frac[cond] = sum(a.visible_camera for a in radar) / len(radar)
        vru = [a for a in radar if a.class_name in ("pedestrian", "cyclist")]
        frac[cond + "_vru"] = sum(a.visible_camera for a in vru) / max(len(vru), 1)
        print(f"\n[complementarity] {cond:5s}: {len(radar)} radar-visible agent-frames, camera also sees "
              f"{frac[cond]:.2f} of them ({frac[cond + '_vru']:.2f} of {len(vru)} pedestrian/cyclist)", end="")
    print()
    assert frac["day"] >= 0.65
    assert frac["night"] <= 0.9 * frac["day"]
    assert frac["fog"] <= 0.8 * frac["day"]
    # Vulnerable road users, the ones that matter, nearly vanish at night.
    assert frac["night_vru"] <= 0.55 * frac["day_vru"]


def _logistic_accuracy(x: np.ndarray, y: np.ndarray, test: np.ndarray) -> float:
    """A small L2-regularised logistic regression (numpy, gradient descent); test-set accuracy."""
    mu, sd = x[~test].mean(0), x[~test].std(0) + 1e-9
    z = (x - mu) / sd
    w, b = np.zeros(z.shape[1]), 0.0
    ztr, ytr = z[~test], y[~test].astype(np.float64)
    for _ in range(600):
        p = 1.0 / (1.0 + np.exp(-(ztr @ w + b)))
        g = p - ytr
        w -= 0.2 * (ztr.T @ g / len(g) + 1e-3 * w)
        b -= 0.2 * g.mean()
    return float((((z[test] @ w + b) > 0) == y[test]).mean())


def _camera_features(img: np.ndarray, cam, a) -> list[float] | None:
    """Pixel statistics of a fixed-aspect crop around the agent (the crop's shape leaks no size)."""
    uv, depth = cam.project(np.array([[a.x, a.y, 0.0], [a.x, a.y, a.height]]))
    if depth.min() < 1.0:
        return None
    h = uv[0, 1] - uv[1, 1]
    if h < 12:
        return None
    w = 0.7 * h
    x0, x1, y0, y1 = int(uv[0, 0] - w / 2), int(uv[0, 0] + w / 2), int(uv[1, 1]), int(uv[0, 1])
    if x0 < 0 or y0 < 0 or x1 > img.shape[1] or y1 > img.shape[0]:
        return None
    crop = img[y0:y1, x0:x1]
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV).astype(np.float64)
    half = crop.shape[0] // 2
    upper, lower = hsv[:half], hsv[half:]
    dark = lower[..., 2] < 50
    cols = np.nonzero(dark)[1]
    spread = cols.std() / crop.shape[1] if cols.size > 2 else 0.0
    edges = cv2.Canny(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), 50, 150)
    return [upper[..., 1].mean() / 255, lower[..., 2].mean() / 255, dark.mean(), spread,
            edges[half:].mean() / 255, upper[..., 2].mean() / 255]


@pytest.fixture(scope="module")
def school_day() -> tuple[list, list[GroundTruth]]:
    """(camera/radar feature rows for agents both sensors see, ground truths) of a school-zone day drive."""
    cfg = DriveConfig(seconds=20.0, seed=11, conditions="day", scene_type="school_zone")
    rig = cfg.rig()
    img, dets, rows, truths = None, None, [], []
    for m in simulate_drive(cfg):
        if isinstance(m, CameraFrame):
            img = cv2.imdecode(np.frombuffer(m.data, np.uint8), cv2.IMREAD_COLOR)
        elif isinstance(m, RadarDetections):
            dets = m.points
        elif isinstance(m, GroundTruth):
            truths.append(m)
            if dets is None or len(dets) == 0:
                continue
            det_ego = rig.radar.pose.to_ego(dets[:, :3].astype(np.float64))
            for a in m.agents:
                if a.class_name not in ("pedestrian", "cyclist") or not (a.visible_camera and a.visible_radar):
                    continue
                near = np.hypot(det_ego[:, 0] - a.x, det_ego[:, 1] - a.y) < 2.0
                if not near.any():
                    continue
                az = np.arctan2(dets[near, 1], dets[near, 0])
                v_comp = dets[near, 3] + m.ego_speed_mps * np.cos(az)  # ego-motion compensated
                k = int(np.argmax(dets[near, 4]))
                radar_f = [float(dets[near, 4].max()), float(abs(v_comp[k])), float(near.sum())]
                cam_f = _camera_features(img, rig.camera, a)
                if cam_f is not None:
                    rows.append((a.class_name == "cyclist", a.id, radar_f, cam_f))
    return rows, truths


def test_camera_tells_pedestrians_from_cyclists_better_than_radar(school_day):
    rows, _ = school_day
    y = np.array([r[0] for r in rows])
    ids = np.array([r[1] for r in rows], dtype=np.int64)
    test = (ids * 2654435761 % 5) == 0  # split by agent, so no agent is in both sets
    acc_radar = _logistic_accuracy(np.array([r[2] for r in rows]), y, test)
    acc_camera = _logistic_accuracy(np.array([r[3] for r in rows]), y, test)
    print(f"\n[complementarity] pedestrian vs cyclist, {len(rows)} samples ({test.sum()} test, "
          f"{y[test].mean():.2f} cyclists): radar (RCS, |v|, count) accuracy {acc_radar:.3f}, "
          f"camera (crop statistics) accuracy {acc_camera:.3f}")
    assert test.sum() >= 100 and 0.2 < y[test].mean() < 0.8
    assert acc_camera >= 0.9
    assert acc_camera - acc_radar >= 0.06


def test_scene_type_changes_class_priors(school_day, urban_by_condition):
    highway = _truths(DriveConfig(seconds=6.0, seed=_SEED, conditions="day", scene_type="highway"))
    drives = {"school_zone": school_day[1], "urban": urban_by_condition["day"], "highway": highway}
    mean = {}
    for name, truths in drives.items():
        for cls in ("pedestrian", "cyclist"):
            mean[name, cls] = float(np.mean([sum(a.class_name == cls for a in t.agents) for t in truths]))
        print(f"\n[complementarity] {name:11s}: {mean[name, 'pedestrian']:.1f} pedestrians, "
              f"{mean[name, 'cyclist']:.1f} cyclists per frame", end="")
    print()
    assert mean["highway", "pedestrian"] == 0 and mean["highway", "cyclist"] == 0
    assert mean["school_zone", "pedestrian"] >= 2.0 * mean["urban", "pedestrian"]
    assert mean["school_zone", "cyclist"] >= 2.0 * mean["urban", "cyclist"]
    assert mean["school_zone", "pedestrian"] >= 5.0
