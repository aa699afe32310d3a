"""The documentation: the generated configuration page, the README's size and links."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from symbreak.config import all_keys, key_docs

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PAGE = ROOT / "docs" / "reference" / "configuration.md"


def _generator():
    spec = importlib.util.spec_from_file_location(
        "gen_config_reference", ROOT / "docs" / "gen_config_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_page_is_up_to_date():
    committed = CONFIG_PAGE.read_text(encoding="utf-8")
    assert committed == _generator().render(), (
        "docs/reference/configuration.md differs from the config definitions: "
        "run python docs/gen_config_reference.py"
    )


def test_every_key_has_a_description():
    undocumented = [e["key"] for e in key_docs() if not e["doc"].strip()]
    assert not undocumented, f"config keys without a description: {undocumented}"
    assert [e["key"] for e in key_docs()] == [k for k, _, _ in all_keys()]


def test_every_key_and_choice_is_on_the_configuration_page():
    page = CONFIG_PAGE.read_text(encoding="utf-8")
    for e in key_docs():
        row = next(
            (line for line in page.splitlines() if line.startswith(f"| `{e['key']}` |")), None
        )
        assert row is not None, f"{e['key']} has no row on the configuration page"
        assert e["doc"] in row.replace("\\|", "|")
        for choice in e["choices"]:
            assert f"`{choice}`" in row, f"{e['key']}: choice {choice} missing"


README = ROOT / "README.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the manual belongs in docs/"


def test_readme_relative_links_point_to_existing_files():
    targets = LINK.findall(README.read_text(encoding="utf-8"))
    relative = [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and t[0] != "#"]
    assert relative, "README.md links to no file: the check would pass vacuously"
    missing = [t for t in relative if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
