"""export.evaluate takes the BEV occupancy decision as the runtime does: in float32."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fusion_rt.export.data import SCENE_LABELS
from fusion_rt.export.evaluate import predict, summarize

from ._fixtures import BEV_LOGITS, tiny_split


@pytest.mark.train
def test_predict_thresholds_bev_in_float32():
    torch = pytest.importorskip("torch")

    class Model(torch.nn.Module):
        config = SimpleNamespace(modalities=("camera",))

        def forward(self, inputs, mask):
            b = inputs["camera"].shape[0]
            return SimpleNamespace(scene_logits=torch.zeros(b, len(SCENE_LABELS)),
                                   bev_logits=torch.from_numpy(BEV_LOGITS).repeat(b, 1, 1, 1),
                                   modality_share=torch.ones(b, len(SCENE_LABELS) + 1, 1))

    split = tiny_split()
    pred = predict(Model(), split, vocab=None)
    result = summarize(split, pred, ("car",), ("camera",))
    assert result["overall"]["bev_iou"]["car"] == 1.0  # float16 probabilities gave 0.5
    assert pred.bev.tolist() == [[[[True, False]]]] * 2


Q = "head.blocks.0.cross_attn.q.weight"


@pytest.mark.train
@pytest.mark.parametrize("edit, needle", [
    (lambda cfg, st: cfg["model"].update(encoders=[]), "encoders must map modality"),
    (lambda cfg, st: cfg["model"].update(head_config=5), "head_config must be an object"),
    (lambda cfg, st: cfg["model"].update(head_config={"mlp_ratio": "x"}), "malformed model config"),
    (lambda cfg, st: st.update(bogus=st[Q] * 0), r"unexpected \['bogus'\]"),
    (lambda cfg, st: st.pop(Q), rf"missing \['{Q}'\]"),
    (lambda cfg, st: st.update({Q: st[Q].bool()}), "torch.bool"),
    (lambda cfg, st: st.update({Q: st[Q].half()}), "torch.float16"),
])
def test_a_damaged_run_directory_is_a_typed_error_naming_what(tmp_path, edit, needle):
    """config.json fields of the wrong type were tracebacks; weights of another name, shape or dtype
    were named by no tensor (or silently cast: a bool weight loaded as 1.0)."""
    pytest.importorskip("torch")
    import json

    from safetensors.torch import load_file, save_file

    from fusion_rt.errors import ConfigError
    from fusion_rt.export.evaluate import load_run

    from ._fixtures import write_random_run

    run = write_random_run(tmp_path / "run")
    load_run(run)
    config, state = json.loads((run / "config.json").read_text()), load_file(str(run / "model.safetensors"))
    edit(config, state)
    (run / "config.json").write_text(json.dumps(config))
    save_file(state, str(run / "model.safetensors"))
    with pytest.raises(ConfigError, match=needle):
        load_run(run)


@pytest.mark.train
def test_a_vocabulary_of_another_model_is_refused(tmp_path):
    """vocab.json with another word count remapped every word id silently; another max_tokens was a
    traceback deep in the text encoder."""
    pytest.importorskip("torch")
    import json

    from fusion_rt.errors import ConfigError
    from fusion_rt.export.evaluate import load_run
    from fusion_rt.package import sha256_file
    from fusion_rt.preprocess import Vocabulary

    from ._fixtures import write_random_run

    run = write_random_run(tmp_path / "run")
    vocab = Vocabulary.load(run / "vocab.json")
    for other in (Vocabulary(vocab.words[:2], vocab.max_tokens), Vocabulary(vocab.words, 32)):
        other.save(run / "vocab.json")
        with pytest.raises(ConfigError, match="vocab.json does not belong to this model"):
            load_run(run)
    # the same size with its words reordered: caught by the hash training records in config.json
    config = json.loads((run / "config.json").read_text())
    vocab.save(run / "vocab.json")
    config["vocabulary_sha256"] = sha256_file(run / "vocab.json")
    (run / "config.json").write_text(json.dumps(config))
    load_run(run)
    Vocabulary(vocab.words[::-1], vocab.max_tokens).save(run / "vocab.json")
    with pytest.raises(ConfigError, match="not the vocabulary this run was trained with"):
        load_run(run)


@pytest.mark.train
def test_evaluate_drop_masks_only_what_the_model_reads(tmp_path, short_drive):
    """--drop of a modality the model lacks is refused (as replay refuses it), and `used` lists what
    the frames really held: a camera-only log with the camera dropped leaves nothing to evaluate."""
    pytest.importorskip("torch")
    from fusion_rt.errors import ConfigError
    from fusion_rt.export.evaluate import evaluate_logs, load_run
    from fusion_rt.logs import LogReader, LogWriter
    from fusion_rt.messages import CameraFrame, GroundTruth

    from ._fixtures import write_random_run

    run = load_run(write_random_run(tmp_path / "run", modalities=("camera", "radar")))
    with pytest.raises(ConfigError, match="--drop 'map': not a modality of run"):
        evaluate_logs(run, [short_drive], drop=("map",))
    camera_only = tmp_path / "camera_only.mcap"
    with LogReader(short_drive) as reader, LogWriter(camera_only) as writer:
        for item in reader.messages():
            if isinstance(item.message, (CameraFrame, GroundTruth)):
                writer.write(item.message, topic=item.topic)
    result = evaluate_logs(run, [camera_only])
    assert result["used"] == ["camera"] and result["read"]["frames_without_input"] == 0
    with pytest.raises(ConfigError, match="no frame of .* holds any modality the model reads"):
        evaluate_logs(run, [camera_only], drop=("camera",))
