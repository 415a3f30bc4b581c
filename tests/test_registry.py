from __future__ import annotations

import pytest

from cryoopt.exceptions import CryoOptError, ParameterError, RegistryError
from cryoopt.registry import Registry


def test_register_and_get() -> None:
    reg: Registry[type] = Registry("widget")

    @reg.register("a")
    class A: ...

    assert reg.get("a") is A
    assert "a" in reg and reg.names() == ["a"] and len(reg) == 1


def test_duplicate_name_refused() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("x", 1)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("x", 2)
    reg.register("x", 2, replace=True)
    assert reg.get("x") == 2


def test_unknown_name_lists_available() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("alpha", 1)
    with pytest.raises(RegistryError, match="unknown widget 'beta'; available: alpha"):
        reg.get("beta")


def test_exceptions_inherit_builtins() -> None:
    assert issubclass(ParameterError, ValueError) and issubclass(ParameterError, CryoOptError)
    assert issubclass(RegistryError, LookupError)
