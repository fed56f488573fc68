"""One preset registration for every family: the decorator takes the preset's name from the function."""

from __future__ import annotations

import pytest

from blmkd import registry
from blmkd.models import create_model, list_models, model_entry
from blmkd.registry import register_model


def test_every_preset_is_named_after_its_function_and_both_families_register():
    for name in list_models():
        assert model_entry(name).factory.__name__ == name
    assert list_models("teacher") and list_models("student")
    assert set(list_models("teacher")) | set(list_models("student")) == set(list_models())


def test_the_decorator_registers_under_the_function_name(monkeypatch):
    monkeypatch.setattr(registry, "REGISTRY", {})

    @register_model(family="student")
    def tiny(bands: int, num_classes: int, **overrides):
        """A tiny preset.

        More text that is not the description.
        """
        return create_model("blm_test", bands, num_classes, **overrides)

    entry = registry.REGISTRY["tiny"]
    assert (entry.name, entry.family, entry.factory) == ("tiny", "student", tiny)
    assert entry.description == "A tiny preset."

    with pytest.raises(ValueError, match="registered twice"):

        @register_model(family="teacher", description="again")
        def tiny(bands: int, num_classes: int):  # noqa: F811
            raise AssertionError


def test_an_unknown_family_is_refused():
    with pytest.raises(ValueError, match="family"):
        register_model(family="baseline")
