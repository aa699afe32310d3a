"""Grid files: a base config, axes and named variants -> the cells of a sweep.

A grid file is TOML::

    name = "optim-sb"                 # the sweep's name (default: the file's stem)
    out_dir = "runs"                  # cells go to <out_dir>/<name>/<cell>/ (default: the
                                      # base config's train.out_dir)
    base = "../configs/demo.toml"     # optional base config file, relative to this file
    procs_per_cell = 1                # > 1: data parallel cells (torchrun locally, one Slurm
                                      # task per GPU on a cluster)

    [config]                          # optional keys on top of the base, for every cell
    "model.preset" = "tiny"
    "train.max_steps" = 300

    [axes.optim]                      # a variant axis: named settings that go together
    adamw = { "optim.name" = "adamw", "optim.lr" = 1e-3 }
    ecd   = { "optim.name" = "ecd", "optim.lr" = 0.5, "optim.F0" = "auto" }

    [axes.sb]
    sym  = {}
    bQ   = { "sb.q" = true }
    bQbV = { "sb.q" = true, "sb.v" = true, "sb.v_mean" = 0.5 }

    [axes]
    "train.seed" = [0, 1, 2]          # a value axis: one config key, a list of values

    [slurm]                           # optional: --executor slurm parameters
    partition = "gpu"

    [report]                          # optional: what `symbreak report` compares
    variant_axis = "sb"               # default: the axis whose variants set sb.* keys
    baseline = "sym"                  # default: that axis's variant with no biases

Cells are the product of the axes; a variant axis zips its settings (each optimizer keeps its
own lr, betas, ...). A cell's name joins its axis values in axis order, the seed axis last:
``adamw-bQbV-seed0`` (a value axis contributes the key's last part and the value). Settings are
applied in order: base file, ``[config]``, command-line overrides, then each axis.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from symbreak.config import NAME, NAME_RULE, Config, flatten, parse_override, read_toml
from symbreak.data import resolve_config
from symbreak.errors import ConfigError, ExperimentError

SEED_KEY = "train.seed"

_TOP_KEYS = {"name", "out_dir", "base", "procs_per_cell", "config", "axes", "slurm", "report"}
SLURM_KEYS = {
    "partition": str,
    "time_min": int,
    "gpus_per_cell": int,
    "cpus_per_task": int,
    "mem_gb": int,
    "array_parallelism": int,
    "account": str,
    "qos": str,
    "signal_delay_s": int,
}
REPORT_KEYS = {"variant_axis": str, "baseline": str, "metric": str}


@dataclass
class Axis:
    """One axis: ``values`` are the names that go into cell names, ``settings`` the dotted
    config keys each name sets."""

    name: str
    kind: str  # "variants" or "values"
    values: list[str]
    settings: dict[str, dict[str, Any]]
    key: str | None = None  # the config key of a value axis

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "key": self.key,
            "values": self.values,
            "settings": self.settings,
        }


@dataclass
class Cell:
    name: str
    labels: dict[str, str]  # axis name -> value name
    settings: dict[str, Any]  # the dotted keys the axes set
    config: Config

    @property
    def seed(self) -> int:
        return self.config.train.seed


@dataclass
class Grid:
    name: str
    out_dir: Path
    path: Path | None
    axes: list[Axis]
    base_keys: dict[str, Any]
    base_file: Path | None
    slurm: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    procs_per_cell: int = 1
    base_tree: dict[str, Any] = field(default_factory=dict)  # the base file, read once

    @property
    def sweep_dir(self) -> Path:
        return self.out_dir / self.name

    def cells(self) -> list[Cell]:
        """Every cell, its config resolved and checked (errors name the cell)."""
        cells: list[Cell] = []
        combos: list[list[tuple[Axis, str]]] = [[]]
        for axis in self.axes:
            combos = [[*c, (axis, v)] for c in combos for v in axis.values]
        ordered = [a for a in self.axes if a.key != SEED_KEY] + [
            a for a in self.axes if a.key == SEED_KEY
        ]
        seen: dict[str, dict[str, str]] = {}
        for combo in combos:
            labels = {a.name: v for a, v in combo}
            name = "-".join(_fragment(a, labels[a.name]) for a in ordered) or "cell"
            if name in seen:
                raise ExperimentError(
                    f"grid {self.name}: two cells are both named '{name}' "
                    f"({seen[name]} and {labels}); rename a variant"
                )
            seen[name] = labels
            settings: dict[str, Any] = {}
            for axis, value in combo:
                settings.update(axis.settings[value])
            cells.append(Cell(name, labels, settings, self._cell_config(name, settings)))
        return cells

    def _cell_config(self, name: str, settings: dict[str, Any]) -> Config:
        cfg = Config()
        try:
            if self.base_file is not None:
                cfg.update(self.base_tree, origin=str(self.base_file))
            for key, value in self.base_keys.items():
                cfg.set(key, value)
            for item in self.overrides:
                cfg.set(*parse_override(item))
            for key, value in settings.items():
                cfg.set(key, value)
            cfg.set("train.out_dir", str(self.sweep_dir))
            cfg.set("train.name", name)
            return resolve_config(cfg)
        except ConfigError as e:
            raise ExperimentError(f"grid {self.name}, cell '{name}': {e}") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "grid_file": str(self.path) if self.path else None,
            "base_file": str(self.base_file) if self.base_file else None,
            "config": self.base_keys,
            "overrides": self.overrides,
            "procs_per_cell": self.procs_per_cell,
            "axes": [a.to_json() for a in self.axes],
            "slurm": self.slurm,
            "report": self.report,
        }


def _fragment(axis: Axis, value: str) -> str:
    return value if axis.kind == "variants" else f"{axis.key.rsplit('.', 1)[-1]}{value}"


def load_grid(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Grid:
    """Read and check a grid file; ``overrides`` (``KEY=VALUE``) apply to every cell."""
    path = Path(path)
    if path.is_dir():
        raise ExperimentError(f"grid file {path} is a directory; pass a .toml grid file")
    try:
        tree = read_toml(path)
    except ConfigError as e:
        raise ExperimentError(str(e).replace("config file", "grid file")) from None
    return parse_grid(tree, path, list(overrides))


def parse_grid(tree: dict[str, Any], path: Path | None, overrides: list[str]) -> Grid:
    where = f"grid file {path}" if path else "grid"
    unknown = set(tree) - _TOP_KEYS
    if unknown:
        raise ExperimentError(
            f"{where}: unknown top-level key(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(_TOP_KEYS))}"
        )
    name = tree.get("name", path.stem if path else "sweep")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ExperimentError(f"{where}: name {name!r} is not a usable sweep name: use {NAME_RULE}")
    root = path.parent if path else Path(".")
    base_file, base_tree = None, {}
    if "base" in tree:
        if not isinstance(tree["base"], str):
            raise ExperimentError(f"{where}: base must be a path to a config file")
        base_file = (root / tree["base"]).resolve()
        if not base_file.is_file():
            raise ExperimentError(f"{where}: base config {tree['base']} ({base_file}) not found")
        try:
            base_tree = read_toml(base_file)
        except ConfigError as e:
            raise ExperimentError(f"{where}: {e}") from None
    base_keys = tree.get("config", {})
    if not isinstance(base_keys, dict):
        raise ExperimentError(f'{where}: [config] must be a table of "section.key" = value')
    base_keys = flatten(base_keys)
    axes = _parse_axes(tree.get("axes"), where)
    out_dir = tree.get("out_dir")
    if out_dir is None:
        probe = Config()
        try:
            probe.update(base_tree, origin=str(base_file))
        except ConfigError as e:
            raise ExperimentError(f"{where}: {e}") from None
        out_dir = base_keys.get("train.out_dir", probe.train.out_dir)
    if not axes and not base_keys and base_file is None:
        raise ExperimentError(
            f"{where}: no axes, no [config] and no base: it would train one run of the default "
            "config; add [axes] (and a [config] table) as docs/sweeps.md shows"
        )
    owners: dict[str, str] = {}
    for a in axes:
        for k in sorted({k for s in a.settings.values() for k in s}):
            if k in owners:
                raise ExperimentError(
                    f"{where}: {k} is set by two axes ({owners[k]} and {a.name}); the later "
                    "would silently win: set each key in one axis"
                )
            owners[k] = a.name
    axis_keys = set(owners)
    for item in overrides:
        key, raw = parse_override(item)
        if key == "train.name":  # the sweep names its cells
            raise ExperimentError(f"override {item}: a sweep names its cells; set name in {where}")
        if key == "train.out_dir":  # moves the whole sweep
            out_dir = raw.value if isinstance(raw.value, str) else raw.raw
        if key in axis_keys:
            raise ExperimentError(
                f"override {item}: {key} is set by an axis of {where}; change it there"
            )
    slurm = _checked_table(tree.get("slurm", {}), SLURM_KEYS, f"{where}: [slurm]")
    report = _checked_table(tree.get("report", {}), REPORT_KEYS, f"{where}: [report]")
    if "variant_axis" in report and report["variant_axis"] not in {a.name for a in axes}:
        raise ExperimentError(
            f"{where}: [report] variant_axis '{report['variant_axis']}' is not an axis "
            f"({', '.join(a.name for a in axes)})"
        )
    procs = tree.get("procs_per_cell", 1)
    if not isinstance(procs, int) or isinstance(procs, bool) or procs < 1:
        raise ExperimentError(f"{where}: procs_per_cell must be a whole number >= 1")
    grid = Grid(
        procs_per_cell=procs,
        name=name,
        out_dir=Path(out_dir),
        path=path,
        axes=axes,
        base_keys=base_keys,
        base_file=base_file,
        slurm=slurm,
        report=report,
        overrides=list(overrides),
        base_tree=base_tree,
    )
    grid.cells()  # every cell's config is checked now, before anything runs
    return grid


def _parse_axes(axes: Any, where: str) -> list[Axis]:
    if axes is None:
        return []
    if not isinstance(axes, dict):
        raise ExperimentError(f"{where}: [axes] must be a table")
    out = []
    for name, spec in axes.items():
        if isinstance(spec, list):  # "section.key" = [values]
            if "." not in name:
                raise ExperimentError(
                    f"{where}: value axis '{name}' must be a config key like \"train.seed\""
                )
            if not spec:
                raise ExperimentError(f"{where}: axis '{name}' is empty; give it values")
            values = [_value_name(v, name, where) for v in spec]
            if len(set(values)) != len(values):
                raise ExperimentError(f"{where}: axis '{name}' repeats a value")
            out.append(
                Axis(
                    name,
                    "values",
                    values,
                    {n: {name: v} for n, v in zip(values, spec, strict=True)},
                    key=name,
                )
            )
        elif isinstance(spec, dict):  # [axes.NAME] variant = { "section.key" = value, ... }
            if not NAME.fullmatch(name):
                raise ExperimentError(f"{where}: axis name {name!r} is not usable: use {NAME_RULE}")
            if not spec:
                raise ExperimentError(f"{where}: axis '{name}' is empty; give it variants")
            settings = {}
            for variant, keys in spec.items():
                if not NAME.fullmatch(variant):
                    raise ExperimentError(
                        f"{where}: variant {variant!r} of axis '{name}' is not usable in a cell "
                        f"name: use {NAME_RULE}"
                    )
                if not isinstance(keys, dict):
                    raise ExperimentError(
                        f"{where}: variant '{name}.{variant}' must be a table of "
                        '"section.key" = value (use {} for none)'
                    )
                settings[variant] = flatten(keys)
            out.append(Axis(name, "variants", list(settings), settings))
        else:
            raise ExperimentError(
                f"{where}: axis '{name}' must be a table of variants or a list of values"
            )
    keys = [a.key for a in out if a.key]
    if len(set(keys)) != len(keys):
        raise ExperimentError(f"{where}: two value axes set the same key")
    return out


def _value_name(v: Any, axis: str, where: str) -> str:
    if isinstance(v, bool | int | float | str) and NAME.fullmatch(text := str(v).lower()):
        return text if not isinstance(v, str) else str(v)
    raise ExperimentError(
        f"{where}: value {v!r} of axis '{axis}' cannot name a cell; use a variant axis"
    )


def _checked_table(table: Any, keys: dict[str, type], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ExperimentError(f"{where} must be a table")
    out = {}
    for k, v in table.items():
        if k not in keys:
            raise ExperimentError(f"{where}: unknown key '{k}' (known: {', '.join(keys)})")
        if not isinstance(v, keys[k]) or isinstance(v, bool):
            raise ExperimentError(f"{where}: {k} must be a {keys[k].__name__}")
        out[k] = copy.deepcopy(v)
    return out
