"""ONNX Runtime backend: the Runner contract, I/O binding with preallocated outputs, threading modes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from fusion_rt.backends import OrtConfig, OrtRunner, OrtThreading, Runner, RunnerError, SessionFromOnnx, create_runner
from fusion_rt.errors import ConfigError, MissingExtraError
from fusion_rt.package import load_package

from ..tiny_package import make_tiny_package


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return load_package(make_tiny_package(tmp_path_factory.mktemp("ort") / "pkg"))


def _head_feed(package, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in package.head.inputs:
        shape = [batch if isinstance(d, str) else d for d in spec.shape]
        feed[spec.name] = rng.normal(size=shape).astype(np.float32) if spec.name != "present" else \
            np.ones(shape, dtype=np.float32)
    return feed


def _reference(package, graph, feed):
    session = ort.InferenceSession(str(package.graph_path(graph)), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))


def test_runner_contract(package):
    runner = create_runner(package, "head")
    assert isinstance(runner, Runner) and not runner.is_active
    with pytest.raises(RunnerError, match="not active"):
        runner.infer(_head_feed(package))
    with runner:
        assert runner.is_active
        assert runner.input_names == tuple(t.name for t in package.head.inputs)
        assert runner.output_names == ("scene_logits", "bev_logits", "modality_share")
        feed = _head_feed(package)
        out = runner.infer(feed)
        ref = _reference(package, "head", feed)
        assert set(out) == set(ref)
        for name in ref:
            np.testing.assert_allclose(out[name], ref[name], rtol=1e-6, atol=1e-6)
        with pytest.raises(RunnerError, match="lacks inputs"):
            runner.infer({"present": feed["present"]})
        with pytest.raises(RunnerError, match="dtype float64"):
            runner.infer({**feed, "present": feed["present"].astype(np.float64)})
        # what ONNX Runtime itself refuses (one column too many) comes back as a RunnerError too
        wide = np.ones((1, feed["present"].shape[1] + 1), feed["present"].dtype)
        with pytest.raises(RunnerError, match="runner 'head' failed.*present"):
            runner.infer({**feed, "present": wide})
        assert runner.inference_count == 1
    assert not runner.is_active and runner.session is None


def test_io_binding_reuses_outputs_and_follows_inputs(package):
    with create_runner(package, "camera") as runner:
        image = np.zeros((1, 3, 36, 64), np.float32)
        out1 = runner.infer({"image": image})["tokens"]
        rng = np.random.default_rng(1)
        image[...] = rng.normal(size=image.shape)  # refill the bound buffer in place
        out2 = runner.infer({"image": image})["tokens"]
        assert out2 is out1  # the same preallocated output
        np.testing.assert_allclose(out2, _reference(package, "camera", {"image": image})["tokens"], rtol=1e-5,
                                   atol=1e-6)
        other = rng.normal(size=image.shape).astype(np.float32)  # a new array object: rebound
        np.testing.assert_allclose(runner.infer({"image": other})["tokens"],
                                   _reference(package, "camera", {"image": other})["tokens"], rtol=1e-5, atol=1e-6)
        strided = np.asfortranarray(other)  # non-contiguous input: copied, still right
        np.testing.assert_allclose(runner.infer({"image": strided})["tokens"],
                                   _reference(package, "camera", {"image": other})["tokens"], rtol=1e-5, atol=1e-6)
        batch = rng.normal(size=(3, 3, 36, 64)).astype(np.float32)  # another shape: a new binding
        tokens = runner.infer({"image": batch})["tokens"]
        assert tokens.shape == (3, 9, 8)
        np.testing.assert_allclose(tokens, _reference(package, "camera", {"image": batch})["tokens"], rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("threading", [OrtThreading.NO_SPIN, OrtThreading.SPIN])
def test_threading_modes_give_the_same_results(package, threading):
    feed = _head_feed(package, seed=3)
    ref = _reference(package, "head", feed)
    config = OrtConfig(threads=1, threading=threading)
    for io_binding in (True, False):
        with OrtRunner(SessionFromOnnx(package.graph_path("head"), config), io_binding=io_binding) as runner:
            out = runner.infer(feed)
            for name in ref:
                np.testing.assert_allclose(out[name], ref[name], rtol=1e-5, atol=1e-6)


_GLOBAL_SCRIPT = """
import sys
import numpy as np, onnxruntime as ort
from fusion_rt.backends import OrtConfig, OrtRunner, SessionFromOnnx
from fusion_rt.errors import ConfigError
path = sys.argv[1]
with OrtRunner(SessionFromOnnx(path, OrtConfig(threads=2, threading="global"))) as runner:
    out = runner.infer({"image": np.ones((1, 3, 36, 64), np.float32)})["tokens"]
try:
    SessionFromOnnx(path, OrtConfig(threads=1, threading="global"))()
    print("no error")
except ConfigError as exc:
    print("refused:", exc)
try:  # a fusion-rt session asking for its own pool is refused by name, not by ORT's RuntimeError
    SessionFromOnnx(path, OrtConfig(threading="no_spin"))()
except ConfigError as exc:
    print("per-session refused:", exc)
try:  # once the global pool exists, every session of the process must use it
    ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    print("default session ok")
except Exception as exc:
    print("default session fails")
print("tokens", float(out.sum()))
"""


_NEEDS_GLOBAL_POOL = pytest.mark.skipif(not hasattr(ort, "set_global_thread_pool_sizes"),
                                        reason="threading='global' needs onnxruntime >= 1.23")


@_NEEDS_GLOBAL_POOL
def test_global_pool_in_a_fresh_process(package):
    """The global pool is process-wide state: exercised in a subprocess so it leaks into no other test."""
    import subprocess
    import sys

    path = str(package.graph_path("camera"))
    result = subprocess.run([sys.executable, "-c", _GLOBAL_SCRIPT, path], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "refused: ONNX Runtime's global thread pool was already sized to 2" in result.stdout
    assert "per-session refused: ONNX Runtime's global thread pool is in use" in result.stdout
    ref = _reference(package, "camera", {"image": np.ones((1, 3, 36, 64), np.float32)})["tokens"]
    tokens = float(result.stdout.split("tokens")[-1])
    assert tokens == pytest.approx(float(ref.sum()), rel=1e-5)
    # why "global" is not the default: it breaks every plain session created later in the process
    assert "default session fails" in result.stdout
    # fusion-rt's sessions set no per-session pool sizes: ONNX Runtime would warn once per session
    assert "are ignored when using a global thread pool" not in result.stderr, result.stderr


def test_config_validation_and_missing_providers(package):
    with pytest.raises(ConfigError, match="'npu'"):
        OrtConfig(providers=("npu",))
    with pytest.raises(ConfigError, match="threads"):
        OrtConfig(threads=0)
    with pytest.raises(ConfigError, match="'fast'"):
        OrtConfig(threading="fast")
    with pytest.raises(ConfigError, match="providers must be a name or a list"):
        OrtConfig(providers=None)
    with pytest.raises(ConfigError, match="io_binding must be True or False, got 'no'"):
        OrtConfig(io_binding="no")
    with pytest.raises(ConfigError, match="no graph 'lidar'"):
        create_runner(package, "lidar")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    with pytest.raises(MissingExtraError, match=r"fusion-rt\[gpu\]"):
        SessionFromOnnx(package.graph_path("text"), OrtConfig(providers=("cuda",)))()
    with pytest.raises(ConfigError, match="does not exist"):
        SessionFromOnnx(package.root / "nope.onnx")()


def test_an_unreadable_graph_is_a_runner_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 this is not protobuf \xff\xff\xff")
    with pytest.raises(RunnerError, match="bad.onnx"):
        SessionFromOnnx(bad)()


_HOST_POOL_SCRIPT = """
import sys
import numpy as np, onnxruntime as ort
from fusion_rt.backends import OrtConfig, OrtRunner, SessionFromOnnx
from fusion_rt.errors import ConfigError
path = sys.argv[1]
ort.set_global_thread_pool_sizes(2, 1)  # the host application's own pool, made before fusion-rt's
options = ort.SessionOptions()
options.use_per_session_threads = False
ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
try:
    SessionFromOnnx(path, OrtConfig(threading="no_spin"))()
except ConfigError as exc:
    print("per-session refused:", exc)
with OrtRunner(SessionFromOnnx(path, OrtConfig(threads=4, threading="global"))) as runner:
    print("tokens", float(runner.infer({"image": np.ones((1, 3, 36, 64), np.float32)})["tokens"].sum()))
"""


@_NEEDS_GLOBAL_POOL
def test_a_global_pool_the_host_made_is_used_or_named(package):
    # The host application's ONNX Runtime global pool gave raw RuntimeError / Fail from FusionRuntime.
    import subprocess
    import sys

    path = str(package.graph_path("camera"))
    result = subprocess.run([sys.executable, "-c", _HOST_POOL_SCRIPT, path], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "per-session refused: this process already has an ONNX Runtime global thread pool" in result.stdout
    assert "pass threading='global'" in result.stdout and "tokens" in result.stdout


def test_a_global_pool_on_an_onnxruntime_without_it_is_a_config_error(package, monkeypatch):
    """onnxruntime < 1.23 (JetPack 6's onnxruntime-gpu wheels) has no set_global_thread_pool_sizes:
    threading='global' raised a raw AttributeError; it is refused naming the version it needs."""
    import fusion_rt.backends.onnxruntime as backend

    monkeypatch.setattr(backend, "_global_pool_threads", False)  # not sized yet in this process
    monkeypatch.delattr(ort, "set_global_thread_pool_sizes", raising=False)
    with pytest.raises(ConfigError, match=r"threading='global' needs onnxruntime >= 1\.23"):
        backend._ensure_global_pool(ort, 1)
    assert backend._global_pool_threads is False  # nothing was set: no_spin still works


def test_cpu_sessions_keep_optimizer_notes_off_stderr(tmp_path, capfd):
    """An fp16 package printed 'Could not find a CPU kernel and hence can't constant fold Add node'
    several times per session on stderr, past replay's --quiet: on the CPU provider alone,
    ONNX Runtime's warnings are such notes, so sessions log errors only."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    half = np.ones((1, 4), np.float16)
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"]), helper.make_node("Add", ["x", "c"], ["y"])], "fp16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4])],
        [numpy_helper.from_array(half, "a"), numpy_helper.from_array(half, "b")])
    path = tmp_path / "fp16.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))
    capfd.readouterr()
    session = SessionFromOnnx(path)()
    assert session.run(None, {"x": half})[0].tolist() == [[3.0] * 4]
    assert "constant fold" not in capfd.readouterr().err
