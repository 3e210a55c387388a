"""The shortest text that completes a JSON prefix into a whole value.

Used to end a json_object response inside its max_tokens budget: when the budget left is about what the
completion needs, those tokens are forced, so the answer is a complete object rather than JSON cut off
mid-string. Separators follow the grammar's fixed whitespace (", " and ": ").
"""

from __future__ import annotations

_LITERALS = ("true", "false", "null")


def json_completion(prefix: str) -> str:
    """Suffix s such that prefix + s is complete JSON (prefix is a valid JSON prefix, whitespace-free
    apart from the grammar's separators)."""
    # Each open container: [kind, state]; objects move key -> colon -> value -> after, arrays value -> after.
    stack: list[list[str]] = []
    in_string = is_escape = False
    unicode_left = 0
    token = ""  # a number or literal being written
    for char in prefix:
        if in_string:
            if unicode_left:
                unicode_left -= 1
            elif is_escape:
                is_escape = False
                unicode_left = 4 if char == "u" else 0
            elif char == "\\":
                is_escape = True
            elif char == '"':
                in_string = False
                if stack:
                    top = stack[-1]
                    top[1] = "colon" if top[0] == "{" and top[1] == "key" else "after"
            continue
        if char in "{[":
            if stack:
                stack[-1][1] = "after"  # the container opened here is the parent's value
            stack.append(["{", "key"] if char == "{" else ["[", "value"])
        elif char in "}]":
            stack.pop()
            token = ""
            if stack:
                stack[-1][1] = "after"
        elif char == '"':
            in_string = True
        elif char == ":":
            stack[-1][1] = "value"
        elif char == ",":
            token = ""
            stack[-1][1] = "key" if stack[-1][0] == "{" else "value"
        elif char == " ":
            continue
        else:
            token += char
            if stack:
                stack[-1][1] = "in_token"
    suffix = ""
    if in_string:
        if unicode_left:
            suffix += "0" * unicode_left
        elif is_escape:
            suffix += "n"
        suffix += '"'
        if stack and stack[-1][1] == "key":
            stack[-1][1] = "colon"
        elif stack:
            stack[-1][1] = "after"
    if token and stack and stack[-1][1] == "in_token":
        literal = next((lit for lit in _LITERALS if lit.startswith(token)), None)
        if literal is not None:
            suffix += literal[len(token):]
        elif token[-1] in "-+.eE":
            suffix += "0"
        stack[-1][1] = "after"
    for kind, state in reversed(stack):
        if state == "colon":
            suffix += ": null"
        elif state == "value" and kind == "{":
            suffix += ("" if prefix.endswith(" ") or suffix.endswith(" ") else " ") + "null"
        elif state == "value":  # array: empty, or after a comma
            suffix += "" if (prefix + suffix).rstrip().endswith("[") else ("" if (prefix + suffix).endswith(" ") else " ") + "null"
        elif state == "key" and not (prefix + suffix).rstrip().endswith("{"):
            suffix += ("" if (prefix + suffix).endswith(" ") else " ") + '"": null'
        suffix += "}" if kind == "{" else "]"
    return suffix
