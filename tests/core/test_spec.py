import pytest

from ganrt.errors import SpecError
from ganrt.spec import GeneratorSpec


def make(**kw):
    base = dict(arch="dcgan", latent_dim=64, channels=3, height=32, width=32)
    base.update(kw)
    return GeneratorSpec(**base)


def test_spec_round_trips_through_json():
    spec = make(num_classes=10, has_truncation=True, arch_kwargs={"width": 16, "nested": [1, 2]},
                output_range=(0, 1))
    again = GeneratorSpec.from_json(spec.to_json())
    assert again == spec
    assert again.output_range == (0.0, 1.0)
    assert again.conditional and again.image_shape == (3, 32, 32)


@pytest.mark.parametrize("field,value,match", [
    ("latent_dim", 0, "latent_dim"),
    ("latent_dim", 3.5, "latent_dim"),
    ("channels", 2, "channels must be 1"),
    ("num_classes", -1, "num_classes"),
    ("height", True, "height"),
    ("output_range", (1, -1), "output_range"),
    ("arch_kwargs", {"f": object()}, "JSON"),
])
def test_invalid_spec_fields_are_rejected_with_the_field_named(field, value, match):
    with pytest.raises(SpecError, match=match):
        make(**{field: value})


def test_a_users_module_needs_only_its_io():
    spec = GeneratorSpec(latent_dim=12, num_classes=5, channels=3, height=16, width=16)
    assert spec.arch == "external" and spec.external and spec.factory is None
    assert GeneratorSpec.from_dict({k: v for k, v in spec.to_dict().items() if k != "arch"}) == spec


@pytest.mark.parametrize("changes,match", [
    ({"factory": "not a path"}, "package.module:callable"),
    ({"factory": "os:system; rm"}, "package.module:callable"),
    ({"arch": "dcgan", "factory": "pkg.mod:make"}, "drop factory"),
    ({"output_range": [1]}, "two finite numbers"),
    ({"output_range": (0, float("nan"))}, "two finite numbers"),
    ({"has_truncation": "yes"}, "true or false"),
    ({"latent_dim": 10**9}, "latent_dim"),
])
def test_spec_fields_are_typed_and_ranged(changes, match):
    with pytest.raises(SpecError, match=match):
        make(**changes)


def test_from_dict_rejects_unknown_and_missing_fields():
    d = make().to_dict()
    with pytest.raises(SpecError, match="unknown fields"):
        GeneratorSpec.from_dict({**d, "bogus": 1})
    d.pop("latent_dim")
    with pytest.raises(SpecError, match="missing fields"):
        GeneratorSpec.from_dict(d)
    with pytest.raises(SpecError, match="version"):
        GeneratorSpec.from_dict({**make().to_dict(), "spec_version": 99})
    with pytest.raises(SpecError, match="not valid JSON"):
        GeneratorSpec.from_json("{")


def test_input_names_are_the_graph_inputs_in_order():
    assert make().input_names == ["z"]
    assert make(num_classes=10).input_names == ["z", "labels"]
    assert make(num_classes=10, has_truncation=True).input_names == ["z", "labels", "truncation"]
    assert make(has_truncation=True).input_names == ["z", "truncation"]
