import pytest

from hearth.engine.output.detokenizer import IncrementalDetokenizer


@pytest.fixture(scope="module")
def tokenizer(default_entry):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_entry.path)


def feed(tokenizer, text, stop=(), release_each_step=True):
    detok = IncrementalDetokenizer(tokenizer.backend_tokenizer, stop)
    released = []
    stopped_at = None
    ids = tokenizer.encode(text, add_special_tokens=False)
    for index, token_id in enumerate(ids):
        if detok.append(token_id):
            stopped_at = index
            break
        if release_each_step:
            released.append(detok.release())
    released.append(detok.release(is_final=True))
    return "".join(released), released, stopped_at, ids


def test_text_round_trips_including_multibyte_characters(tokenizer):
    text = "Héllo wörld 😀 — naïve café 東京"
    joined, pieces, _, _ = feed(tokenizer, text)
    assert joined == text
    assert all("\ufffd" not in piece for piece in pieces)


def test_stop_string_across_token_boundaries_is_cut_and_not_returned(tokenizer):
    text = "The answer is forty-two. END OF STORY and more text"
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces = [tokenizer.decode([i]) for i in ids]
    assert not any("END OF" in p for p in pieces)  # the stop string spans several tokens
    joined, _, stopped_at, _ = feed(tokenizer, text, stop=("END OF",))
    assert joined == "The answer is forty-two. "
    assert stopped_at is not None and stopped_at < len(ids) - 1


def test_earliest_of_several_stop_strings_wins(tokenizer):
    joined, _, _, _ = feed(tokenizer, "alpha beta gamma delta", stop=("delta", "beta"))
    assert joined == "alpha "


def test_streaming_holds_back_text_that_may_become_a_stop_string(tokenizer):
    detok = IncrementalDetokenizer(tokenizer.backend_tokenizer, ("STOPWORD",))
    for token_id in tokenizer.encode("hello STOP", add_special_tokens=False):
        detok.append(token_id)
    assert detok.release() == "hello "
    for token_id in tokenizer.encode("PING", add_special_tokens=False):
        detok.append(token_id)
    assert detok.release() == "STOPPING"


def test_stop_not_checked_before_min_tokens(tokenizer):
    detok = IncrementalDetokenizer(tokenizer.backend_tokenizer, ("x",))
    ids = tokenizer.encode("x y x", add_special_tokens=False)
    assert detok.append(ids[0], check_stop=False) is False
    assert any(detok.append(i) for i in ids[1:])
    assert detok.release(is_final=True) == "x y "
