"""Model registry: `register_model` names a class, `create_model(name, **kw)` builds it (timm style).

Keyword arguments that are fields of the class's config dataclass go into the config; the rest
(rig, preprocessing config) go to the constructor. Unknown names raise ConfigError listing the
valid ones, so a typo never falls silently to a default.
"""

from __future__ import annotations

import inspect
from dataclasses import fields, replace

from fusion_rt.errors import ConfigError

__all__ = ["register_model", "create_model", "list_models", "model_class"]

_REGISTRY: dict[str, tuple[str, type]] = {}


def register_model(name: str, kind: str):
    """Class decorator: register `cls` (which has a `config_class`) as `name` of `kind`."""

    def wrap(cls: type) -> type:
        if name in _REGISTRY:
            raise ConfigError(f"model name {name!r} is registered twice")
        if not hasattr(cls, "config_class"):
            raise ConfigError(f"model class {cls.__name__} needs a config_class attribute")
        _REGISTRY[name] = (kind, cls)
        cls.model_name = name
        return cls

    return wrap


def list_models(kind: str | None = None) -> list[str]:
    """Registered names, optionally only those of `kind` ("encoder", "head", "model")."""
    return sorted(n for n, (k, _) in _REGISTRY.items() if kind is None or k == kind)


def model_class(name: str) -> type:
    try:
        return _REGISTRY[name][1]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; registered: {list_models()}") from None


def create_model(name: str, *, config=None, **kw):
    """Build the registered model `name`; `kw` sets config fields and constructor arguments."""
    cls = model_class(name)
    config_fields = {f.name for f in fields(cls.config_class)}
    overrides = {k: kw.pop(k) for k in list(kw) if k in config_fields}
    if config is None:
        config = cls.config_class(**overrides)
    elif overrides:
        config = replace(config, **overrides)
    params = inspect.signature(cls.__init__).parameters
    allowed = {p for p in params if p not in ("self", "config")}
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise ConfigError(f"{name}: unknown arguments {unknown}; config fields {sorted(config_fields)}, "
                          f"constructor arguments {sorted(allowed)}")
    return cls(config, **kw)
