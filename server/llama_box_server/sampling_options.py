"""The sampler flags, derived from ``SamplingParams``: every field that declares flags
(``types.knob``) becomes an option with its range, help and default, and the parsed
values become the ``SamplingParams`` that requests default to."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click
import msgspec

from llama_box_core.sampling import (
    SamplerField,
    cli_logit_bias,
    dry_breakers,
    sampler_fields,
    sampler_names,
)
from llama_box_core.types import SamplingParams
from llama_box_server.option_kit import COMPLETION, GroupedOption


def _json_schema(text: str) -> str:
    try:
        msgspec.json.decode(text)
    except msgspec.DecodeError as error:
        raise ValueError(f"--json-schema is not valid JSON: {error}") from error
    return text


# Fields whose value on the command line is text to convert: (repeatable, converter).
CONVERTERS: dict[str, tuple[bool, Callable[[Any], Any]]] = {
    "logit_bias": (True, cli_logit_bias),
    "dry_sequence_breakers": (True, dry_breakers),
    "samplers": (False, sampler_names),
    "json_schema": (False, _json_schema),
}
# Flags of the command line only, each feeding a field: --sampling-seq (samplers as
# letters) and --grammar-file (the grammar read from a file).
SAMPLING_SEQ, GRAMMAR_FILE = "sampling_seq", "grammar_file"


def _click_type(field: SamplerField) -> Any:
    kind = msgspec.inspect.type_info(field.annotation)
    kind = getattr(kind, "type", kind)  # under its Metadata
    if isinstance(kind, msgspec.inspect.IntType):
        return click.IntRange(min=field.ge, max=field.le) if field.ge is not None else int
    if isinstance(kind, msgspec.inspect.FloatType):
        if field.ge is None and field.le is None:
            return float
        low, high = (None if v is None else float(v) for v in (field.ge, field.le))
        return click.FloatRange(min=low, max=high)
    return str


def _option(field: SamplerField) -> GroupedOption:
    multiple, _ = CONVERTERS.get(field.name, (False, None))
    plain = field.name not in CONVERTERS
    return GroupedOption(
        [*field.flags, field.name],
        group=field.group,
        type=_click_type(field),
        multiple=multiple,
        default=field.default if plain else None,
        show_default=plain and field.default is not None,
        metavar="N" if plain and field.default is not None else "TEXT",
        help=field.help,
    )


def sampling_options() -> list[click.Option]:
    """One option per sampler field with flags, then the two that feed fields."""
    options: list[click.Option] = [_option(f) for f in sampler_fields() if f.flags]
    options += [
        GroupedOption(
            ["--sampling-seq", "--sampler-seq", SAMPLING_SEQ],
            group=COMPLETION,
            metavar="SEQUENCE",
            help="Simplified sequence for samplers that will be used: e=penalties, d=dry, "
            "s=top_n_sigma, k=top_k, y=typ_p, p=top_p, m=min_p, x=xtc, t=temperature "
            "(overrides --samplers)",
        ),
        GroupedOption(
            ["--grammar-file", GRAMMAR_FILE],
            group=COMPLETION,
            metavar="FILE",
            type=click.Path(exists=True, dir_okay=False),
            help="File to read grammar from",
        ),
    ]
    return options


def sampling_option_names() -> set[str]:
    return {f.name for f in sampler_fields() if f.flags} | {SAMPLING_SEQ, GRAMMAR_FILE}


def sampling_from_options(values: Mapping[str, Any]) -> SamplingParams:
    """The parsed sampler options as the defaults of every request; ``ValueError`` for
    a value that cannot be used (the CLI reports it)."""
    fields: dict[str, Any] = {}
    for field in sampler_fields():
        value = values.get(field.name)
        if not field.flags or value is None or value == ():
            continue
        _, convert = CONVERTERS.get(field.name, (False, None))
        fields[field.name] = convert(value) if convert else value
    if values.get(SAMPLING_SEQ):
        fields["samplers"] = sampler_names(values[SAMPLING_SEQ])
    if values.get(GRAMMAR_FILE):
        fields["grammar"] = _read(values[GRAMMAR_FILE])
    return SamplingParams(**fields)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        return file.read()


def split_values(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(sampler option values, the rest)."""
    names = sampling_option_names()
    ours = {k: v for k, v in values.items() if k in names}
    return ours, {k: v for k, v in values.items() if k not in names}
