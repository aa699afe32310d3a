"""The built-in puzzle suite and puzzle files.

Every built-in item's answer is recomputed here from the item's own text, with solvers
written independently of the generator (they parse the prompt; they never call it).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re

import pytest

from symbreak.data import encode
from symbreak.errors import DataError, SymbreakError
from symbreak.eval.puzzles import (
    CATEGORIES,
    COMMON_ID_LIMIT,
    COMPARATIVES,
    FACTS,
    SUITE_VERSION,
    Item,
    builtin_suite,
    check_answer_pools,
    generate_category,
    is_common_single_token,
    read_puzzles,
    write_puzzles,
)


@pytest.fixture(scope="module")
def suite() -> list[Item]:
    return builtin_suite(seed=0)


def by_category(items: list[Item]) -> dict[str, list[Item]]:
    out: dict[str, list[Item]] = {}
    for item in items:
        out.setdefault(item.category, []).append(item)
    return out


# --------------------------------------------------------------------------------------------
# Counts and determinism
# --------------------------------------------------------------------------------------------


def test_default_suite_has_200_distinct_items_per_category(suite):
    groups = by_category(suite)
    assert list(groups) == list(CATEGORIES)
    assert len(CATEGORIES) == 8
    for name, items in groups.items():
        assert len(items) == 200, name
        assert len({(i.prompt, i.expected, i.compare) for i in items}) == 200, name


def test_suite_is_deterministic_and_seeded(suite):
    assert builtin_suite(seed=0) == suite
    other = builtin_suite(seed=1)
    assert other != suite
    for name in CATEGORIES:  # every category changes with the seed
        assert by_category(other)[name] != by_category(suite)[name]


def test_per_category_gives_a_prefix(suite):
    small = by_category(builtin_suite(seed=0, per_category=7))
    for name, items in by_category(suite).items():
        assert small[name] == items[:7]


def test_suite_is_pinned():
    """The items for a seed never change silently: if the generator changes on purpose, bump
    SUITE_VERSION and update this digest (results with different versions are not comparable).
    """
    text = "\n".join(json.dumps(i.to_json(), sort_keys=True) for i in builtin_suite(seed=0))
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert (SUITE_VERSION, digest[:16]) == (1, "30b8fc963b482642")


def test_too_many_items_is_a_clear_error():
    with pytest.raises(SymbreakError, match=r"pattern_alpha.*--per-category"):
        generate_category("pattern_alpha", 1000)
    with pytest.raises(SymbreakError, match="per-category"):
        builtin_suite(per_category=0)


# --------------------------------------------------------------------------------------------
# Single-token answers
# --------------------------------------------------------------------------------------------


def test_answer_first_tokens_are_single_common_tokens(suite):
    check_answer_pools()
    assert not is_common_single_token("giraffe")  # two tokens: the check does check
    for item in suite:
        if item.kind != "completion":
            continue
        assert item.expected.startswith(" ") and not item.prompt.endswith(" ")
        ids = encode(item.expected)
        first_word = item.expected.split()[0]
        assert encode(" " + first_word) == [ids[0]], item
        assert ids[0] < COMMON_ID_LIMIT, item
        # scoring appends the answer's own tokens; that is how the joined text tokenizes
        assert encode(item.prompt + item.expected) == encode(item.prompt) + ids, item


# --------------------------------------------------------------------------------------------
# Independent solvers
# --------------------------------------------------------------------------------------------


def solve_numeric(prompt: str) -> int:
    assert prompt.endswith(",")
    x = [int(v) for v in prompt[:-1].split(", ")]
    assert len(x) >= 4
    rules = {}
    diffs = {b - a for a, b in itertools.pairwise(x)}
    if len(diffs) == 1 and 0 not in diffs:
        rules["arithmetic"] = x[-1] + diffs.pop()
    if all(v > 0 for v in x):
        if all(b == 2 * a for a, b in itertools.pairwise(x)):
            rules["x2"] = 2 * x[-1]
        if all(b == 3 * a for a, b in itertools.pairwise(x)):
            rules["x3"] = 3 * x[-1]
        if all(2 * b == a for a, b in itertools.pairwise(x)):
            rules["/2"] = x[-1] // 2
        if all(3 * b == a for a, b in itertools.pairwise(x)):
            rules["/3"] = x[-1] // 3
    if len(x) >= 5 and all(x[i] == x[i - 1] + x[i - 2] for i in range(2, len(x))):
        rules["fibonacci"] = x[-1] + x[-2]
    assert len(rules) == 1, (prompt, rules)  # exactly one rule explains the sequence
    return rules.popitem()[1]


def solve_alpha(prompt: str) -> str:
    letters = prompt.split(" ")
    assert len(letters) >= 4 and all(len(c) == 1 and c.isalpha() for c in letters)
    upper = letters[0].isupper()
    assert all(c.isupper() == upper for c in letters)
    pos = [ord(c.lower()) - ord("a") for c in letters]
    steps = {(b - a) % 26 for a, b in itertools.pairwise(pos)}
    assert len(steps) == 1
    nxt = chr(ord("a") + (pos[-1] + steps.pop()) % 26)
    return nxt.upper() if upper else nxt


def solve_retrieval(prompt: str) -> tuple[str, int, int]:
    """(answer, index of the queried fact, number of facts)."""
    *facts, query = prompt.split(". ")
    pairs = [re.fullmatch(r"The (\w+) is (\w+)\.?", f).groups() for f in facts]
    (entity,) = re.fullmatch(r"The (\w+) is", query).groups()
    entities = [e for e, _ in pairs]
    assert len(set(entities)) == len(entities)
    assert len({a for _, a in pairs}) == len(pairs)  # the answer is unambiguous
    k = entities.index(entity)
    return pairs[k][1], k, len(pairs)


def solve_inference(prompt: str) -> str:
    if prompt.startswith("If"):
        rules = re.findall(r"If the (\w+) is (\w+), the (\w+) is (\w+)\.", prompt)
        (subject, value, asked) = re.search(
            r"The (\w+) is (\w+)\. So the (\w+) is$", prompt
        ).groups()
        hits = [r for r in rules if r[0] == subject and r[1] == value and r[2] == asked]
        assert len(rules) == 2 and len(hits) == 1
        return hits[0][3]
    if prompt.startswith("All"):
        rules = dict(re.findall(r"All (\w+)s are (\w+)s\.", prompt))
        name, member, name2 = re.search(r"(\w+) is a (\w+)\. So (\w+) is a$", prompt).groups()
        assert name == name2 and len(rules) == 2
        return rules[member]
    comparative_of = {c: (top, bottom) for c, top, bottom in COMPARATIVES}
    pairs = re.findall(r"(\w+) is (\w+) than (\w+)\.", prompt)
    assert len(pairs) == 2 and pairs[0][1] == pairs[1][1]
    top_word, bottom_word = comparative_of[pairs[0][1]]
    (asked,) = re.search(r"So the (\w+) of the three is$", prompt).groups()
    bigger = {a for a, _, _ in pairs}
    smaller = {b for _, _, b in pairs}
    (top,) = bigger - smaller
    (bottom,) = smaller - bigger
    return {top_word: top, bottom_word: bottom}[asked]


def solve_copy(prompt: str) -> str:
    lines = prompt.split("\n")
    assert lines[-1] == "Output:"
    for copy, output in zip(lines[:-2:2], lines[1:-2:2], strict=True):  # the demonstrations
        assert output == "Output: " + copy.removeprefix("Copy: ")
    return lines[-2].removeprefix("Copy: ")


def test_completion_answers_are_right(suite):
    groups = by_category(suite)
    for item in groups["pattern_numeric"]:
        assert item.expected == f" {solve_numeric(item.prompt)}", item
    for item in groups["pattern_alpha"]:
        assert item.expected == " " + solve_alpha(item.prompt), item
    for name, far in (("retrieval_near", False), ("retrieval_far", True)):
        for item in groups[name]:
            answer, k, n = solve_retrieval(item.prompt)
            assert item.expected == " " + answer, item
            assert k == (0 if far else n - 1) and n >= 6, item
    for item in groups["simple_inference"]:
        assert item.expected == " " + solve_inference(item.prompt), item
    for item in groups["copy"]:
        assert item.expected == " " + solve_copy(item.prompt), item


def test_pattern_numeric_covers_every_rule(suite):
    kinds = set()
    for item in by_category(suite)["pattern_numeric"]:
        x = [int(v) for v in item.prompt[:-1].split(", ")]
        if len({b - a for a, b in itertools.pairwise(x)}) == 1:
            kinds.add("arithmetic")
        elif x[2] == x[0] + x[1]:
            kinds.add("fibonacci")
        else:
            kinds.add("geometric")
    assert kinds == {"arithmetic", "fibonacci", "geometric"}


def test_negation_prompt_is_the_true_statement(suite):
    truth = {(s, v): (t, f) for s, v, t, f in FACTS}
    polarity = set()
    for item in by_category(suite)["negation"]:
        negated = [t for t in (item.prompt, item.compare) if " not " in t]
        assert len(negated) == 1
        plain = item.compare if negated[0] == item.prompt else item.prompt
        assert negated[0].replace(" not ", " ") == plain
        adjective = plain.rstrip(".").split(" ")[-1]
        subject = next((s, v) for s, v in truth if f"{s} {v} {adjective}." in plain.lower())
        true_adj, false_adj = truth[subject]
        assert adjective in (true_adj, false_adj)
        # the plain sentence is true iff its adjective is the true one
        expected_prompt = plain if adjective == true_adj else negated[0]
        assert item.prompt == expected_prompt, item
        polarity.add(item.prompt == plain)
    assert polarity == {True, False}  # "not" appears in true and in false texts


def well_formed(text: str) -> bool:
    return (
        text[0].isupper()
        and text.endswith(".")
        and text.count(".") == 1
        and " ," not in text
        and " ." not in text
        and all(
            text[i + 1] == " " and text[i - 1].isalpha() for i, c in enumerate(text) if c == ","
        )
    )


def test_syntax_pairs_differ_only_in_punctuation(suite):
    for item in by_category(suite)["syntax"]:
        assert re.findall(r"\w+", item.prompt) == re.findall(r"\w+", item.compare), item
        assert well_formed(item.prompt), item
        assert not well_formed(item.compare), item


# --------------------------------------------------------------------------------------------
# Puzzle files
# --------------------------------------------------------------------------------------------


def test_puzzle_file_round_trip(tmp_path, suite):
    path = tmp_path / "suite.jsonl"
    write_puzzles(suite[:50] + suite[-50:], path)
    back = read_puzzles(path)
    assert [i.to_json() for i in back] == [i.to_json() for i in suite[:50] + suite[-50:]]
    assert back[0].source == f"{path}:1"


GOOD = '{"category": "c", "prompt": "1, 2, 3,", "expected": " 4"}'


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"category": "c", "prompt": "x", "expected": " y"', "not valid JSON"),
        ('["c", "x"]', "expected a JSON object"),
        ('{"category": "c", "expected": " y"}', "missing key 'prompt'"),
        ('{"prompt": "x", "expected": " y"}', "missing key 'category'"),
        ('{"category": "c", "prompt": "x", "expected": " y", "compare": "z"}', "both"),
        ('{"category": "c", "prompt": "x"}', "neither"),
        ('{"category": "c", "prompt": "", "expected": " y"}', "'prompt' is empty"),
        ('{"category": "c", "prompt": "  ", "compare": "y"}', "'prompt' is empty"),
        ('{"category": "c", "prompt": "x", "expected": ""}', "'expected' is empty"),
        ('{"category": "c", "prompt": "x", "expected": 4}', "must be a string"),
        ('{"category": "c", "prompt": "x", "expect": " y"}', "unknown key"),
        ('{"category": "c", "prompt": "x", "compare": "y"}', "mixes completion"),
    ],
)
def test_malformed_puzzle_lines_name_the_line(tmp_path, bad, message):
    path = tmp_path / "p.jsonl"
    path.write_text(f"{GOOD}\n\n{bad}\n{GOOD}\n")  # the bad line is line 3 (line 2 is blank)
    with pytest.raises(DataError, match=re.escape(f"{path} line 3") + ".*" + re.escape(message)):
        read_puzzles(path)


def test_empty_or_missing_puzzle_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="no items"):
        read_puzzles(empty)
    with pytest.raises(DataError, match="does not exist"):
        read_puzzles(tmp_path / "missing.jsonl")
