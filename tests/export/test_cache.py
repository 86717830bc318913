"""The training-data cache (export/data.py): logs and arrays shared by concurrent runs, verified
before reuse, rebuilt when damaged, and named by every setting that changes their bytes.

Tiny drives (half a second at 128x72): each test builds its own cache in well under a second.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fusion_rt.errors import ConfigError
from fusion_rt.export.configs import TRAIN_SEED_BASE, VAL_SEED_BASE, DataConfig, DriveSpec, plan_drives
from fusion_rt.export.data import Split, drive_log_path, load_data, read_logs, record_drives
from fusion_rt.preprocess import PreprocessConfig
from fusion_rt.rig import Rig

from ._fixtures import tiny_split

SIZE = (128, 72)
QUALITY = 85


def _config(offset: int = 0) -> DataConfig:
    return DataConfig(train_drives=plan_drives(1, TRAIN_SEED_BASE + 950 + offset, 0.5),
                      val_drives=plan_drives(1, VAL_SEED_BASE + 950 + offset, 0.5), camera_size=SIZE,
                      jpeg_quality=QUALITY)


def _pre() -> PreprocessConfig:
    return PreprocessConfig.from_rig(Rig.default(camera_size=SIZE))


def _hidden(folder: Path) -> list[str]:
    """Temporary files left behind (every cache temporary starts with a dot)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _same(a: Split, b: Split) -> None:
    assert len(a) == len(b)
    for name in ("camera", "radar", "present", "labels", "bev", "stamp_ns"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


# ------------------------------------------------------------------- finding 5: concurrent writers


def test_two_writers_of_one_cached_log_do_not_collide(tmp_path, monkeypatch):
    """A second run recording the same drive while the first is still writing it (two `train
    --cache C` at once) used the same `.NAME.partial`: the first rename moved the other's file and
    its own rename failed with FileNotFoundError."""
    import fusion_rt.sim.record as record

    real = record.simulate_drive
    drive = DriveSpec(seed=TRAIN_SEED_BASE + 960, seconds=0.5, conditions="day", scene_type=None)
    started, raced = [], []

    def racing(config):
        for k, msg in enumerate(real(config)):
            yield msg
            if k == 10 and not started:  # half-way through: the other run records the drive and finishes
                started.append(True)
                raced.append(record_drives([drive], SIZE, QUALITY, tmp_path))

    monkeypatch.setattr(record, "simulate_drive", racing)
    [path] = record_drives([drive], SIZE, QUALITY, tmp_path)
    assert raced == [[path]]
    assert _hidden(path.parent) == []
    _, counts = read_logs([path], _pre(), strict=True)  # complete: no skipped records
    assert counts["skipped_records"] == 0 and counts["frames"] == 10


def test_two_writers_of_one_array_file_do_not_collide(tmp_path, monkeypatch):
    """The same race on an array file (`.NAME.partial.npz`)."""
    split = tiny_split(3)
    target = tmp_path / "train-x.npz"
    real = np.savez
    raced = []

    def racing(file, *args, **kwargs):
        real(file, *args, **kwargs)
        if not raced:  # the other run saves the same entry between this one's write and its rename
            raced.append(True)
            split.save(target, offset=np.float64(1.5))

    monkeypatch.setattr(np, "savez", racing)
    split.save(target, offset=np.float64(1.5))
    back, extra = Split.load(target)
    _same(back, split)
    assert float(extra["offset"]) == 1.5 and raced
    assert _hidden(tmp_path) == []


def test_a_failed_array_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    """Split.save had no try/finally: a failed write (disk full) left its `.partial.npz` behind.
    Now the temporary goes, an existing entry is kept, and the error is typed and names the file."""
    from fusion_rt.errors import OutputError

    split = tiny_split(2)
    target = tmp_path / "val-x.npz"
    split.save(target)
    before = target.read_bytes()

    def disk_full(file, *args, **kwargs):
        if hasattr(file, "write"):
            file.write(b"PK\x03\x04 half")
        else:
            Path(file).write_bytes(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OutputError, match=r"val-x\.npz.*No space left"):
        split.save(target)
    assert target.read_bytes() == before
    assert _hidden(tmp_path) == []


# ------------------------------------------------------------ finding 6: damaged cached drive logs


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "no checksum file"])
def test_a_damaged_cached_log_is_recorded_again(tmp_path, damage):
    """A truncated log (disk full, interrupted copy of the cache) gave 15 samples instead of 30
    and another radar normalization, silently, and the arrays built from it stayed cached."""
    config, pre = _config(), _pre()
    good = load_data(config, pre, tmp_path)
    log = Path(good.log_paths["train"][0])
    original = log.read_bytes()
    data = bytearray(original)
    if damage == "truncated":
        log.write_bytes(data[: int(len(data) * 0.6)])
    elif damage == "flipped byte":
        data[len(data) // 2] ^= 0xFF
        log.write_bytes(bytes(data))
    else:  # a log from before the checksums (or whose checksum file was lost) is not trusted
        for side in log.parent.iterdir():
            if side.name.startswith(log.name) and side != log:
                side.unlink()
    shutil.rmtree(tmp_path / "arrays")  # the arrays are rebuilt from the logs
    notes = []
    again = load_data(config, pre, tmp_path, note=notes.append)
    assert log.read_bytes() == original
    assert len(notes) == 1 and log.name in notes[0] and "recording it again" in notes[0], notes
    _same(again.train, good.train)
    assert again.preprocess == good.preprocess
    # an intact cache is reused as it is
    notes.clear()
    load_data(config, pre, tmp_path, note=notes.append)
    assert notes == []


def test_a_log_damaged_after_its_check_is_refused_by_load_data(tmp_path, monkeypatch):
    """load_data threw away read_logs' skipped_records: a cached log read with damaged records is
    now a ConfigError naming it, never training data."""
    from fusion_rt.export import data as data_module

    config, pre = _config(1), _pre()
    real = data_module.record_drives

    def then_damaged(drives, *args, **kwargs):
        paths = real(drives, *args, **kwargs)
        raw = paths[0].read_bytes()
        paths[0].write_bytes(raw[: int(len(raw) * 0.6)])
        return paths

    monkeypatch.setattr(data_module, "record_drives", then_damaged)
    with pytest.raises(ConfigError, match=r"cached log .*drive-.*\.mcap.* damaged.*delete it"):
        load_data(config, pre, tmp_path)
    assert not list((tmp_path / "arrays").glob("*.npz"))  # nothing cached from it


def test_read_logs_strict_names_the_damaged_log(tmp_path):
    drive = DriveSpec(seed=TRAIN_SEED_BASE + 961, seconds=1.5, conditions="fog", scene_type=None)
    [path] = record_drives([drive], SIZE, QUALITY, tmp_path)
    raw = path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(raw[: int(len(raw) * 0.8)])  # the last chunk cut: the first one still reads
    _, counts = read_logs([cut], _pre())  # field logs: tolerant, the damage counted
    assert counts["skipped_records"] > 0
    with pytest.raises(ConfigError, match=r"cut\.mcap.*delete it"):
        read_logs([cut], _pre(), strict=True)


# ------------------------------------------------------------------ finding 7: damaged array files


def test_an_empty_array_file_is_a_typed_error(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"empty\.npz is damaged.*delete it to rebuild"):
        Split.load(tmp_path / "empty.npz")


@pytest.mark.parametrize("which", ["train", "val"])
def test_load_data_rebuilds_a_damaged_array_file(tmp_path, which):
    """A zero-byte array file was an EOFError traceback; now it is rebuilt, and said so."""
    config, pre = _config(2), _pre()
    good = load_data(config, pre, tmp_path)
    [npz] = (tmp_path / "arrays").glob(f"{which}-*.npz")
    npz.write_bytes(b"")
    notes = []
    again = load_data(config, pre, tmp_path, note=notes.append)
    assert len(notes) == 1 and npz.name in notes[0] and "rebuilding" in notes[0], notes
    _same(again.train, good.train)
    _same(again.val, good.val)
    Split.load(npz)  # whole again


# ------------------------------------------------------------------------ finding 8: cache key


@pytest.mark.parametrize("a, b", [(3000.0, 2999.996), (1234.56, 1234.564), (0.5, 0.5000001)])
def test_drives_of_different_lengths_have_different_logs(tmp_path, a, b):
    """`{seconds:g}` kept six significant digits: 3000.0 and 2999.996 s shared one cached log."""
    def path(seconds):
        return drive_log_path(DriveSpec(seed=5, seconds=seconds, conditions="day", scene_type=None), SIZE, QUALITY,
                              tmp_path)

    assert path(a) != path(b)
    assert path(a) == path(float(a))


def test_a_log_recorded_for_another_drive_is_not_reused(tmp_path):
    """Whatever the name, the checksum file records the drive: a log put under another drive's
    name (a name collision, a copied cache) is recorded again."""
    a = DriveSpec(seed=TRAIN_SEED_BASE + 962, seconds=0.5, conditions="day", scene_type=None)
    b = DriveSpec(seed=TRAIN_SEED_BASE + 963, seconds=0.5, conditions="day", scene_type=None)
    [pa] = record_drives([a], SIZE, QUALITY, tmp_path)
    pb = drive_log_path(b, SIZE, QUALITY, tmp_path)
    for f in list(pa.parent.iterdir()):
        if f.name.startswith(pa.name):
            shutil.copy(f, f.with_name(f.name.replace(pa.name, pb.name)))
    notes = []
    record_drives([b], SIZE, QUALITY, tmp_path, note=notes.append)
    assert len(notes) == 1 and pb.name in notes[0] and "another drive" in notes[0], notes
    assert pb.read_bytes() != pa.read_bytes()


def test_read_logs_does_not_count_an_assumed_schema_as_skipped(tmp_path):
    # A log whose schemas store no definition (rosbag2's mcap plugin without definitions) reads whole,
    # the standard types assumed (issue kind schema_assumed): read_logs counted each such schema as a
    # skipped record ("damaged records") and refused the log with strict=True.
    from mcap.reader import make_reader
    from mcap.writer import Writer

    drive = DriveSpec(seed=TRAIN_SEED_BASE + 962, seconds=0.5, conditions="day", scene_type=None)
    [path] = record_drives([drive], SIZE, QUALITY, tmp_path)
    blank = tmp_path / "blank.mcap"
    with open(path, "rb") as f, open(blank, "wb") as out:
        writer, schemas, channels = Writer(out), {}, {}
        writer.start("ros2", "test")
        for schema, channel, m in make_reader(f).iter_messages():
            if schema.id not in schemas:
                schemas[schema.id] = writer.register_schema(schema.name, schema.encoding, b"")
            if channel.id not in channels:
                channels[channel.id] = writer.register_channel(channel.topic, channel.message_encoding,
                                                               schemas[schema.id])
            writer.add_message(channels[channel.id], log_time=m.log_time, publish_time=m.publish_time, data=m.data)
        writer.finish()
    _, whole = read_logs([path], _pre(), strict=True)
    _, counts = read_logs([blank], _pre(), strict=True)  # nothing skipped: not refused as damaged
    assert counts["skipped_records"] == 0 and counts["frames"] == whole["frames"] > 0
