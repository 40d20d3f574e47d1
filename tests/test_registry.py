"""The one registry every config group chooses its code from (asymbp/registry.py)."""

from __future__ import annotations

import pytest

from asymbp.config import ConfigError
from asymbp.data import DATASETS
from asymbp.feedback import RULES
from asymbp.loggers import LOGGERS
from asymbp.models import MODELS
from asymbp.optim import OPTIMIZERS, SCHEDULES
from asymbp.registry import Registry
from asymbp.report.figures import FIGURES


def make() -> Registry:
    things = Registry("widget", key="widget.kind")

    @things.register("round")
    def round_widget(size: int, *, color: str = "red") -> tuple:
        if size < 0:
            raise ValueError("size must be >= 0")
        return ("round", size, color)

    things.register("square", lambda size: ("square", size))
    return things


def test_registration_order_and_lookup():
    things = make()
    assert list(things) == ["round", "square"] and len(things) == 2
    assert things["square"](2) == ("square", 2)


def test_an_unknown_name_suggests_the_closest_in_one_line():
    with pytest.raises(ConfigError, match=r"^widget.kind='rond' is unknown: did you mean round\? "
                       r"choose one of round, square$"):  # fmt: skip
        make().get_or_fail("rond")
    with pytest.raises(ConfigError, match=r"^widget.kind='zzz' is unknown: choose one of"):
        make().get_or_fail("zzz")


def test_build_checks_options_against_the_signature():
    things = make()
    assert things.build("round", 3, color="blue") == ("round", 3, "blue")
    with pytest.raises(ConfigError, match="^widget=round has no option colour: its options are "
                       "color$"):  # fmt: skip
        things.build("round", 3, colour="blue")
    with pytest.raises(ConfigError, match="^widget=round: size must be >= 0$"):
        things.build("round", -1)  # the component's own ValueError, as a one-line ConfigError
    with pytest.raises(ConfigError, match="missing a required argument: 'size'"):
        things.build("round")


def test_build_from_a_config_node_skips_name_and_the_callers_keys():
    things = make()
    node = {"name": "round", "size": 2, "note": "read elsewhere"}
    assert things.build_from(node, skip=("note",)) == ("round", 2, "red")


def test_a_second_component_under_one_name_is_refused_the_same_one_is_not():
    things = make()
    round_widget = things["round"]
    things.register("round", round_widget)  # a module reload registers the same function again
    with pytest.raises(ValueError, match="widget 'round' is already registered by"):
        things.register("round", lambda size: None)
    things.unregister("round")
    assert "round" not in things


def test_every_group_that_picks_code_by_name_uses_a_registry():
    # the shipped components, each chosen by its YAML's name through one of these
    for registry, names in (
        (RULES, {"bp", "usf", "brsf", "frsf", "rndf", "sc", "kp", "wm", "dfa"}),
        (MODELS, {"paper_cnn", "mlp", "lenet5", "resnet18", "resnet20", "resnet56"}),
        (DATASETS, {"digits", "fashion_mnist", "mnist", "cifar10", "timit", "synthetic"}),
        (OPTIMIZERS, {"sgd", "adam"}),
        (SCHEDULES, {"none", "step", "cosine", "multistep"}),
        (LOGGERS, {"none", "tensorboard", "mlflow"}),
    ):
        assert isinstance(registry, Registry) and names <= set(registry)
    assert isinstance(FIGURES, Registry) and "fig_stabilization" in FIGURES


@pytest.mark.parametrize(
    "group, registry",
    [("feedback", RULES), ("model", MODELS), ("dataset", DATASETS), ("optimizer", OPTIMIZERS),
     ("logger", LOGGERS)],
)  # fmt: skip
def test_each_shipped_option_is_one_hop_from_its_code(group, registry):
    """conf/<group>/<option>.yaml's name is a key of the group's registry (and nothing else)."""
    from conftest import CONFIG_DIR
    from omegaconf import OmegaConf

    for path in (CONFIG_DIR / group).glob("[!_]*.yaml"):
        name = OmegaConf.load(path).name
        assert name == path.stem and name in registry, path
    schedules = {
        OmegaConf.load(p).schedule for p in (CONFIG_DIR / "optimizer").glob("*.yaml")
    }
    assert schedules <= set(SCHEDULES)
