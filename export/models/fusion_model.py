"""The full fusion model for training: one encoder per modality and a head, from preprocessed inputs.

Encoders and head stay separately callable because they deploy as separate graphs (one ONNX
graph per encoder, one for the head; DESIGN.md section 4) that run at different rates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from fusion_rt.errors import ConfigError
from fusion_rt.export.models.common import HeadOutput, check_ints, check_modalities
from fusion_rt.export.models.registry import create_model, list_models, model_class, register_model
from fusion_rt.messages import MODALITIES
from fusion_rt.preprocess import PreprocessConfig
from fusion_rt.rig import Rig

__all__ = ["FusionModelConfig", "FusionModel"]


@dataclass(frozen=True)
class FusionModelConfig:
    modalities: tuple[str, ...] = MODALITIES  # encoders built, and the head's inputs, in this order
    head: str = "attention"  # a registered head: attention | concat | gated
    token_dim: int = 64  # width of every encoder's tokens and the head's input
    encoders: dict[str, dict] = field(default_factory=dict)  # per-modality encoder config overrides
    head_config: dict = field(default_factory=dict)  # head config overrides

    def __post_init__(self) -> None:
        if not isinstance(self.modalities, (list, tuple)) or not all(isinstance(m, str) for m in self.modalities):
            raise ConfigError(f"FusionModelConfig.modalities must be a list of modality names, got {self.modalities!r}")
        if not isinstance(self.encoders, dict) or not all(isinstance(v, dict) for v in self.encoders.values()):
            raise ConfigError(f"FusionModelConfig.encoders must map modality -> settings, got {self.encoders!r}")
        if not isinstance(self.head_config, dict):
            raise ConfigError(f"FusionModelConfig.head_config must be an object of settings, got {self.head_config!r}")
        object.__setattr__(self, "modalities", tuple(self.modalities))
        check_modalities("FusionModelConfig", self.modalities)
        check_ints("FusionModelConfig", token_dim=self.token_dim)
        if self.head not in list_models("head"):
            raise ConfigError(f"FusionModelConfig.head must be one of {list_models('head')}, got {self.head!r}")
        extra = sorted(set(self.encoders) - set(self.modalities))
        if extra:
            raise ConfigError(f"FusionModelConfig.encoders has settings for {extra}, not in modalities "
                              f"{self.modalities}")
        for name, overrides in [*self.encoders.items(), ("head_config", self.head_config)]:
            owner = model_class(self.head if name == "head_config" else name).config_class
            unknown = sorted(set(overrides) - {f.name for f in fields(owner)})
            if unknown:
                raise ConfigError(f"FusionModelConfig.{'head_config' if name == 'head_config' else 'encoders.' + name}"
                                  f" has unknown fields {unknown}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FusionModelConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown FusionModelConfig fields {unknown}")
        return cls(**d)


@register_model("fusion", kind="model")
class FusionModel(nn.Module):
    """Preprocessed inputs {modality: tensor} + presence [B, M] -> HeadOutput."""

    config_class = FusionModelConfig

    def __init__(self, config: FusionModelConfig | None = None, *, rig: Rig | None = None,
                 preprocess: PreprocessConfig | None = None) -> None:
        super().__init__()
        config = config or FusionModelConfig()
        rig = rig or Rig.default()
        preprocess = preprocess or PreprocessConfig.from_rig(rig)
        self.config = config
        self.encoders = nn.ModuleDict({
            m: create_model(m, rig=rig, preprocess=preprocess, **{"token_dim": config.token_dim,
                                                                   **config.encoders.get(m, {})})
            for m in config.modalities})
        self.head = create_model(config.head, rig=rig, **{"modalities": config.modalities,
                                                          "token_dim": config.token_dim, **config.head_config})

    def encode(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Tokens [B, N_m, D] of each modality in `inputs` that this model has an encoder for."""
        return {m: self.encoders[m](inputs[m]) for m in self.config.modalities if m in inputs}

    def forward(self, inputs: Mapping[str, torch.Tensor], present: torch.Tensor) -> HeadOutput:
        missing = [m for m in self.config.modalities if m not in inputs]
        if missing:
            raise ConfigError(f"inputs for {missing} are missing; pass a placeholder and mask it in `present`")
        return self.head(self.encode(inputs), present)

    def example_inputs(self, batch: int = 1) -> dict[str, torch.Tensor]:
        """Zero inputs of the right shapes and dtypes (text ids are int64), e.g. for export."""
        out = {}
        for m, enc in self.encoders.items():
            dtype = torch.int64 if m == "text" else torch.float32
            out[m] = torch.zeros((batch, *enc.input_shape), dtype=dtype)
        return out
