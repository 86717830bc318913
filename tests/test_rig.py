import json
import math

import numpy as np
import pytest

from fusion_rt.errors import ConfigError, FusionRTError
from fusion_rt.rig import BevGrid, CameraIntrinsics, Pose, Radar, Rig


def test_rig_round_trips_through_json():
    rig = Rig.default(camera_size=(1280, 720))
    assert Rig.from_dict(json.loads(json.dumps(rig.to_dict()))) == rig


def test_projection_of_points_ahead():
    rig = Rig.default()
    cam = rig.camera
    k = cam.intrinsics
    # A point straight ahead at the camera's height, far away, lands on the centre column, and a
    # point to the left (positive y) lands left of centre.
    points = np.array([[cam.pose.x + 1000.0, 0.0, cam.pose.z], [cam.pose.x + 10.0, 2.0, 0.0]])
    (u0, v0), (u1, _) = cam.project(points)[0]
    assert u0 == pytest.approx(k.cx)
    # the camera pitches down 3 degrees, so the horizon sits above the principal point
    assert v0 == pytest.approx(k.cy - k.fy * math.tan(math.radians(3.0)), abs=0.5)
    assert u1 < k.cx


def test_projection_and_rays_are_inverse():
    cam = Rig.default().camera
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(5, 60, 50), rng.uniform(-10, 10, 50), rng.uniform(0, 3, 50)], axis=1)
    uv, depth = cam.project(pts)
    assert (depth > 0).all()
    rays = cam.ray_ego(uv)
    expected = pts - cam.pose.translation()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(rays, expected, atol=1e-9)


def test_pose_inverse():
    pose = Pose(1.0, -2.0, 0.5, roll=0.1, pitch=-0.2, yaw=0.7)
    pts = np.random.default_rng(1).normal(size=(20, 3))
    np.testing.assert_allclose(pose.from_ego(pose.to_ego(pts)), pts, atol=1e-12)


def test_column_azimuth_matches_projection():
    k = CameraIntrinsics.from_fov(640, 360, 80.0)
    az = k.column_azimuth()
    assert az[0] == pytest.approx(math.radians(40.0), abs=0.01)  # left edge is positive azimuth
    assert az[-1] == pytest.approx(-math.radians(40.0), abs=0.01)


def test_bev_cells():
    bev = BevGrid()
    assert bev.shape == (64, 64)
    r, c, inside = bev.cell_of(np.array([51.0, 0.1, -1.0]), np.array([25.0, -25.5, 0.0]))
    assert list(r[:2]) == [0, 63] and list(c[:2]) == [0, 63]
    assert list(inside) == [True, True, False]
    xs, ys = bev.cell_centres()
    r2, c2, _ = bev.cell_of(xs, ys)
    assert list(r2) == list(range(64)) and list(c2) == list(range(64))


def test_radar_bins():
    radar = Radar()
    assert radar.range_centres()[0] > radar.range_min_m and radar.range_centres()[-1] < radar.range_max_m
    az = radar.azimuth_centres()
    assert az[0] < 0 < az[-1] and len(az) == radar.num_azimuth_bins


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda: CameraIntrinsics.from_fov(8, 360), "width"),
        (lambda: CameraIntrinsics(640, 360, fx=-1.0, fy=1.0, cx=0.0, cy=0.0), "fx"),
        (lambda: Radar(num_range_bins=0), "num_range_bins"),
        (lambda: Radar(range_min_m=200.0), "range_min_m"),
        (lambda: BevGrid(cell_m=0.0), "cell_m"),
        (lambda: Rig.from_dict({"camera": {}}), "malformed rig"),
        # values a manifest could carry that used to load and then poison every projection
        (lambda: CameraIntrinsics(640, 360, fx=1.0, fy=1.0, cx=float("nan"), cy=0.0), "cx must be a finite number"),
        (lambda: Pose(yaw=None), "pose yaw must be a finite number, got None"),
        (lambda: Pose(x="3.7"), "pose x"),
        (lambda: Rig(camera=Rig.default().camera, class_names="car"), "class_names"),
        (lambda: Rig(camera=Rig.default().camera, class_names=("car", "car")), "distinct"),
        (lambda: BevGrid(x_max_m=50.0, cell_m=0.8), "whole numbers of cells"),  # 62.5 cells: cut off silently
    ],
)
def test_bad_rig_values_raise_config_error(make, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        make()
    assert isinstance(info.value, FusionRTError)
