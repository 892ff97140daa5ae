"""Hydra's sweep syntax as Optuna distributions, and storage URLs made absolute for jobs anywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution


def distribution(override: Override) -> BaseDistribution | str:
    """``choice(...)``, ``range(...)``, ``interval(...)`` (``tag(log, ...)``) as a distribution; a plain
    value as its string (a fixed param). As in the official sweeper, ``range``'s stop is included."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if any(isinstance(x, float) for x in (start, stop, step)):
            return FloatDistribution(float(start), float(stop), step=float(step))
        return IntDistribution(int(start), int(stop), step=int(step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ValueError(
        f"hydra.sweeper.params: {override.input_line} is not a sweep Optuna can sample "
        "(use choice, range, interval or tag(log, interval))"
    )


def search_space(
    params: dict[str, str], arguments: list[str]
) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """The swept params (``hydra.sweeper.params``, then command-line sweeps) and the fixed ones."""
    lines = [f"{key}={value}" for key, value in params.items()] + list(arguments)
    swept: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        found = distribution(override)
        key = override.get_key_element()
        swept.pop(key, None), fixed.pop(key, None)  # the command line wins over the config
        (swept if isinstance(found, BaseDistribution) else fixed)[key] = found  # type: ignore[index]
    return swept, fixed


def grid_choices(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """Every value of each param, for ``sampler=grid``: choices, and int ranges."""
    grid: dict[str, list[Any]] = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            grid[name] = list(range(dist.low, dist.high + 1, dist.step))
        else:
            raise ValueError(f"hydra.sweeper.sampler=grid needs choice or int range params; {name} is {dist}")
    return grid


def absolute_storage(url: str | None) -> str | None:
    """A relative ``sqlite:///file`` or ``journal://file`` as an absolute URL: the jobs (other
    directories, other nodes) must reach the same study."""
    if url is None:
        return None
    for scheme in ("sqlite:///", "journal://"):
        if url.startswith(scheme):
            rest = url[len(scheme) :]
            if rest and not rest.startswith(":memory:"):
                return scheme + str(Path(rest).expanduser().resolve())
    return url
