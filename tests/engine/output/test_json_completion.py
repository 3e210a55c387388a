import json

import pytest

from hearth.engine.output.json_completion import json_completion

DOCUMENTS = [
    '{"name": "Mia", "age": 25, "tags": ["a", "b\\u00e9"], "x": {"y": [1, 2.5e-3, true, null]}, "z": false}',
    '{"a": [[], {}, [{"b": [null, -1.5E+3]}]], "c": "q\\"x\\\\"}',
    "{}",
    '{"k": []}',
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_prefix_completes_to_an_object(document):
    for end in range(1, len(document) + 1):
        prefix = document[:end]
        value = json.loads(prefix + json_completion(prefix))
        assert isinstance(value, dict)


def test_completions_are_short_and_close_what_is_open():
    assert json_completion('{"a": [1, {"b": "x') == '"}]}'
    assert json_completion('{"a": tr') == "ue}"
    assert json_completion('{"a"') == ": null}"
    assert json_completion('{"a": 1}') == ""
