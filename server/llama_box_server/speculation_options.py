"""The speculative decoding options (the v2 seed's, with llama-server's names as aliases);
their defaults are the Settings fields of the same name."""

from __future__ import annotations

import click

from llama_box_server.option_kit import SPECULATIVE, env, option


def speculation_options() -> list[click.Option]:
    return [
        option(
            SPECULATIVE,
            "--draft-max",
            "--draft",
            "--draft-n",
            "--spec-draft-n-max",
            "draft_max",
            type=click.IntRange(min=0),
            metavar="N",
            envvar=env("DRAFT_MAX"),
            help="Number of tokens to draft for speculative decoding",
        ),
        option(
            SPECULATIVE,
            "--draft-min",
            "--draft-n-min",
            "--spec-draft-n-min",
            "draft_min",
            type=click.IntRange(min=0),
            metavar="N",
            envvar=env("DRAFT_MIN"),
            help="Minimum number of draft tokens to use for speculative decoding",
        ),
        option(
            SPECULATIVE,
            "--draft-p-min",
            "--spec-draft-p-min",
            "draft_p_min",
            type=click.FloatRange(0.0, 1.0),
            metavar="P",
            envvar=env("DRAFT_P_MIN"),
            help="Minimum speculative decoding probability (greedy)",
        ),
        option(
            SPECULATIVE,
            "-md",
            "--model-draft",
            "--spec-draft-model",
            "model_draft",
            metavar="FNAME",
            envvar=env("MODEL_DRAFT"),
            help="Draft model for speculative decoding (default: unused)",
        ),
        option(
            SPECULATIVE,
            "-cd",
            "--ctx-size-draft",
            "ctx_size_draft",
            type=click.IntRange(min=0),
            metavar="N",
            envvar=env("CTX_SIZE_DRAFT"),
            help="Size of the prompt context for the draft model (0 = the target's -c)",
        ),
        option(
            SPECULATIVE,
            "-devd",
            "--device-draft",
            "--spec-draft-device",
            "device_draft",
            metavar="<dev1,dev2,...>",
            help="A comma-separated list of devices to use for offloading the draft model "
            "(none = don't offload)",
        ),
        option(
            SPECULATIVE,
            "-ngld",
            "--gpu-layers-draft",
            "--n-gpu-layers-draft",
            "--spec-draft-ngl",
            "n_gpu_layers_draft",
            type=int,
            metavar="N",
            envvar=env("N_GPU_LAYERS_DRAFT"),
            help="Number of layers to store in VRAM for the draft model",
        ),
        option(
            SPECULATIVE,
            "-td",
            "--threads-draft",
            "--spec-draft-threads",
            "threads_draft",
            type=int,
            metavar="N",
            help="Threads for the draft model's generation (default: same as --threads)",
        ),
        option(
            SPECULATIVE,
            "-tbd",
            "--threads-batch-draft",
            "--spec-draft-threads-batch",
            "threads_batch_draft",
            type=int,
            metavar="N",
            help="Threads for the draft model's prompt processing (default: --threads-draft)",
        ),
        option(
            SPECULATIVE,
            "--lookup-ngram-min",
            "lookup_ngram_min",
            type=click.IntRange(min=0),
            metavar="N",
            help="Minimum n-gram size for lookup cache speculation (0 = disabled)",
        ),
        option(
            SPECULATIVE,
            "-lcs",
            "--lookup-cache-static",
            "lookup_cache_static",
            type=click.Path(exists=True, dir_okay=False),
            metavar="FILE",
            help="Path to a static lookup cache for lookup decoding (not updated)",
        ),
        option(
            SPECULATIVE,
            "-lcd",
            "--lookup-cache-dynamic",
            "lookup_cache_dynamic",
            type=click.Path(dir_okay=False),
            metavar="FILE",
            help="Path to a dynamic lookup cache for lookup decoding (updated by generation)",
        ),
    ]
