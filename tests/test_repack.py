"""Weight repacking on every x86-64 CPU: the AMX decision with injected CPU features and
probes, the child-process probe on real crashes and on Gemma, the flags, and the native
parameter structs (a field that does not exist must fail, not be ignored)."""

from __future__ import annotations

import ctypes
import re
import sys
from pathlib import Path

import pytest

from llama_box_core.settings import Settings
from llama_box_server import cli

lc = pytest.importorskip("llama_cpp")

from llama_box_llamacpp import params, repack  # noqa: E402

AMX_CPU = repack.CpuInfo("Intel(R) Xeon(R) Platinum 8480+", frozenset({"avx512f", "amx_int8"}))
PLAIN_CPU = repack.CpuInfo("AMD EPYC", frozenset({"avx2", "avx512f"}))


def never_probe() -> bool:
    raise AssertionError("the probe must not run")


def decide(
    requested: bool | None, cpu: repack.CpuInfo, store: repack.VerdictStore, probe=never_probe
) -> repack.RepackChoice:
    return repack.decide_repack(requested, cpu, probe, store, llama_version="0.3.36")


@pytest.fixture
def store(tmp_path: Path) -> repack.VerdictStore:
    return repack.VerdictStore(tmp_path / "verdicts.json")


def test_no_amx_keeps_repacking_without_a_probe(store: repack.VerdictStore) -> None:
    choice = decide(None, PLAIN_CPU, store)
    assert choice.enabled and "no AMX" in choice.reason


@pytest.mark.parametrize("requested", [True, False])
def test_the_flag_wins_on_any_cpu(store: repack.VerdictStore, requested: bool) -> None:
    for cpu in (AMX_CPU, PLAIN_CPU):
        choice = decide(requested, cpu, store)
        assert choice.enabled is requested
        assert ("--repack" if requested else "--no-repack") in choice.reason


@pytest.mark.parametrize("probe_passes", [True, False])
def test_amx_cpu_is_probed_once_and_the_verdict_kept(
    store: repack.VerdictStore, probe_passes: bool
) -> None:
    calls: list[int] = []

    def probe() -> bool:
        calls.append(1)
        return probe_passes

    first = decide(None, AMX_CPU, store, probe)
    assert first.enabled is probe_passes
    assert ("passed" if probe_passes else "crashed") in first.reason
    second = decide(None, AMX_CPU, store, probe)
    assert second.enabled is probe_passes and "earlier probe" in second.reason
    assert len(calls) == 1
    # Another CPU model or llama.cpp version is probed anew.
    other = repack.CpuInfo("Intel(R) Xeon(R) Gold 6530", AMX_CPU.flags)
    decide(None, other, store, probe)
    assert len(calls) == 2


def test_unwritable_cache_still_decides(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = repack.VerdictStore(blocker / "sub" / "verdicts.json")
    assert decide(None, AMX_CPU, store, lambda: False).enabled is False


def test_cpuinfo_flags_are_read(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx512f amx_tile amx_int8\n\n"
        "processor\t: 1\nmodel name\t: Intel Xeon\nflags\t\t: fpu\n"
    )
    cpu = repack.read_cpuinfo(str(cpuinfo))
    assert cpu.model_name == "Intel Xeon" and cpu.has_amx
    assert not repack.read_cpuinfo(str(tmp_path / "missing")).has_amx


def test_probe_child_crash_exit_and_success() -> None:
    segfault = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    assert repack.probe_in_child([sys.executable, "-c", segfault]) is False
    assert repack.probe_in_child([sys.executable, "-c", "raise SystemExit(3)"]) is False
    assert repack.probe_in_child([sys.executable, "-c", "import time; time.sleep(5)"], 0.5) is False
    assert repack.probe_in_child([sys.executable, "-c", "pass"]) is True


@pytest.mark.slow
def test_probe_runs_a_real_batched_decode_on_gemma(gemma_path: str) -> None:
    assert repack.probe_in_child(repack.probe_command(gemma_path, 2)) is True


# --- native parameter structs ------------------------------------------------------------


def test_unknown_struct_field_raises() -> None:
    with pytest.raises(AttributeError, match="use_mmap"):
        params.set_fields(lc.llama_model_default_params(), use_mmap=False)


@pytest.mark.parametrize(
    ("mmap", "mlock", "mode"),
    [
        (True, False, params.LOAD_MODE_AUTO),
        (False, False, params.LOAD_MODE_NONE),
        (True, True, params.LOAD_MODE_MMAP_MLOCK),
        (False, True, params.LOAD_MODE_MLOCK),
    ],
)
def test_mmap_and_mlock_map_to_the_load_mode(mmap: bool, mlock: bool, mode: int) -> None:
    built = params.model_params(
        Settings(mmap=mmap, mlock=mlock, no_host=True), repack=False, placement={}
    )
    assert (built.load_mode, built.use_extra_bufts, built.no_host) == (mode, False, True)


def test_every_context_setting_is_a_field() -> None:
    for settings in (
        Settings(),
        Settings(flash_attn=True, cache_type_k="q8_0", context_shift=True, n_parallel=4),
        Settings(flash_attn=False, cache_type_v="bf16", swa_full=True, batch_size=64),
    ):
        built = params.context_params(settings)
        assert built.n_seq_max == settings.n_parallel and built.kv_unified is False
        assert isinstance(built, ctypes.Structure)


# --- flags ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], {}, None),
        (["--repack"], {}, True),
        (["--no-repack"], {}, False),
        (["-nr"], {}, False),
        ([], {"LLAMA_ARG_REPACK": "0"}, False),
        ([], {"LLAMA_ARG_REPACK": "true"}, True),
    ],
)
def test_repack_flags_and_env(
    captured: list[Settings],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    expected: bool | None,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cli.main(args)
    assert captured[-1].repack is expected


def test_no_host_flag(captured: list[Settings], monkeypatch: pytest.MonkeyPatch) -> None:
    cli.main(["--no-host"])
    monkeypatch.setenv("LLAMA_ARG_NO_HOST", "1")
    cli.main([])
    assert [s.no_host for s in captured] == [True, True]


@pytest.mark.slow
def test_the_load_log_says_what_was_chosen_and_warms_up_a_batch(server) -> None:
    log = server.log()
    assert re.search(r"weight repacking (on|off): \S", log), log[-2000:]
    assert re.search(r"warming up with a batch of (\d\d+) tokens", log)
