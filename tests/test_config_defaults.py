"""One source of agent defaults: CalQLConfig. A config's `agent:` block holds only a recipe's
deliberate changes (each commented), never a restated default."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from robot_calql.agent import CalQLConfig
from robot_calql.config import (
    CONFIG_DIR,
    agent_defaults,
    agent_field_docs,
    compose,
    describe,
    yaml_comments,
)
from robot_calql.train.common import agent_config

# the pre-training recipe's changes to CalQLConfig (configs/pretrain.yaml, commented there)
PRETRAIN_RECIPE = {"actor_hidden": (256, 256), "critic_hidden": (256, 256)}


def _agent_blocks() -> list[tuple[Path, str, dict[str, Any]]]:
    """(file, dotted prefix, mapping) of every agent block: configs/agent/*.yaml (the whole file)
    and each `agent:` mapping, at any depth, of the command configs in configs/*.yaml."""
    blocks = []
    for path in sorted((CONFIG_DIR / "agent").glob("*.yaml")):
        d = OmegaConf.to_container(OmegaConf.load(path)) or {}
        d.pop("defaults", None)
        blocks.append((path, "", d))

    def walk(path: Path, d: dict, prefix: str) -> None:
        for k, v in d.items():
            if k == "agent" and isinstance(v, dict):
                blocks.append((path, f"{prefix}agent.", v))
            elif isinstance(v, dict):
                walk(path, v, f"{prefix}{k}.")

    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        walk(path, OmegaConf.to_container(OmegaConf.load(path)) or {}, "")
    return blocks


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def test_no_config_restates_an_agent_default():
    defaults = agent_defaults()
    blocks = _agent_blocks()
    assert {p.name for p, _, _ in blocks} >= {"calql.yaml", "pretrain.yaml", "demo.yaml", "launch_finetune.yaml"}
    problems = []
    for path, prefix, block in blocks:
        comments = yaml_comments(path)[0]
        for key, value in block.items():
            where = f"{path.relative_to(CONFIG_DIR)}: {prefix}{key}"
            if key not in defaults:
                problems.append(f"{where} is no CalQLConfig field")
            elif value == _plain(defaults[key]):
                problems.append(f"{where}: {value} restates CalQLConfig's default")
            elif not comments.get(f"{prefix}{key}"):
                problems.append(f"{where}: a recipe's change needs a comment saying why")
    assert not problems, "\n".join(problems)


def test_pretrain_agent_is_calqlconfig_with_its_documented_recipe():
    assert agent_config(compose("pretrain")) == dataclasses.replace(CalQLConfig(), **PRETRAIN_RECIPE)
    assert agent_config(compose("launch_finetune", ["agent=calql"])) == CalQLConfig()


def test_any_agent_field_is_set_without_a_plus():
    """A field the recipe does not list is set as `agent.<key>=v`, one it lists also as `+agent.`."""
    cfg = agent_config(compose("pretrain", ["agent.n_step=5", "+agent.actor_hidden=[8]", "agent.policy=diffusion"]))
    assert (cfg.n_step, cfg.actor_hidden, cfg.critic_hidden, cfg.policy) == (5, (8,), (256, 256), "diffusion")
    ros = compose("launch_finetune", ["learner.agent.max_target_backup=false", "agent.cql_alpha=1"])
    assert ros.learner.agent.max_target_backup is False and agent_config(ros).cql_alpha == 1.0


def test_a_wrong_type_or_unknown_agent_key_is_named():
    from robot_calql.config import ConfigError

    with pytest.raises(ConfigError, match=r"agent.n_step expects an integer \(default: 1\)"):
        compose("pretrain", ["agent.n_step=abc"])
    with pytest.raises(ConfigError, match="unknown keys \\['bogus'\\]"):
        agent_config(compose("pretrain", ["agent.bogus=1"]))


def test_every_agent_field_has_a_one_line_doc_shown_in_help():
    docs = agent_field_docs()
    missing = [f.name for f in dataclasses.fields(CalQLConfig) if not docs.get(f.name)]
    assert not missing, f"CalQLConfig fields without a comment on their line: {missing}"
    help_ = {d.key: d.doc for d in describe("pretrain")}
    assert "recipe" in help_["agent.actor_hidden"]


def test_the_configs_agent_reference_is_calqlconfig_itself():
    """robot_calql.config reads CalQLConfig's fields from its source (it imports no agent code):
    the same names and defaults as the dataclass."""
    fields = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
              for f in dataclasses.fields(CalQLConfig)}
    assert agent_defaults() == {k: _plain(v) for k, v in fields.items()}
