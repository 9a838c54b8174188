from pathlib import Path

import pytest
import yaml

from tdds_core.config import Config, load_config, parse_config
from tdds_core.errors import ConfigError

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_defaults_are_the_authors_hyperparameters():
    cfg = Config()
    assert (cfg.train.lr, cfg.train.momentum, cfg.train.nesterov, cfg.train.weight_decay) == (0.1, 0.9, True, 5e-4)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.seed, cfg.coreset.batch_size) == (200, 100, 42, 128)
    assert cfg.coreset.weighting == "method" and cfg.dynamics.mode == "train"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    """Every shipped config loads and validates as a dry run: its dataset and architectures are
    registered, every method and option resolves, the plan builds (nothing trains)."""
    import inspect

    from tdds_core.data import list_datasets
    from tdds_core.data.base import get_dataset_fn
    from tdds_core.engine import check_arch, full_data_spec
    from tdds_core.grid import check_grid

    cfg = load_config(path)
    assert cfg.train.epochs > 0 and cfg.selection.rates
    assert cfg.data.name in list_datasets()
    unknown = set(cfg.data.options) - set(inspect.signature(get_dataset_fn(cfg.data.name)).parameters)
    assert not unknown, f"data.options {unknown} are not options of dataset {cfg.data.name}"
    check_arch(cfg.model.arch)
    plan = check_grid(cfg)
    assert plan.scores and plan.pairs
    full_data_spec(cfg)


def test_unknown_key_names_the_field(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"train": {"epochz": 3}}))
    with pytest.raises(ConfigError, match=r"train\.epochz: unknown key"):
        load_config(p)


def test_wrong_type_names_the_field(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  batch_size: many\n")
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        load_config(p)


@pytest.mark.parametrize("override,field", [("train.lr=0", "train.lr"), ("selection.rates=[0.5,1.0]", "selection.rates"),
                                            ("selection.rates=[0]", "selection.rates"), ("coreset.weighting=foo", "coreset.weighting"),
                                            ("train.device=tpu", "train.device"), ("dynamics.epoch_stop=0", "dynamics.epoch_stop")])
def test_invalid_values_rejected(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config({}, [override])


def test_rate_message_names_the_rate():
    with pytest.raises(ConfigError, match=r"pruning rate 1\.5 is outside \(0, 1\)"):
        parse_config({"selection": {"rates": [1.5]}})


def test_overrides_parse_yaml_values():
    cfg = parse_config({}, ["train.epochs=7", "selection.rates=[0.3, 0.9]", "data.train_subset=100", "model.arch=small_cnn"])
    assert cfg.train.epochs == 7 and cfg.selection.rates == [0.3, 0.9] and cfg.data.train_subset == 100


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_config({}, ["train.epochs"])


def test_missing_file_and_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_yaml_round_trip_and_flat():
    cfg = parse_config({"methods": [{"name": "tdds", "params": {"T": 30, "W": 10}, "per_rate": {0.9: {"T": 10, "W": 5}}}]})
    again = parse_config(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    m = cfg.methods[0]
    assert m.params_for(0.9) == {"T": 10, "W": 5} and m.params_for(0.5) == {"T": 30, "W": 10}
    assert m.display == "tdds[T=30,W=10]"
    flat = cfg.flat()
    assert flat["train.lr"] == 0.1 and "methods" in flat


def test_per_rate_weighting_is_a_coreset_setting_not_a_scorer_option():
    from tdds_core.plan import coreset_weighting

    cfg = parse_config({"methods": [{"name": "tdds", "params": {"T": 5, "W": 3},
                                     "per_rate": {0.9: {"T": 3, "weighting": "none"}}}]})
    m = cfg.methods[0]
    assert m.params_for(0.9) == {"T": 3, "W": 3} and m.params_for(0.5) == {"T": 5, "W": 3}
    assert coreset_weighting(cfg, m, 0.9) == "none" and coreset_weighting(cfg, m, 0.5) == "batch"
    with pytest.raises(ConfigError, match="per_rate"):
        parse_config({"methods": [{"name": "tdds", "per_rate": {0.9: {"weighting": "heavy"}}}]})
