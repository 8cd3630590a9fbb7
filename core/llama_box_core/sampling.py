"""Sampler settings: the CLI's defaults, and the names and shorthands of sampler stages."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import msgspec

from llama_box_core.settings import Settings
from llama_box_core.types import DEFAULT_DRY_BREAKERS, SamplingParams

# llama.cpp's --sampling-seq letters.
SEQUENCE_LETTERS = {
    "e": "penalties",
    "d": "dry",
    "s": "top_n_sigma",
    "k": "top_k",
    "y": "typ_p",
    "p": "top_p",
    "m": "min_p",
    "x": "xtc",
    "t": "temperature",
}
# Other spellings llama-server accepts for the built-in stages.
ALIASES = {
    "typical_p": "typ_p",
    "typical": "typ_p",
    "nucleus": "top_p",
    "temp": "temperature",
    "top_nsigma": "top_n_sigma",
}
_CLI_BIAS = re.compile(r"^\s*(\d+)\s*([+-]\s*[0-9.]+(?:e[+-]?\d+)?|[+-]inf)\s*$", re.IGNORECASE)


def sampler_names(value: str | Iterable[str]) -> tuple[str, ...]:
    """Stage names from a list, a ';'-separated string, or a sequence of letters."""
    if isinstance(value, str):
        if ";" not in value and value and all(c in SEQUENCE_LETTERS for c in value):
            return tuple(SEQUENCE_LETTERS[c] for c in value)
        value = value.split(";")
    names = (name.strip().lower().replace("-", "_") for name in value)
    return tuple(ALIASES.get(name, name) for name in names if name)


def cli_logit_bias(entries: Iterable[str]) -> tuple[tuple[int, float], ...]:
    """``--logit-bias 15043+1`` entries as (token, bias)."""
    biases = []
    for entry in entries:
        match = _CLI_BIAS.match(entry)
        if match is None:
            raise ValueError(f"--logit-bias {entry!r}: expected TOKEN_ID+BIAS or TOKEN_ID-BIAS")
        bias = match.group(2).replace(" ", "").lower()
        biases.append((int(match.group(1)), -math.inf if bias == "-inf" else float(bias)))
    return tuple(biases)


def dry_breakers(entries: Iterable[str]) -> tuple[str, ...]:
    entries = tuple(entries)
    if not entries:
        return DEFAULT_DRY_BREAKERS
    if entries == ("none",):
        return ()
    return tuple(e.encode().decode("unicode_escape") for e in entries)


def default_params(settings: Settings) -> SamplingParams:
    """The sampling a request gets for every field it leaves out; ``ValueError`` for a
    flag that cannot be used (the CLI reports it)."""
    grammar = settings.grammar
    if settings.grammar_file:
        with open(settings.grammar_file, encoding="utf-8") as file:
            grammar = file.read()
    if settings.json_schema is not None:
        try:
            msgspec.json.decode(settings.json_schema)
        except msgspec.DecodeError as error:
            raise ValueError(f"--json-schema is not valid JSON: {error}") from error
    return SamplingParams(
        temperature=settings.temp,
        dynatemp_range=settings.dynatemp_range,
        dynatemp_exponent=settings.dynatemp_exp,
        top_k=settings.top_k,
        top_p=settings.top_p,
        min_p=settings.min_p,
        typical_p=settings.typical,
        top_n_sigma=settings.top_nsigma,
        xtc_probability=settings.xtc_probability,
        xtc_threshold=settings.xtc_threshold,
        seed=settings.seed,
        repeat_penalty=settings.repeat_penalty,
        repeat_last_n=settings.repeat_last_n,
        presence_penalty=settings.presence_penalty,
        frequency_penalty=settings.frequency_penalty,
        dry_multiplier=settings.dry_multiplier,
        dry_base=settings.dry_base,
        dry_allowed_length=settings.dry_allowed_length,
        dry_penalty_last_n=settings.dry_penalty_last_n,
        dry_sequence_breakers=dry_breakers(settings.dry_sequence_breaker),
        mirostat=settings.mirostat,
        mirostat_tau=settings.mirostat_ent,
        mirostat_eta=settings.mirostat_lr,
        logit_bias=cli_logit_bias(settings.logit_bias),
        grammar=grammar,
        json_schema=settings.json_schema,
        samplers=sampler_names(settings.sampling_seq or settings.samplers),
    )
