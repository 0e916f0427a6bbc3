import pytest

from kdlab.errors import ConfigError
from kdlab.registry import Registry


def make():
    reg = Registry("widget")

    @reg.register("square")
    def square(x: int, scale: float = 1.0):
        return x * x * scale

    @reg.register("cube")
    class Cube:
        def __init__(self, side: int):
            self.volume = side**3

    return reg


def test_build_by_name_and_list():
    reg = make()
    assert reg.names() == ["cube", "square"]
    assert reg.build("square", x=3, scale=2.0) == 18.0
    assert reg.build("cube", side=2).volume == 8
    assert "cube" in reg and "sphere" not in reg


def test_unknown_name_lists_valid_names_and_suggests():
    reg = make()
    with pytest.raises(ConfigError, match=r"unknown widget 'sqare'.*cube, square.*Did you mean 'square'"):
        reg.get("sqare")


def test_duplicate_registration_is_an_error():
    reg = make()
    with pytest.raises(ValueError, match="already registered"):
        reg.register("cube")(lambda: None)
    assert reg.build("cube", side=3).volume == 27  # the original survives


def test_parameters_checked_against_signature_before_building():
    reg = make()
    calls = []

    @reg.register("spy")
    def spy(a: int):
        calls.append(a)

    with pytest.raises(ConfigError, match=r"'spy' has no parameter\(s\) 'b'.*Valid parameters: a"):
        reg.build("spy", a=1, b=2)
    assert calls == []


@pytest.mark.parametrize("name, params, message", [
    ("square", {"x": "3"}, "widget 'square': x='3' must be of type int"),
    ("square", {"x": True}, "x=True must be of type int"),  # a bool is not a count
    ("square", {"x": 3, "scale": "big"}, "scale='big' must be of type float"),
    ("cube", {"side": 2.5}, "widget 'cube': side=2.5 must be of type int"),
])
def test_values_of_the_wrong_type_are_config_errors(name, params, message):
    with pytest.raises(ConfigError, match=message):
        make().build(name, **params)


def test_types_accept_what_yaml_gives_and_optional_containers():
    from typing import Dict, List, Optional

    from omegaconf import OmegaConf

    reg = Registry("widget")

    @reg.register("w")
    def w(scale: float = 1.0, flag: bool = False, layers: Optional[List[List[int]]] = None,
          opts: Optional[Dict[str, int]] = None, anything=None):
        return scale

    cfg = OmegaConf.create({"layers": [[1, 2]], "opts": {"a": 1}})
    assert reg.build("w", scale=2, flag=True, layers=cfg.layers, opts=cfg.opts, anything=object()) == 2
    assert reg.build("w", layers=None, opts=None) == 1.0
    with pytest.raises(ConfigError, match=r"layers=5 must be of type Optional\[List"):
        reg.build("w", layers=5)
    with pytest.raises(ConfigError, match="flag='yes' must be of type bool"):
        reg.build("w", flag="yes")


def test_an_unresolvable_annotation_skips_only_that_parameter():
    """A forward reference the module cannot resolve leaves the other parameters checked."""
    reg = Registry("widget")

    @reg.register("w")
    def w(model: "NotDefinedAnywhere" = None, depth: int = 1):  # noqa: F821
        return depth

    assert reg.build("w", model=object(), depth=2) == 2
    with pytest.raises(ConfigError, match="depth='2' must be of type int"):
        reg.build("w", depth="2")


def test_a_broken_annotation_is_raised_not_silenced():
    """Only unresolved names are tolerated: an annotation that is not a type is a bug."""
    reg = Registry("widget")

    @reg.register("w")
    def w(depth: "int[3]" = 1):
        return depth

    with pytest.raises(TypeError, match="not subscriptable"):
        reg.build("w", depth=1)
