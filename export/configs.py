"""Training configurations: which simulated drives, how to train, and the named presets.

`DataConfig` says which drives the simulator records (seeds, lengths, conditions, scene types)
and how densely their camera frames are sampled; `TrainConfig` holds the optimizer and loss
settings; `RunConfig` ties them to a model and a seed. Presets (`PRESETS`) are sized by
measurement on the project's 2-core CPU machine:

- `quick`: under a minute here (a couple on a busy machine); for tests and CI.
- `ablation`: about 5 minutes per run, so the ablation table (5 variants x 3 seeds) runs in the
  background within a working session.
- `default`: the model shipped by default (the `DEPLOY_MODEL` architecture), about 35 minutes.

Everything here is plain data with JSON round-trips; validation raises `ConfigError` naming the
offending value. Numpy only: nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace

from fusion_rt.errors import ConfigError
from fusion_rt.messages import MODALITIES

__all__ = ["DriveSpec", "DataConfig", "TrainConfig", "RunConfig", "PRESETS", "preset", "plan_drives",
           "DEPLOY_MODEL", "TRAIN_SEED_BASE", "VAL_SEED_BASE", "HELDOUT_SEED_BASE", "ALL_CONDITIONS", "ALL_SCENE_TYPES"]

#: How old a modality's features may be at a camera trigger before it is masked (ns): what an
#: exported package's manifest says (`max_age_ns`), so what its runtime and replay fuse, and what
#: `fusion-rt evaluate` and export's parity frames read logs with, so that evaluating a run and
#: replaying its package see the same sensors (training samples with LogDataset's own defaults).
PACKAGE_MAX_AGE_NS = {"radar": 150_000_000, "map": 3_000_000_000, "text": 3_000_000_000}

# Seed ranges per split: training, validation and held-out evaluation drives never share a world.
TRAIN_SEED_BASE = 10_000
VAL_SEED_BASE = 20_000
HELDOUT_SEED_BASE = 30_000

# The simulator's conditions and scene types (fusion_rt.sim.world), repeated here so a config can
# be built and validated without importing the simulator.
ALL_CONDITIONS: tuple[str, ...] = ("day", "night", "fog", "rain")
ALL_SCENE_TYPES: tuple[str, ...] = ("urban", "highway", "school_zone", "construction")


def _is_int(value, lo: int = 0) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= lo


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class DriveSpec:
    """One simulated drive: the arguments of `fusion_rt.sim.DriveConfig` that vary per drive."""

    seed: int  # world seed: same seed, same bytes
    seconds: float  # drive length; 20 camera frames per second
    conditions: str  # one of ALL_CONDITIONS for the whole drive, or "mixed"
    scene_type: str | None  # one of ALL_SCENE_TYPES, or None: several along the drive

    def __post_init__(self) -> None:
        if not _is_int(self.seed):
            raise ConfigError(f"drive seed must be a non-negative integer, got {self.seed!r}")
        if not _is_number(self.seconds) or self.seconds <= 0:
            raise ConfigError(f"drive seconds must be a positive number, got {self.seconds!r}")
        if self.conditions not in ALL_CONDITIONS + ("mixed",):
            raise ConfigError(f"drive conditions must be one of {ALL_CONDITIONS + ('mixed',)}, "
                              f"got {self.conditions!r}")
        if self.scene_type is not None and self.scene_type not in ALL_SCENE_TYPES:
            raise ConfigError(f"drive scene_type must be None or one of {ALL_SCENE_TYPES}, got {self.scene_type!r}")


def plan_drives(count: int, seed_base: int, seconds: float, conditions: tuple[str, ...] = ALL_CONDITIONS,
                scene_types: tuple[str | None, ...] = ALL_SCENE_TYPES) -> tuple[DriveSpec, ...]:
    """`count` drives with seeds seed_base, seed_base + 1, ... and a balanced mix of settings.

    Drive i gets condition i mod C and scene type (i + i // C) mod S: with 4 x 4 settings, every
    4 consecutive drives cover each condition and each scene type once, and 16 drives cover every
    pair once (a Latin-square walk), so short plans are still balanced.
    """
    if not _is_int(count, 1):
        raise ConfigError(f"drive count must be a positive integer, got {count!r}")
    if not conditions or not scene_types:
        raise ConfigError("plan_drives needs at least one condition and one scene type")
    nc, ns = len(conditions), len(scene_types)
    return tuple(DriveSpec(seed=seed_base + i, seconds=float(seconds), conditions=conditions[i % nc],
                           scene_type=scene_types[(i + i // nc) % ns]) for i in range(count))


@dataclass(frozen=True)
class DataConfig:
    """The simulated training and validation data; its hash names the preprocessed-array cache."""

    train_drives: tuple[DriveSpec, ...]  # recorded and read for training
    val_drives: tuple[DriveSpec, ...]  # for validation metrics; seeds disjoint from training
    # Keep every n-th camera frame: at 20 Hz neighbouring frames are nearly identical, so a stride
    # buys more distinct scenes per training step for the same simulation time.
    train_frame_stride: int = 2
    val_frame_stride: int = 2
    camera_size: tuple[int, int] = (640, 360)  # (width, height) rendered by the simulator
    jpeg_quality: int = 85  # the simulator's default: what a deployed camera stream looks like
    # Radar power normalization is fitted on every n-th radar scan of the training drives.
    radar_fit_stride: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "train_drives", tuple(_drive(d) for d in self.train_drives))
        object.__setattr__(self, "val_drives", tuple(_drive(d) for d in self.val_drives))
        object.__setattr__(self, "camera_size", tuple(self.camera_size))
        if not self.train_drives or not self.val_drives:
            raise ConfigError("DataConfig needs at least one training and one validation drive")
        train_seeds = [d.seed for d in self.train_drives]
        val_seeds = [d.seed for d in self.val_drives]
        shared = sorted(set(train_seeds) & set(val_seeds))
        if shared:
            raise ConfigError(f"training and validation drives share seeds {shared[:5]}; they must be disjoint")
        for name in ("train_frame_stride", "val_frame_stride", "radar_fit_stride"):
            if not _is_int(getattr(self, name), 1):
                raise ConfigError(f"DataConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if len(self.camera_size) != 2 or not all(_is_int(v, 64) for v in self.camera_size):
            raise ConfigError(f"DataConfig.camera_size must be (width, height) >= 64, got {self.camera_size!r}")
        if not _is_int(self.jpeg_quality, 1) or self.jpeg_quality > 100:
            raise ConfigError(f"DataConfig.jpeg_quality must be in [1, 100], got {self.jpeg_quality!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["camera_size"] = list(self.camera_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DataConfig:
        return _build(cls, d)

    def digest(self, *extra: dict) -> str:
        """A short stable hash of this config (and `extra` dicts): the cache key of its arrays."""
        text = json.dumps([self.to_dict(), *extra], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _drive(d) -> DriveSpec:
    if isinstance(d, DriveSpec):
        return d
    if isinstance(d, dict):
        return _build(DriveSpec, d)
    raise ConfigError(f"a drive must be a DriveSpec or a dict, got {d!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer, schedule and loss settings."""

    epochs: int = 8  # passes over the training samples
    batch_size: int = 32  # samples per step; 32 keeps a 2-core step near 0.4 s for the full model
    lr: float = 2e-3  # AdamW peak learning rate (small model from scratch, short schedule)
    weight_decay: float = 0.02  # AdamW decoupled weight decay (not applied to norms and biases)
    warmup_fraction: float = 0.05  # linear warm-up over this share of steps, then cosine decay to 0
    grad_clip: float = 1.0  # max global gradient norm; attention from scratch spikes early
    # Probability of masking each present modality of a sample (never all of them): a head must
    # cope with a missing sensor at run time, and the masked runs in the ablation measure it.
    modality_dropout: float = 0.25
    # The same for the context inputs (map, text). They name the kind of road, not who is on it:
    # masked as often as the sensors, the fused heads leaned on them as a prior for the road users
    # of each scene type and lost to radar alone on held-out drives (export/results/README.md).
    context_dropout: float = 0.5
    # Scene-label BCE pos_weight = negatives / positives in the training labels, clipped here.
    scene_pos_weight_max: float = 10.0
    # BEV occupancy is sparse (~1% of cells): BCE pos_weight = sqrt(negatives / positives) per
    # class, clipped here. The square root keeps recall up without drowning the 0.5-threshold
    # precision that IoU measures.
    bev_pos_weight_max: float = 20.0
    bev_loss_weight: float = 1.0  # BEV loss relative to the scene loss
    eval_batch_size: int = 64  # inference batch for validation

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if not _is_int(getattr(self, name), 1):
                raise ConfigError(f"TrainConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("lr", "grad_clip", "scene_pos_weight_max", "bev_pos_weight_max", "bev_loss_weight"):
            value = getattr(self, name)
            if not _is_number(value) or value <= 0:
                raise ConfigError(f"TrainConfig.{name} must be a positive number, got {value!r}")
        for name in ("weight_decay", "warmup_fraction", "modality_dropout", "context_dropout"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value < 1:
                raise ConfigError(f"TrainConfig.{name} must be in [0, 1), got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return _build(cls, d)


@dataclass(frozen=True)
class RunConfig:
    """One training run: preset name, data, training settings, model choice and seed."""

    preset: str  # the PRESETS entry it came from (informational)
    data: DataConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    head: str = "attention"  # fusion head: attention | concat | gated
    modalities: tuple[str, ...] = MODALITIES  # encoders built; the others are ignored
    seed: int = 0  # torch and numpy seeds: the same seed (and thread count) gives the same run
    # Architecture overrides keyed by registered model name (camera, radar, map, text, attention,
    # concat, gated): {name: {config field: value}}. Entries for encoders not built or heads not
    # chosen are ignored, so one architecture serves every head and modality subset.
    model: dict = field(default_factory=dict)
    # Preprocessing overrides: {PreprocessConfig field: value}, e.g. {"camera_height": 288,
    # "camera_width": 512} trains (and exports) a model for another camera input size; the radar and
    # map grids always come from the rig. Empty: the runtime's defaults (144x256).
    preprocess: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.data, DataConfig) or not isinstance(self.train, TrainConfig):
            raise ConfigError(f"RunConfig needs a DataConfig and a TrainConfig, got {type(self.data).__name__} and "
                              f"{type(self.train).__name__}")
        if isinstance(self.modalities, str) or not isinstance(self.modalities, (list, tuple)):
            raise ConfigError(f"modalities must be a list of names from {','.join(MODALITIES)}, "
                              f"got {self.modalities!r}")
        object.__setattr__(self, "modalities", tuple(self.modalities))
        if not isinstance(self.model, dict) or not all(
                isinstance(k, str) and isinstance(v, dict) for k, v in self.model.items()):
            raise ConfigError(f"model must map a model name to a dict of its config fields, got {self.model!r}")
        object.__setattr__(self, "model", json.loads(json.dumps(self.model)))  # plain JSON data, lists not tuples
        from fusion_rt.preprocess import PreprocessConfig  # numpy and OpenCV: still no torch

        # the grids come from the rig, the radar power normalization is fitted on the training logs
        allowed = {f.name for f in fields(PreprocessConfig)} - {"radar_shape", "map_grid", "radar_power_db_offset",
                                                                 "radar_power_db_scale"}
        if not isinstance(self.preprocess, dict) or set(self.preprocess) - allowed:
            raise ConfigError(f"preprocess must map PreprocessConfig fields ({', '.join(sorted(allowed))}) to values, "
                              f"got {self.preprocess!r}")
        object.__setattr__(self, "preprocess", json.loads(json.dumps(self.preprocess)))
        PreprocessConfig(**self.preprocess)  # its own checks (ConfigError naming the field) before any training
        if self.head not in ("attention", "concat", "gated"):
            raise ConfigError(f"head must be one of attention, concat, gated; got {self.head!r}")
        bad = [m for m in self.modalities if m not in MODALITIES]
        if not self.modalities or bad or len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"modalities must be distinct names from {','.join(MODALITIES)}; "
                              f"got {','.join(self.modalities) or 'nothing'}")
        # keep the canonical order so a run's inputs line up with MODALITIES everywhere
        object.__setattr__(self, "modalities", tuple(m for m in MODALITIES if m in self.modalities))
        if not _is_int(self.seed) or self.seed >= 2**63:  # torch.manual_seed takes at most 64 bits
            raise ConfigError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")

    def to_dict(self) -> dict:
        d = {"preset": self.preset, "data": self.data.to_dict(), "train": self.train.to_dict(),
             "head": self.head, "modalities": list(self.modalities), "seed": self.seed, "model": self.model}
        if self.preprocess:  # left out when empty: runs from before the field read back equal
            d["preprocess"] = self.preprocess
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        _known(cls, d)
        missing = [k for k in ("preset", "data", "train", "head", "modalities", "seed") if k not in d]
        if missing:
            raise ConfigError(f"RunConfig lacks {missing}")
        return cls(preset=d["preset"], data=DataConfig.from_dict(d["data"]), train=TrainConfig.from_dict(d["train"]),
                   head=d["head"], modalities=d["modalities"], seed=d["seed"], model=d.get("model", {}),
                   preprocess=d.get("preprocess", {}))


def _build(cls, d):
    """cls(**d) from JSON: unknown or missing fields and values of the wrong type are ConfigErrors."""
    _known(cls, d)
    try:
        return cls(**d)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"malformed {cls.__name__}: {exc}") from exc


def _known(cls, d) -> None:
    if not isinstance(d, dict):
        raise ConfigError(f"{cls.__name__} must be a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields {unknown}")


def _data(n_train: int, train_s: float, n_val: int, val_s: float, **kw) -> DataConfig:
    return DataConfig(train_drives=plan_drives(n_train, TRAIN_SEED_BASE, train_s),
                      val_drives=plan_drives(n_val, VAL_SEED_BASE, val_s), **kw)


#: The deployed architecture (the shipped package; export/results/README.md "Architecture"): a
#: wider camera encoder (stride-16 tokens from 48/96/192-channel stages) where int8 convolutions
#: pay (2.2-2.5x faster than FP32 in ONNX Runtime here with the trained weights, 2.6-2.8x with the
#: stem kept FP32, vs 1.4x for the 32/48/96 encoder), so the camera is most of a frame's compute as
#: DESIGN.md plans; and a 4 x 4 grid of BEV queries (21 queries instead of 69), which halves the
#: attention head's latency. Without overrides (quick, ablation) the model is the compact one the
#: ablation measured.
DEPLOY_MODEL: dict = {
    "camera": {"stem_width": 16, "widths": [48, 96, 192], "depths": [0, 1, 1]},
    "attention": {"bev_queries": [4, 4]},
}

#: Named presets. Sizes were chosen by measurement (export/results/README.md has the timings).
PRESETS: dict[str, RunConfig] = {
    # 4 x 8 s of training drives (one per condition and scene type), 320 samples, 6 epochs;
    # 4 x 4 s of validation drives (160 samples), so each label has both classes.
    "quick": RunConfig("quick", _data(4, 8.0, 4, 4.0), TrainConfig(epochs=6, lr=3e-3)),
    # 48 x 10 s (every condition x scene-type pair three times), every 4th frame: 2400 samples,
    # 8 epochs. Three times the worlds of 16 x 15 s at stride 2 for the same steps: with 16 drives
    # the fused heads learned each scene type's map and text as a prior for its road users and
    # fell below radar alone on held-out drives (export/results/README.md).
    "ablation": RunConfig("ablation", _data(48, 10.0, 8, 8.0, train_frame_stride=4), TrainConfig(epochs=8)),
    # 32 x 25 s (every condition x scene-type pair twice), 8000 samples, 10 epochs; the deployed
    # architecture.
    "default": RunConfig("default", _data(32, 25.0, 16, 8.0), TrainConfig(epochs=10), model=DEPLOY_MODEL),
}


def preset(name: str, **overrides) -> RunConfig:
    """The preset `name` with RunConfig fields overridden (head, modalities, seed, train, data)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown config {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
