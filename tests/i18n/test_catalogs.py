"""The catalogs are complete: every message in the code is in both locales' catalogs, translated
into Chinese (not fuzzy, same placeholders), and no catalog holds a message the code dropped."""

from __future__ import annotations

from webapp.i18n import catalogs


def test_every_message_is_in_both_catalogs_and_translated_into_chinese():
    problems = catalogs.problems()
    assert not problems, f"{len(problems)} catalog problem(s), first ones:\n" + "\n".join(problems[:40]) + (
        "\n\nRun `make i18n-update`, translate the empty zh_CN entries, then `make i18n-check`.")
