"""Asset check descriptions read in the Dagster UI as they read in the code."""

import pytest
from markdown_it import MarkdownIt

from emo_assets.checks import all_checks, monitoring_checks

# The UI renders descriptions as Markdown with inline HTML allowed: `<day>` would be taken for a tag.
RENDERER = MarkdownIt("commonmark", {"html": True})


def _html_tokens(text: str) -> list[str]:
    found = []
    for token in RENDERER.parse(text):
        if token.type == "html_block":
            found.append(token.content)
        for child in token.children or []:
            if child.type == "html_inline":
                found.append(child.content)
    return found


@pytest.mark.parametrize("check", [*all_checks, *monitoring_checks], ids=lambda c: next(iter(c.check_keys)).name)
def test_check_description_has_no_text_the_ui_would_take_for_html(check):
    (spec,) = check.check_specs
    assert spec.description
    assert _html_tokens(spec.description) == []


def test_the_renderer_would_catch_a_placeholder_in_angle_brackets():
    assert _html_tokens("Every file under data/raw/<day>/ is accounted for") == ["<day>"]


def test_accounting_check_names_the_days_folder():
    (spec,) = next(c for c in all_checks if "every_file_accounted_for" in str(c.check_keys)).check_specs
    assert "data/raw/YYYY-MM-DD/" in spec.description
