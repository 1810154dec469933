"""``certwright config show``, and the configuration file's defaults for ``run``.

``config show`` prints what the configuration files set, merged, each value with where it
came from (``file:line``); with a pipeline, that pipeline's inputs as a new run would get
them: ``--set``, a file's ``file:line``, or ``default`` (the pipeline's own), the
precedence being the same as ``run``'s (:func:`run_inputs`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the parser of every command imports this module: keep it cheap
    from certwright.engine.model.configfile import Config, Setting
    from certwright.engine.model.spec import PipelineSpec

EXIT_OK = 0


def load_config(args: argparse.Namespace) -> Config:
    """The configuration of ``--config`` (or the user's and system's files)."""
    from certwright.engine.model.configfile import Config
    explicit = getattr(args, "config", None)
    return Config.load(Path(explicit) if explicit else None)


def this_host(args: argparse.Namespace) -> str:
    """This host's name (``engine.run.hosts.local_host``, the configuration's ``host:``)."""
    from certwright.engine.run.hosts import local_host
    setting = load_config(args).host()
    return local_host(setting.value if setting else None)


def input_settings(config: Config, spec: PipelineSpec, sets: dict[str, str]
                   ) -> dict[str, Setting]:
    """Every input a run of ``spec`` is given and where from: ``--set`` over the files
    (user's over system's); inputs neither sets are left to the pipeline's defaults."""
    from certwright.engine.model.configfile import Setting
    out = config.input_settings(spec.name, spec.inputs)
    out.update({k: Setting(v, "--set") for k, v in sets.items()})
    return out


def run_inputs(config: Config, spec: PipelineSpec, sets: dict[str, str]) -> dict[str, Any]:
    """The given inputs of a new run: the files' defaults with ``--set`` over them."""
    return {k: s.value for k, s in input_settings(config, spec, sets).items()}


def register(sub: Any) -> None:
    c = sub.add_parser("config", help="the configuration file: show the merged values")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    show = csub.add_parser("show", help="print the merged values and where each came from")
    show.add_argument("pipeline", nargs="?",
                      help="also show this pipeline's inputs as a new run would get them")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="an input value, as for `run` (repeatable)")
    show.add_argument("--json", action="store_true")
    show.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="FILE",
                      help="the configuration file (as before the subcommand)")
    show.set_defaults(func=cmd_config_show)


def _inputs_view(config: Config, spec: PipelineSpec, sets: dict[str, str]
                 ) -> dict[str, dict[str, Any]]:
    given = input_settings(config, spec, sets)
    out: dict[str, dict[str, Any]] = {}
    for name, inp in spec.inputs.items():
        if name in given:
            value: Any = "<secret>" if inp.secret else given[name].value
            out[name] = {"value": value, "from": given[name].origin}
        elif inp.has_default:
            out[name] = {"value": "<secret>" if inp.secret else inp.default,
                         "from": "default"}
        else:
            out[name] = {"value": None, "from": "required" if inp.required else "unset"}
    return out


def cmd_config_show(args: argparse.Namespace) -> int:
    from certwright.engine.cli.commands import _load, parse_sets
    from certwright.engine.daemon.config import from_config
    from certwright.engine.model.configpaths import config_paths
    config = load_config(args)
    from_config(config)  # the daemon's values checked too (ConfigError, located)
    sets = parse_sets(args.set)
    explicit = getattr(args, "config", None)
    files = [str(p) for p in config_paths(Path(explicit) if explicit else None)]
    read = [str(cf.path) for cf in config.files]
    values = {k: {"value": s.value, "from": s.origin} for k, s in config.settings().items()}
    live = config.live_dir()
    if live is not None:
        values["live_dir"] = {"value": str(live.value), "from": live.origin}
    inputs = None
    if args.pipeline:
        spec = _load(args.pipeline)
        inputs = _inputs_view(config, spec, sets)
    if args.json:
        doc: dict[str, Any] = {"files": files, "read": read, "values": values}
        if inputs is not None:
            doc["pipeline"] = spec.name
            doc["inputs"] = inputs
        print(json.dumps(doc, indent=2, default=str))
        return EXIT_OK
    print("files (lowest precedence first):")
    for f in files:
        print(f"  {f}{'' if f in read else ' (not present)'}")
    rows = [(k, json.dumps(v["value"], default=str), v["from"]) for k, v in values.items()]
    if inputs is not None:
        rows += [(f"inputs.{k}", json.dumps(v["value"], default=str), v["from"])
                 for k, v in inputs.items()]
    if rows:
        widths = [max(len(r[i]) for r in rows) for i in range(2)]
        for key, value, origin in rows:
            print(f"{key.ljust(widths[0])}  {value.ljust(widths[1])}  {origin}")
    else:
        print("(no values set)")
    return EXIT_OK
