"""Hydra configuration: compose `configs/<command>.yaml` with `key=value` overrides.

Every command has one config file in configs/ named after it. Overrides use hydra's grammar
(`key=value`, `group=option`, `+new_key=value`); an unknown key is an error, never ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(os.environ.get("ROBOT_CALQL_CONFIGS", REPO_ROOT / "configs"))


class ConfigError(ValueError):
    """A configuration that cannot be composed or does not make sense."""


def compose(config_name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose configs/<config_name>.yaml with overrides; raise ConfigError naming the problem."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not (CONFIG_DIR / f"{config_name}.yaml").is_file():
        raise ConfigError(f"no config '{config_name}.yaml' in {CONFIG_DIR}")
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        hint = ""
        if "not in struct" in str(e) or "Could not override" in str(e):
            hint = f" (known keys: {', '.join(_known_keys(config_name))}; use +key=value to add one)"
        raise ConfigError(f"config '{config_name}': {msg}{hint}") from None
    OmegaConf.set_struct(cfg, True)
    return cfg


def _known_keys(config_name: str) -> list[str]:
    try:
        from hydra import compose as hydra_compose
        from hydra import initialize_config_dir

        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = hydra_compose(config_name=config_name)
        return sorted(str(k) for k in cfg.keys())
    except Exception:  # pragma: no cover - only used to improve an error message
        return []


def resolve_path(p: str | os.PathLike | None) -> Path | None:
    """Expand ~ and make a config path absolute (relative paths are relative to the cwd)."""
    if p is None or str(p) == "" or str(p).lower() == "none":
        return None
    return Path(os.path.expanduser(str(p))).resolve()
