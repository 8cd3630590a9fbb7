"""The command line's options, as the seed's usage text groups them: one declaration
each, whose default is the Settings field of the same name. The sampler options are
derived from ``SamplingParams`` in ``llama_box_server.sampling_options``."""

from __future__ import annotations

import json
from typing import Any

import click

from llama_box_server.option_kit import (
    COMPLETION,
    GENERAL,
    NO_FLASH_ATTN,
    SERVER,
    SWITCH,
    env,
    option,
)


class JsonObject(click.ParamType):
    name = "json"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as error:
            self.fail(f"not JSON: {error}", param, ctx)
        if not isinstance(parsed, dict):
            self.fail("want a JSON object", param, ctx)
        return parsed


JSON_OBJECT = JsonObject()
CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


def builtin_options() -> list[click.Option]:
    """Every option of the core settings (general, server, server/completion)."""
    return [
        option(
            GENERAL,
            "-v",
            "--verbose",
            "--log-verbose",
            "verbose",
            is_flag=True,
            help="Set verbosity level to infinity (i.e. log all messages)",
        ),
        option(
            GENERAL,
            "-lv",
            "--verbosity",
            "--log-verbosity",
            "log_verbosity",
            type=click.IntRange(min=0),
            metavar="V",
            help="Set the verbosity threshold: 0 logs info and above, 1 or more also "
            "debug messages",
        ),
        option(
            GENERAL, "--log-format", type=click.Choice(["text", "json"]), help="Log line format"
        ),
        option(
            GENERAL,
            "--log-colors",
            type=SWITCH,
            is_flag=False,
            flag_value="on",
            metavar="[on|off|auto]",
            help="Enable colored logging (given alone: on)",
        ),
        option(
            GENERAL,
            "--trace-hooks",
            is_flag=True,
            help="Log every plugin hook call (debug level; also $LLAMA_BOX_TRACE_HOOKS=1)",
        ),
        # server
        option(
            SERVER,
            "--host",
            metavar="HOST",
            help="IP address to listen (several: comma-separated), or bind to an UNIX socket if "
            "the address ends with .sock",
        ),
        option(
            SERVER, "--port", type=click.IntRange(0, 65535), metavar="PORT", help="Port to listen"
        ),
        option(
            SERVER,
            "-to",
            "--timeout",
            "timeout",
            type=click.IntRange(min=1),
            metavar="N",
            help="Server read/write timeout in seconds: a request that waits this long "
            "for a free slot gets 503",
        ),
        option(
            SERVER,
            "--threads-http",
            type=click.IntRange(-1, 64),
            metavar="N",
            envvar=env("THREADS_HTTP"),
            help="Number of threads used to process HTTP requests (tokenizing and other "
            "blocking work off the event loop; -1 = Python's default)",
        ),
        option(
            SERVER,
            "--conn-idle",
            type=click.IntRange(min=1),
            metavar="N",
            help="Server connection idle in seconds (idle keep-alive connections close)",
        ),
        option(
            SERVER,
            "--conn-keepalive",
            type=click.IntRange(min=1),
            metavar="N",
            help="Server connection keep-alive in seconds (TCP keep-alive probes)",
        ),
        option(
            SERVER,
            "-m",
            "--model",
            "model",
            metavar="FILE",
            envvar=env("MODEL"),
            type=click.Path(dir_okay=False),
            help="Model path",
        ),
        option(
            SERVER,
            "-a",
            "--alias",
            metavar="NAMES",
            envvar=env("ALIAS"),
            help="Model name aliases, comma-separated (the first in alphabetical order is "
            "the model's id)",
        ),
        option(
            SERVER,
            "--tags",
            metavar="TAGS",
            envvar=env("TAGS"),
            help="Model tags, comma-separated, shown by /v1/models",
        ),
        option(
            SERVER,
            "--swa-full",
            is_flag=True,
            help="Use full-size SWA cache (default disabled)",
        ),
        option(
            SERVER,
            "--kv-unified/--no-kv-unified",
            "-kvu/-no-kvu",
            "kv_unified",
            envvar=env("KV_UNIFIED"),
            help="Use a single unified KV buffer shared by all slots (default: each slot "
            "owns its share of -c)",
        ),
        option(
            SERVER,
            "-fa",
            "--flash-attn",
            "flash_attn",
            type=SWITCH,
            is_flag=False,
            flag_value="on",
            default=None,
            metavar="[on|off|auto]",
            envvar=env("FLASH_ATTN"),
            help="Set Flash Attention use, which can reduce (V)RAM but increase computation "
            "(given alone: on; default: auto, llama.cpp decides, as llama-server)",
        ),
        option(
            SERVER,
            "--no-flash-attn",
            NO_FLASH_ATTN,
            is_flag=True,
            help="Disable Flash Attention (= -fa off)",
        ),
        option(
            SERVER,
            "-ngl",
            "--gpu-layers",
            "--n-gpu-layers",
            "n_gpu_layers",
            type=int,
            metavar="N",
            envvar=env("N_GPU_LAYERS"),
            help="Number of layers to store in VRAM (-1 = all, 0 = no offloading)",
        ),
        option(
            SERVER,
            "--repack/--no-repack",
            " /-nr",
            "repack",
            default=None,
            envvar=env("REPACK"),
            help="Whether to repack weights for this CPU's faster kernels (llama.cpp's extra "
            "buffer types; default: on, except on CPUs with AMX where a one-time probe "
            "decides)",
        ),
        option(
            SERVER,
            "--no-host",
            is_flag=True,
            envvar=env("NO_HOST"),
            help="Bypass host buffer allowing extra buffers to be used",
        ),
        option(
            SERVER,
            "--warmup/--no-warmup",
            help="Warm up the model with an empty run before serving",
        ),
        option(
            SERVER,
            "--api-key",
            "api_key",
            multiple=True,
            metavar="KEY",
            envvar="LLAMA_API_KEY",
            default=(),
            help="API key to use for authentication, may be repeated; every endpoint but "
            "/health and /v1/models then needs it",
        ),
        option(
            SERVER,
            "--api-key-file",
            metavar="FILE",
            type=click.Path(exists=True, dir_okay=False),
            help="Path to file containing API keys, one per line",
        ),
        option(
            SERVER,
            "--cors-origins",
            metavar="ORIGINS",
            envvar=env("CORS_ORIGINS"),
            help="Comma-separated list of allowed origins for CORS; 'localhost' reflects the "
            "Origin header only if it is a loopback one",
        ),
        option(
            SERVER,
            "--cors-methods",
            metavar="METHODS",
            envvar=env("CORS_METHODS"),
            help="Comma-separated list of allowed methods for CORS",
        ),
        option(
            SERVER,
            "--cors-headers",
            metavar="HEADERS",
            envvar=env("CORS_HEADERS"),
            help="Comma-separated list of allowed headers for CORS",
        ),
        option(
            SERVER,
            "--cors-credentials/--no-cors-credentials",
            envvar=env("CORS_CREDENTIALS"),
            help="Whether to allow credentials for CORS (with --cors-origins '*', the Origin "
            "header is echoed back)",
        ),
        option(
            SERVER,
            "--max-body-size",
            type=click.IntRange(min=1),
            metavar="BYTES",
            envvar=env("MAX_BODY_SIZE"),
            help="Largest request body accepted (a larger one is a 400)",
        ),
        option(
            SERVER,
            "--max-json-depth",
            type=click.IntRange(min=1),
            metavar="N",
            envvar=env("MAX_JSON_DEPTH"),
            help="Deepest nesting of a JSON request body accepted (deeper is a 400)",
        ),
        option(
            SERVER,
            "--max-json-array",
            type=click.IntRange(min=1),
            metavar="N",
            envvar=env("MAX_JSON_ARRAY"),
            help="Most items a JSON array of a request body may have (more is a 400)",
        ),
        option(
            SERVER,
            "--metrics",
            is_flag=True,
            envvar=env("METRICS"),
            help="Enable prometheus compatible metrics endpoint",
        ),
        option(
            SERVER,
            "--props",
            is_flag=True,
            envvar=env("ENDPOINT_PROPS"),
            help="Enable changing global properties via POST /props",
        ),
        # server/completion
        option(
            COMPLETION,
            "--chat-template",
            metavar="BUILTIN",
            envvar=env("CHAT_TEMPLATE"),
            help="Set built-in chat template (default: analyze from model's metadata)",
        ),
        option(
            COMPLETION,
            "--jinja/--no-jinja",
            "jinja",
            envvar=env("JINJA"),
            help="Render the chat template with Jinja (the model's, or --chat-template-file)",
        ),
        option(
            COMPLETION,
            "--chat-template-file",
            metavar="FILE",
            type=click.Path(exists=True, dir_okay=False),
            help="Set jinja chat template (implies --jinja)",
        ),
        option(
            COMPLETION,
            "--chat-template-kwargs",
            metavar="STRING",
            type=JSON_OBJECT,
            default={},
            envvar=env("CHAT_TEMPLATE_KWARGS"),
            help="Additional variables for the Jinja template, a JSON object such as "
            "'{\"enable_thinking\": false}'",
        ),
        option(
            COMPLETION,
            "-t",
            "--threads",
            type=int,
            metavar="N",
            envvar=env("THREADS"),
            help="Number of threads to use during generation (-1 = all usable CPUs)",
        ),
        option(
            COMPLETION,
            "-tb",
            "--threads-batch",
            type=int,
            metavar="N",
            help="Number of threads to use during batch and prompt processing "
            "(-1 = same as --threads)",
        ),
        option(
            COMPLETION,
            "-c",
            "--ctx-size",
            type=click.IntRange(min=0),
            metavar="N",
            envvar=env("CTX_SIZE"),
            help="Size of the prompt context, shared by the slots (0 = loaded from model)",
        ),
        option(
            COMPLETION,
            "-np",
            "--parallel",
            "n_parallel",
            type=click.IntRange(min=1),
            metavar="N",
            envvar=env("N_PARALLEL"),
            help="Number of parallel sequences (slots) to decode",
        ),
        option(
            COMPLETION,
            "-b",
            "--batch-size",
            type=click.IntRange(min=1),
            metavar="N",
            envvar=env("BATCH"),
            help="Logical batch size",
        ),
        option(
            COMPLETION,
            "-ub",
            "--ubatch-size",
            type=click.IntRange(min=1),
            metavar="N",
            envvar=env("UBATCH"),
            help="Physical batch size",
        ),
        option(
            COMPLETION,
            "-n",
            "--predict",
            "--n-predict",
            "n_predict",
            type=click.IntRange(min=-1),
            metavar="N",
            envvar=env("N_PREDICT"),
            help="Number of tokens to predict (-1 = until the context is full)",
        ),
        option(
            COMPLETION,
            "-tps",
            "--tokens-per-second",
            "tokens_per_second",
            type=click.IntRange(min=-1),
            metavar="N",
            help="Maximum number of tokens per second (0 = disabled, -1 = try to detect); "
            "when enabled, limit the request within its X-Request-Tokens-Per-Second "
            "HTTP header",
        ),
        option(
            COMPLETION,
            "--mmap/--no-mmap",
            help="Memory-map the model (faster load, may increase pageouts)",
        ),
        option(
            COMPLETION,
            "--mlock",
            is_flag=True,
            help="Force system to keep model in RAM rather than swapping or compressing",
        ),
        option(
            COMPLETION,
            "-ctk",
            "--cache-type-k",
            type=click.Choice(CACHE_TYPES),
            help="KV cache data type for K",
        ),
        option(
            COMPLETION,
            "-ctv",
            "--cache-type-v",
            type=click.Choice(CACHE_TYPES),
            help="KV cache data type for V",
        ),
        *slot_options(),
    ]


def slot_options() -> list[click.Option]:
    """Slots, the prompt cache and context shift."""
    return [
        option(
            COMPLETION,
            "--slots/--no-slots",
            "slots",
            envvar=env("SLOTS"),
            help="Expose GET /slots and the slot actions (disable: --no-slots)",
        ),
        option(
            COMPLETION,
            "--slot-save-path",
            metavar="PATH",
            type=click.Path(exists=True, file_okay=False),
            help="Path to save slot kv cache (default: disabled)",
        ),
        option(
            COMPLETION,
            "--cache-prompt/--no-cache-prompt",
            "cache_prompt",
            help="Reuse the KV cache of a slot's previous prompt (disable: --no-cache-prompt)",
        ),
        option(
            COMPLETION,
            "--cache-reuse",
            type=click.IntRange(min=0),
            metavar="N",
            help="Min chunk size to attempt reusing from the cache via KV shifting (0 = off)",
        ),
        option(
            COMPLETION,
            "-sps",
            "--slot-prompt-similarity",
            "slot_prompt_similarity",
            type=click.FloatRange(0.0, 1.0),
            metavar="N",
            help="How much the prompt of a request must match the prompt of a slot in "
            "order to use that slot (0.0 = disabled)",
        ),
        option(
            COMPLETION,
            "--context-shift/--no-context-shift",
            "context_shift",
            help="Context shift on infinite text generation: when a slot is full, drop "
            "half of what follows the kept prompt head and go on",
        ),
        option(
            COMPLETION,
            "--keep",
            type=click.IntRange(min=-1),
            metavar="N",
            help="Number of tokens to keep from the initial prompt (-1 = all)",
        ),
    ]
