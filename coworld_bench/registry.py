"""Algorithms by name.

Built-in algorithms (``baselines/``, listed in coworld-bench's own pyproject.toml)
and third-party ones register the same way:
the ``register`` decorator on the class, and a Python entry point in the group
``coworld_bench.algorithms`` that names the module (or the class) so it is found
without being imported by hand::

    # pyproject.toml of a third-party package
    [project.entry-points."coworld_bench.algorithms"]
    my-algo = "my_package.my_algo:MyAlgo"
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
from importlib import metadata

from coworld_bench.algorithm import Algorithm
from coworld_bench.errors import UserError

ENTRY_POINT_GROUP = "coworld_bench.algorithms"

_REGISTRY: dict[str, type[Algorithm]] = {}


class UnknownAlgorithmError(UserError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register(name: str):
    """Class decorator: makes an ``Algorithm`` subclass available as ``name``."""

    def wrap(cls):
        if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
            raise TypeError(f"@register({name!r}) needs an Algorithm subclass, got {cls!r}.")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls and (
                existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"Algorithm name {name!r} is taken by {existing.__module__}."
                             f"{existing.__qualname__}.")
        from coworld_bench.algorithm import check_config_class

        check_config_class(cls.Config, name)
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


@contextlib.contextmanager
def registered_for_a_while(cls: type[Algorithm], name: str):
    """``cls`` registered as ``name`` inside the block (e.g. an unregistered class the
    conformance kit checks through the runner, which finds algorithms by name); the
    registry and the class's ``name`` are as they were after."""
    previous, had_name = _REGISTRY.get(name), "name" in cls.__dict__
    old_name = cls.__dict__.get("name")
    cls.name = name
    _REGISTRY[name] = cls
    try:
        yield cls
    finally:
        if previous is None:
            _REGISTRY.pop(name, None)
        else:
            _REGISTRY[name] = previous
        if had_name:
            cls.name = old_name
        else:
            del cls.name


def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _sources() -> dict[str, str]:
    # coworld-bench's own algorithms are entry points of its pyproject.toml too.
    return _entry_points()


def names() -> list[str]:
    return sorted(set(_sources()) | set(_REGISTRY))


def get(name: str) -> type[Algorithm]:
    """The algorithm class registered as ``name``; raises listing the valid names."""
    if name not in _REGISTRY:
        source = _sources().get(name)
        if source is None:
            close = difflib.get_close_matches(name, names(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UnknownAlgorithmError(f"Unknown algorithm {name!r}.{hint} Valid algorithms: "
                                        f"{', '.join(names())}.")
        module, _, attr = source.partition(":")
        obj = importlib.import_module(module)
        if attr:
            obj = getattr(obj, attr)
            if name not in _REGISTRY and isinstance(obj, type) and issubclass(obj, Algorithm):
                register(name)(obj)
        if name not in _REGISTRY:
            raise UnknownAlgorithmError(f"{source} was loaded for algorithm {name!r} but "
                                        f"registers no algorithm of that name.")
    return _REGISTRY[name]
