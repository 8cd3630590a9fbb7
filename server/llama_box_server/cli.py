"""The ``llama-box`` command: options grouped as in the seed's usage text."""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import platform
import socket
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click
import msgspec
import pluggy

from llama_box_core.plugins import describe_plugins, enable_hook_tracing
from llama_box_core.sampling import default_params
from llama_box_core.settings import Settings
from llama_box_server import __version__
from llama_box_server.plugins import create_plugin_manager, load_plugins

log = logging.getLogger("llama_box")

GENERAL, SERVER, COMPLETION = "general", "server", "server/completion"
GROUP_ORDER = (GENERAL, SERVER, COMPLETION)
DEFAULTS = Settings()
CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


class GroupedOption(click.Option):
    """An option that knows which heading of ``--help`` it belongs under."""

    def __init__(self, *args: Any, group: str = GENERAL, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group


class GroupedCommand(click.Command):
    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        groups: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                groups.setdefault(getattr(param, "group", GENERAL), []).append(record)
        for name in [*GROUP_ORDER, *sorted(set(groups) - set(GROUP_ORDER))]:
            if name in groups:
                with formatter.section(name):
                    formatter.write_dl(groups[name])


def option(group: str, *decls: str, **kwargs: Any) -> GroupedOption:
    """An option whose default is the Settings field of the same name."""
    opt = GroupedOption(decls, group=group, **kwargs)
    if "default" not in kwargs and hasattr(DEFAULTS, opt.name or ""):
        opt.default = getattr(DEFAULTS, opt.name or "")
    opt.show_default = "default" not in kwargs and not opt.is_flag
    return opt


def env(name: str) -> str:
    return f"LLAMA_ARG_{name}"


def _exit_after(action: Callable[[click.Context], None]) -> Callable[..., None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value and not ctx.resilient_parsing:
            action(ctx)
            ctx.exit()

    return callback


def _print_version(_ctx: click.Context) -> None:
    click.echo(f"llama-box {__version__}")
    for dist in ("llama-cpp-python",):
        with contextlib.suppress(PackageNotFoundError):
            click.echo(f"{dist} {version(dist)}")


def _print_system_info(ctx: click.Context) -> None:
    pm: pluggy.PluginManager = ctx.obj
    click.echo(f"llama-box {__version__}, Python {platform.python_version()}, {platform.system()}")
    for backend in pm.hook.llama_box_backend(settings=DEFAULTS):
        if backend is not None:
            click.echo(f"{backend.name}: {backend.description}")


def _print_devices(ctx: click.Context) -> None:
    pm: pluggy.PluginManager = ctx.obj
    click.echo("Available devices:")
    for backend in pm.hook.llama_box_backend(settings=DEFAULTS):
        for device in backend.devices if backend is not None else []:
            click.echo(f"  {device}")


def _print_plugins(ctx: click.Context) -> None:
    for plugin in describe_plugins(ctx.obj):
        click.echo(
            f"{plugin['name']} ({plugin['distribution']} {plugin['version']}): "
            f"{', '.join(plugin['hooks']) or '-'}"
        )


def builtin_options() -> list[click.Option]:
    def info(*decls: str, action: Callable[[click.Context], None], help: str) -> GroupedOption:
        return option(
            GENERAL,
            *decls,
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_exit_after(action),
            help=help,
        )

    return [
        info("--version", action=_print_version, help="Print version and exit"),
        info("--system-info", action=_print_system_info, help="Print system info and exit"),
        info(
            "--list-devices", action=_print_devices, help="Print list of available devices and exit"
        ),
        info(
            "--list-plugins",
            action=_print_plugins,
            help="Print each loaded plugin with its version and hooks, and exit",
        ),
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
        option(GENERAL, "--log-colors", is_flag=True, help="Enable colored logging"),
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
            help="IP address to listen, or bind to an UNIX socket if the address ends with .sock",
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
        option(SERVER, "-a", "--alias", metavar="NAME", help="Model name alias"),
        option(SERVER, "-s", "--seed", type=int, metavar="N", help="RNG seed (-1 = random seed)"),
        option(
            SERVER,
            "--swa-full",
            is_flag=True,
            help="Use full-size SWA cache (default disabled)",
        ),
        option(
            SERVER,
            "-kvu",
            "--kv-unified",
            "kv_unified",
            is_flag=True,
            envvar=env("KV_UNIFIED"),
            help="Use a single unified KV buffer shared by all slots (default: each slot "
            "owns its share of -c)",
        ),
        option(
            SERVER,
            "-fa",
            "--flash-attn/--no-flash-attn",
            "flash_attn",
            default=None,
            envvar=env("FLASH_ATTN"),
            help="Enable Flash Attention, which can reduce (V)RAM but increase computation; "
            "--no-flash-attn disables it (default: llama.cpp decides, as llama-server's auto)",
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
            "--jinja",
            is_flag=True,
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
        option(
            COMPLETION, "--temp", type=click.FloatRange(min=0.0), metavar="T", help="Temperature"
        ),
        option(
            COMPLETION,
            "--top-k",
            type=click.IntRange(min=0),
            metavar="N",
            help="Top-K sampling (0 = disabled)",
        ),
        option(
            COMPLETION,
            "--top-p",
            type=click.FloatRange(0.0, 1.0),
            metavar="N",
            help="Top-P sampling (1.0 = disabled)",
        ),
        option(
            COMPLETION,
            "--min-p",
            type=click.FloatRange(0.0, 1.0),
            metavar="N",
            help="Min-P sampling (0.0 = disabled)",
        ),
        *sampling_options(),
    ]


def sampling_options() -> list[click.Option]:
    """The sampler flags of the seed's usage text (server/completion)."""

    def number(*decls: str, kind: type = float, help: str) -> GroupedOption:
        return option(COMPLETION, *decls, type=kind, metavar="N", help=help)

    return [
        option(
            COMPLETION,
            "--samplers",
            metavar="SAMPLERS",
            help="Samplers that will be used for generation in the order, separated by "
            "';', select from penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;"
            "temperature, or a stage a plugin registered",
        ),
        option(
            COMPLETION,
            "--sampling-seq",
            "sampling_seq",
            metavar="SEQUENCE",
            help="Simplified sequence for samplers that will be used: e=penalties, d=dry, "
            "s=top_n_sigma, k=top_k, y=typ_p, p=top_p, m=min_p, x=xtc, "
            "t=temperature (overrides --samplers)",
        ),
        number("--top-nsigma", help="Top-N-Sigma sampling (-1.0 = disabled)"),
        number("--xtc-probability", help="XTC probability (0.0 = disabled)"),
        number("--xtc-threshold", help="XTC threshold (1.0 = disabled)"),
        number("--typical", help="Locally typical sampling, parameter p (1.0 = disabled)"),
        number(
            "--repeat-last-n",
            kind=int,
            help="Last n tokens to consider for penalize (0 = disabled, -1 = ctx_size)",
        ),
        number("--repeat-penalty", help="Penalize repeat sequence of tokens (1.0 = disabled)"),
        number("--presence-penalty", help="Repeat alpha presence penalty (0.0 = disabled)"),
        number("--frequency-penalty", help="Repeat alpha frequency penalty (0.0 = disabled)"),
        number("--dry-multiplier", help="Set DRY sampling multiplier (0.0 = disabled)"),
        number("--dry-base", help="Set DRY sampling base value"),
        number("--dry-allowed-length", kind=int, help="Set allowed length for DRY sampling"),
        number(
            "--dry-penalty-last-n",
            kind=int,
            help="Set DRY penalty for the last n tokens (0 = disable, -1 = context size)",
        ),
        option(
            COMPLETION,
            "--dry-sequence-breaker",
            "dry_sequence_breaker",
            multiple=True,
            metavar="N",
            help="Add sequence breaker for DRY sampling, clearing out default breakers "
            '(\\n;:;";*) in the process; use "none" to not use any',
        ),
        number("--dynatemp-range", help="Dynamic temperature range (0.0 = disabled)"),
        number("--dynatemp-exp", help="Dynamic temperature exponent"),
        option(
            COMPLETION,
            "--mirostat",
            type=click.IntRange(0, 2),
            metavar="N",
            help="Use Mirostat sampling (0 = disabled, 1 = Mirostat, 2 = Mirostat 2.0); "
            "Top K, Nucleus and Locally Typical samplers are ignored if used",
        ),
        number("--mirostat-lr", help="Mirostat learning rate, parameter eta"),
        number("--mirostat-ent", help="Mirostat target entropy, parameter tau"),
        option(
            COMPLETION,
            "-l",
            "--logit-bias",
            "logit_bias",
            multiple=True,
            metavar="TOKEN_ID(+/-)BIAS",
            help="Modifies the likelihood of token appearing in the completion, i.e. "
            "\"--logit-bias 15043+1\" to increase likelihood of token ' Hello'",
        ),
        option(
            COMPLETION,
            "--grammar",
            metavar="GRAMMAR",
            help="BNF-like grammar to constrain generations",
        ),
        option(
            COMPLETION,
            "--grammar-file",
            metavar="FILE",
            type=click.Path(exists=True, dir_okay=False),
            help="File to read grammar from",
        ),
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
        option(
            COMPLETION,
            "-j",
            "--json-schema",
            "json_schema",
            metavar="SCHEMA",
            help="JSON schema to constrain generations, e.g. `{}` for any JSON object",
        ),
    ]


def plugin_options(pm: pluggy.PluginManager, taken: set[str]) -> list[click.Option]:
    added: list[click.Option] = []

    def register(group: str, opt: click.Option) -> None:
        if opt.name in taken:
            raise click.ClickException(f"plugin option --{opt.name} is already taken")
        taken.add(opt.name or "")
        opt.group = group  # type: ignore[attr-defined]
        added.append(opt)

    pm.hook.llama_box_cli_options(register=register)
    return added


def build_cli(pm: pluggy.PluginManager) -> click.Command:
    params = builtin_options()
    field_names = set(msgspec.structs.asdict(DEFAULTS))
    extra = plugin_options(pm, {p.name or "" for p in params})

    def run(**values: Any) -> None:
        core = {k: v for k, v in values.items() if k in field_names}
        plugin_values = {k: v for k, v in values.items() if k not in field_names}
        settings = Settings(**core, plugin_options=plugin_values)
        serve(settings, pm)

    return GroupedCommand(
        "llama-box",
        params=[*params, *extra],
        callback=run,
        help="An OpenAI-compatible inference server for GGUF models.",
        context_settings={"help_option_names": ["-h", "--help", "--usage"], "obj": pm},
    )


def configure_logging(settings: Settings) -> None:
    from llama_box_server.middleware import RequestIdFilter

    level = logging.DEBUG if settings.verbose or settings.log_verbosity > 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    # On the handler, not a logger, so records of every logger get the request id.
    handler.addFilter(RequestIdFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "request_id": record.request_id,  # set by RequestIdFilter
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


def check_settings(settings: Settings) -> None:
    if not settings.model:
        raise click.UsageError("no model given: pass -m/--model FILE")
    if not os.path.isfile(settings.model):
        raise click.UsageError(f"model file not found: {settings.model}")
    try:
        default_params(settings)
    except (OSError, ValueError) as error:
        raise click.UsageError(str(error)) from error
    if settings.chat_template and (settings.jinja or settings.chat_template_file):
        raise click.UsageError(
            "--chat-template picks a built-in template; drop --jinja/--chat-template-file"
        )


def listening_socket(settings: Settings) -> socket.socket:
    """Bind ourselves, so a UNIX socket (.sock) and TCP keep-alive are both ours to set."""
    if settings.host.endswith(".sock"):
        if os.path.exists(settings.host):
            os.unlink(settings.host)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(settings.host)
        return sock
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.create_server((settings.host, settings.port), family=family, backlog=2048)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, settings.conn_keepalive)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, settings.conn_keepalive)
    return sock


def serve(settings: Settings, pm: pluggy.PluginManager) -> None:
    import uvicorn

    from llama_box_server.app import create_app

    check_settings(settings)
    if settings.chat_template_file:
        settings.jinja = True
    configure_logging(settings)
    if settings.trace_hooks:
        enable_hook_tracing(pm)
    failure: list[BaseException] = []
    sock = listening_socket(settings)
    config = uvicorn.Config(
        None,  # set below: the app needs the server to stop it on a failed load
        log_config=None,
        access_log=False,  # RequestIdMiddleware logs each request, with its id
        timeout_keep_alive=settings.conn_idle,
        ws="none",
        lifespan="on",
    )
    server = uvicorn.Server(config)

    def on_load_failure(error: BaseException) -> None:
        failure.append(error)
        server.should_exit = True

    config.app = create_app(settings, pm, on_load_failure=on_load_failure)
    where = (
        settings.host
        if settings.host.endswith(".sock")
        else ("http://{}:{}".format(*sock.getsockname()[:2]))
    )
    log.info("llama-box %s listening on %s", __version__, where)
    server.run(sockets=[sock])
    if failure:
        raise click.ClickException(f"model failed to load: {failure[0]}")


def main(argv: list[str] | None = None) -> None:
    # A native crash (a CPU kernel that faults) then prints where it happened.
    faulthandler.enable()
    pm = create_plugin_manager()
    load_plugins(pm)
    cli = build_cli(pm)
    try:
        cli.main(args=argv, prog_name="llama-box", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as error:  # one line, not click's three
        click.echo(f"llama-box: error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
    except click.Abort:
        sys.exit(130)
