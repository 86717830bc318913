"""PyTorch encoders and fusion heads (host side; imports torch).

`create_model(name, **kw)` builds any registered model: encoders "camera", "radar", "map",
"text"; heads "attention" (default), "concat", "gated"; and "fusion", the full model. Every
encoder maps its preprocessed input (fusion_rt.preprocess) to tokens [B, N, D]; every head maps
per-modality tokens and a presence mask [B, M] to `HeadOutput`.
"""

from fusion_rt.export.models.attention_head import AttentionHead, AttentionHeadConfig
from fusion_rt.export.models.camera_encoder import CameraEncoder, CameraEncoderConfig
from fusion_rt.export.models.common import SCENE_LABELS, HeadOutput
from fusion_rt.export.models.concat_head import ConcatHead, ConcatHeadConfig
from fusion_rt.export.models.fusion_model import FusionModel, FusionModelConfig
from fusion_rt.export.models.gated_head import GatedHead, GatedHeadConfig
from fusion_rt.export.models.map_encoder import MapEncoder, MapEncoderConfig
from fusion_rt.export.models.radar_encoder import RadarEncoder, RadarEncoderConfig
from fusion_rt.export.models.registry import create_model, list_models, register_model
from fusion_rt.export.models.text_encoder import TextEncoder, TextEncoderConfig

__all__ = [
    "create_model",
    "list_models",
    "register_model",
    "SCENE_LABELS",
    "HeadOutput",
    "CameraEncoder",
    "CameraEncoderConfig",
    "RadarEncoder",
    "RadarEncoderConfig",
    "MapEncoder",
    "MapEncoderConfig",
    "TextEncoder",
    "TextEncoderConfig",
    "ConcatHead",
    "ConcatHeadConfig",
    "GatedHead",
    "GatedHeadConfig",
    "AttentionHead",
    "AttentionHeadConfig",
    "FusionModel",
    "FusionModelConfig",
]
