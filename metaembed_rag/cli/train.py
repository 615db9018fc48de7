"""``metaembed-rag train``: MMR training from a config file and/or flags.

The options are generated from the fields of :class:`~metaembed_rag.training.recipe.RecipeConfig`
and :class:`~metaembed_rag.training.trainer.TrainingConfig` (``--field-name`` for
``field_name``; the type, repeatability and on/off form come from the field's annotation), so a
new recipe field is a new option without touching this module. ``--config FILE`` (TOML or JSON;
a run's saved ``recipe.json`` works) gives any of them; flags override the file, the file
overrides the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "config_from_args"]

#: Help, metavar and choices of the generated options (the fields themselves set the rest).
OPTIONS: dict[str, dict[str, Any]] = {
    "init": {"metavar": "MODEL", "help": "start from a trained MetaEmbed model (folder or name, e.g. metaembed-minilm-l6) instead of a new one: domain adaptation on your own pairs or qrels"},
    "pairs": {"metavar": "PATH", "help": "pairs.jsonl file or a folder holding one (query, positive[, negative]); one data source per path, named by its folder (repeatable)"},
    "pairs_max_per_source": {"metavar": "N", "help": "use a seeded sample of at most N pairs from each --pairs source"},
    "dev_fraction": {"metavar": "F", "help": "hold out this fraction of the --pairs queries as a dev split and write dev.json (nDCG@10 per source and budget, beside the backbone's mean-pooled cosine)"},
    "query_prefix": {"help": "text put before every query (default: the model's, 'Query: ')"},
    "beir": {"help": "BEIR folder with qrels/<split>.tsv (repeatable)"},
    "captions": {"help": "image,caption CSV for paraphrase pairs (repeatable)"},
    "titles": {"help": "add title -> body pairs from the BEIR corpora"},
    "ict": {"metavar": "N", "help": "add N Inverse Cloze Task pairs per BEIR corpus document (a sentence -> the rest)"},
    "ict_keep": {"metavar": "P", "help": "chance that an ICT sentence stays in its document (default 0)"},
    "warm_start_steps": {"metavar": "N", "help": "first train only the Meta tokens for N steps to reproduce the backbone's mean-pooled embedding (docs/training.md)"},
    "rounds": {"choices": (1, 2)},
    "steps": {"help": "steps of the final round"},
    "mine_budget": {"help": "budget 'r_q,r_c' for mining (default: the largest)"},
    "hard_negative_repeat": {"help": "round 2: use each BEIR pair with its mined negative N times per epoch"},
    "beir_repeat": {"metavar": "N", "help": "round 1 (or the only round): use each BEIR pair N times per epoch, so the BEIR pairs are not drowned by larger title / caption / ICT sources"},
    "round2_beir_only": {"help": "round 2 trains on the BEIR pairs with their mined negatives only (the other sources are used in round 1, for the mining model)"},
    "round2_group_weights": {"metavar": "W,W,...", "help": "round 2's MMR group weights, same form as --group-weights (default: those of round 1); round 1 only trains the model that mines the hard negatives"},
    "append_both_sides": {"help": "append both sides' Meta tokens (--no-append-both-sides, or the older --own-side-only: only the side's own)"},
    "meta_attention": {"choices": ("causal", "full"), "help": "causal: input tokens do not attend to Meta tokens (default); full: all attend"},
    "lr": {"help": "backbone / LoRA learning rate"},
    "meta_lr": {"help": "Meta tokens and projection learning rate"},
    "group_weights": {"metavar": "W,W,...", "help": "MMR loss weight of each prefix group, smallest budget first, one per budget (default: 1 each), e.g. 1,1,1,1.5,2 for (1,1) .. (16,64)"},
    "lora": {"help": "train LoRA adapters on the backbone"},
    "train_backbone": {"help": "fine-tune the whole backbone"},
    "autocast": {"choices": ("none", "bfloat16", "float16"), "help": "mixed precision for training forward passes"},
    "dropout": {"help": "keep the backbone's dropout while training (off by default: ~3x slower on CPU)"},
    "distill_weight": {"help": "weight of the KL term matching each budget's in-batch scores to the backbone's own mean-pooled cosine (0: off; docs/training.md)"},
    "distill_temperature": {"help": "temperature of the mean-pooled teacher's distribution"},
    "pooled_loss_weight": {"help": "weight of an auxiliary InfoNCE on the backbone's mean-pooled states (0: off)"},
}  # fmt: skip
#: Fields the recipe sets itself (never options).
_RECIPE_OWNED = {"output_dir", "training", "max_steps", "extra"}
#: What the command uses where the library's defaults differ (checkpoints more often).
COMMAND_DEFAULTS: dict[str, Any] = {"training": {"save_every": 100}}


def group_weights(text: str) -> list[float]:
    """``"1,1,2"`` -> ``[1.0, 1.0, 2.0]`` (argparse type for the ``--*group-weights`` options)."""
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected comma-separated numbers, e.g. 1,1,1,1,1"
        ) from None
    if any(not w >= 0 for w in weights) or not any(w > 0 for w in weights):
        raise argparse.ArgumentTypeError(f"{text!r}: weights must be >= 0, at least one > 0")
    return weights


def _configs() -> tuple[type, type]:
    from ..training.recipe import RecipeConfig
    from ..training.trainer import TrainingConfig

    return RecipeConfig, TrainingConfig


def _fields(cls: type) -> list[tuple[str, Any]]:
    """``(name, type)`` of the option fields of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls) if f.name not in _RECIPE_OWNED]


def _option(name: str, annotation: Any) -> dict[str, Any]:
    """argparse keywords for a field of type ``annotation``; every default is ``None``
    ("not given"), so an option left out never overrides the file or the field default."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = annotation if not isinstance(annotation, types.UnionType) else args[0]
    origin = typing.get_origin(base)
    kw: dict[str, Any]
    if base is bool:
        kw = {"action": argparse.BooleanOptionalAction}
    elif origin is list and typing.get_args(base) == (float,):
        kw = {"type": group_weights}
    elif origin is list:
        kw = {"action": "append"}
    elif base in (int, float):
        kw = {"type": base}
    else:
        kw = {"type": str}
    return {**kw, **OPTIONS.get(name, {})}


def add_parser(sub: Any) -> None:
    """The ``train`` subcommand with one option per recipe and training field."""
    recipe_cls, training_cls = _configs()
    tr = sub.add_parser(
        "train",
        help="MMR training (round 1, hard-negative mining, round 2)",
        description="Options not given come from --config, then from the recipe defaults.",
    )
    tr.add_argument(
        "--config",
        metavar="FILE",
        help="TOML or JSON file of recipe fields, with a [training] table (a run's recipe.json "
        "works); flags override it",
    )
    tr.add_argument(
        "--output", "--output-dir", dest="output_dir", help="output folder (checkpoints, final/)"
    )
    tr.add_argument(
        "--own-side-only",
        dest="append_both_sides",
        action="store_false",
        default=None,
        help="append only the side's own Meta tokens",
    )
    seen = {"output_dir", "append_both_sides"}
    for cls in (recipe_cls, training_cls):
        for name, annotation in _fields(cls):
            if name in seen and name != "append_both_sides":
                continue
            seen.add(name)
            flag = "--" + name.replace("_", "-")
            tr.add_argument(flag, dest=name, **_option(name, annotation))
    tr.set_defaults(func=run)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A ``--config`` file as a dict (TOML by suffix ``.toml``, else JSON).

    Raises:
        FileNotFoundError: no such file. ValueError: not valid TOML / JSON, not a table.
    """
    import tomllib

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file.")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "JSON (use a .toml suffix for TOML)"
        raise ValueError(f"--config {path}: not valid {kind}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a table of recipe fields.")
    return data


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`RecipeConfig` of a ``train`` command line: defaults < ``--config`` < flags.

    Raises:
        ValueError: an unknown key in the file, or no output folder anywhere.
    """
    recipe_cls, training_cls = _configs()
    recipe_names = {f.name for f in dataclasses.fields(recipe_cls)}
    training_names = {n for n, _ in _fields(training_cls)}
    recipe: dict[str, Any] = {}
    training: dict[str, Any] = dict(COMMAND_DEFAULTS["training"])
    if getattr(args, "config", None):
        data = read_config_file(args.config)
        training.update(data.pop("training", None) or {})
        unknown = sorted(set(data) - recipe_names) + sorted(set(training) - training_names)
        if unknown:
            raise ValueError(
                f"--config {args.config}: unknown field(s) {unknown}; recipe fields: "
                f"{sorted(recipe_names - {'training'})}; [training] fields: {sorted(training_names)}."
            )
        recipe.update(data)
    for name, value in vars(args).items():
        if value is None:
            continue
        if name in recipe_names:
            recipe[name] = value
        elif name in training_names:
            training[name] = value
    if training.get("autocast") == "none":
        training["autocast"] = None
    if not recipe.get("output_dir"):
        raise ValueError("no output folder: pass --output DIR (or output_dir in --config).")
    return recipe_cls(**{**recipe, "training": training})


def run(args: argparse.Namespace) -> int:
    from ..training.recipe import run_recipe

    folder = run_recipe(config_from_args(args))
    print(f"trained model saved to {folder}")
    return 0
