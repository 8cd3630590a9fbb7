from llama_box_core.engine.text import TextAssembler


def feed_all(assembler: TextAssembler, pieces: list[bytes]) -> tuple[list[str], str | None]:
    sent, hit = [], None
    for piece in pieces:
        text, hit = assembler.feed(piece)
        sent.append(text)
        if hit:
            break
    return sent, hit


def test_split_utf8_characters_are_sent_whole() -> None:
    euro = "€".encode()
    sent, _ = feed_all(TextAssembler([]), [b"a", euro[:1], euro[1:2], euro[2:], b"b"])
    assert sent == ["a", "", "", "€", "b"]


def test_stop_string_across_pieces_is_held_back_then_cut() -> None:
    assembler = TextAssembler(["STOP"])
    sent, hit = feed_all(assembler, [b"hello S", b"TO", b"P more"])
    assert hit == "STOP"
    assert "".join(sent) == "hello "
    assert assembler.text == "hello "


def test_held_back_text_is_released_when_it_cannot_be_a_stop() -> None:
    assembler = TextAssembler(["STOP"])
    sent, hit = feed_all(assembler, [b"ST", b"ART"])
    assert hit is None
    assert sent == ["", "START"]


def test_flush_releases_a_partial_stop_at_the_end() -> None:
    assembler = TextAssembler(["\n\n"])
    text, _ = assembler.feed(b"end\n")
    assert text == "end"
    assert assembler.flush() == "\n"


def test_earliest_of_several_stop_strings_wins() -> None:
    assembler = TextAssembler(["world", "lo"])
    text, hit = assembler.feed(b"hello world")
    assert (text, hit) == ("hel", "lo")
