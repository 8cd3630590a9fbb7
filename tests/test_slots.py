"""Slot save, erase and restore on the real model, and the file-name guard."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from llama_box_core.settings import Settings
from llama_box_server.app import create_app
from llama_box_server.plugins import create_plugin_manager, load_plugins
from tests.conftest import Server, start_server
from tests.fakes import FakeModelPlugin

PROMPT = "Monday, Tuesday, Wednesday,"


@pytest.fixture(scope="module")
def saving(gemma_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("slots")
    (root / "saved").mkdir()
    running = start_server(
        ["-m", gemma_path, "-c", "512", "-np", "1", "--slot-save-path", str(root / "saved")],
        root / "llama-box.log",
    )
    running.save_dir = root / "saved"  # type: ignore[attr-defined]
    yield running
    running.stop()


@pytest.mark.slow
def test_save_erase_restore_reproduces_the_continuation(saving: Server) -> None:
    with saving.client(timeout=60) as client:

        def complete() -> dict:
            return client.post(
                "/completion", json={"prompt": PROMPT, "n_predict": 6, "temperature": 0}
            ).json()

        first = complete()
        saved = client.post("/slots/0?action=save", json={"filename": "week.bin"}).json()
        assert saved["n_saved"] == first["tokens_evaluated"] + first["tokens_predicted"] - 1
        assert saved["n_written"] > 0 and (saving.save_dir / "week.bin").is_file()

        erased = client.post("/slots/0?action=erase").json()
        assert erased == {"id_slot": 0, "n_erased": saved["n_saved"]}
        assert complete()["tokens_cached"] == 0
        client.post("/slots/0?action=erase")

        restored = client.post("/slots/0?action=restore", json={"filename": "week.bin"}).json()
        assert restored["n_restored"] == saved["n_saved"]
        again = complete()
        assert again["tokens_cached"] == first["tokens_evaluated"] - 1
        assert again["content"] == first["content"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["../escape.bin", "a/b.bin", "..", "/tmp/x.bin", "", " x", "..\\x.bin"]
)
def test_file_names_that_leave_the_folder_are_refused(saving: Server, name: str) -> None:
    outside = set(saving.save_dir.parent.iterdir())
    with saving.client() as client:
        for action in ("save", "restore"):
            response = client.post(f"/slots/0?action={action}", json={"filename": name})
            assert response.status_code == 400, response.text
            assert response.json()["error"]["type"] == "invalid_request_error"
    assert set(saving.save_dir.parent.iterdir()) == outside


@pytest.mark.slow
def test_bad_slot_actions(saving: Server) -> None:
    with saving.client() as client:
        assert client.post("/slots/0?action=fly").status_code == 400
        assert client.post("/slots/7?action=erase").status_code == 400
        missing = client.post("/slots/0?action=restore", json={"filename": "none.bin"})
        assert missing.status_code == 400


def fake_app(tmp_path: Path, **settings: object) -> TestClient:
    pm = load_plugins(create_plugin_manager(), allow=[])
    pm.register(FakeModelPlugin())
    return TestClient(create_app(Settings(model="fake.gguf", **settings), pm))


def test_no_slots_gives_501(tmp_path: Path) -> None:
    with fake_app(tmp_path, slots=False) as client:
        client.app.state.engine.wait_until_settled()
        for response in (client.get("/slots"), client.post("/slots/0?action=erase")):
            assert response.status_code == 501
            assert response.json()["error"]["type"] == "not_supported_error"


def test_saving_without_a_save_path_is_501(tmp_path: Path) -> None:
    with fake_app(tmp_path) as client:
        client.app.state.engine.wait_until_settled()
        response = client.post("/slots/0?action=save", json={"filename": "x.bin"})
        assert response.status_code == 501
        assert client.get("/slots?fail_on_no_slot=1").status_code == 200


def test_infill_uses_the_repo_level_pattern(tmp_path: Path) -> None:
    with fake_app(tmp_path) as client:
        client.app.state.engine.wait_until_settled()
        body = client.post(
            "/infill",
            json={
                "input_prefix": "ab",
                "input_suffix": "c",
                "prompt": "d",
                "n_predict": 1,
                "input_extra": [{"filename": "f", "text": "x"}],
            },
        ).json()

    # The fake tokenizer maps each character to ord(c) % 100 and shows tokens as <id>.
    def chars(text: str) -> str:
        return "".join(f"<{ord(c) % 100}>" for c in text)

    expected = (
        "<93>"
        + chars("myproject\n")
        + "<94>"
        + chars("f\n")
        + chars("x")
        + "<94>"
        + chars("filename\n")
        + "<90>"
        + chars("ab")
        + "<91>"
        + chars("c")
        + "<92>"
        + chars("d")
    )
    assert body["prompt"] == expected


@pytest.mark.slow
def test_infill_without_fim_tokens_is_400(saving: Server) -> None:
    with saving.client() as client:
        response = client.post("/infill", json={"input_prefix": "def f(", "input_suffix": ")"})
    assert response.status_code == 400
    assert "fill-in-the-middle" in response.json()["error"]["message"]
