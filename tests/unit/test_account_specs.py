"""The configuration file's `accounts` section: checked offline by the admin API's own rules, and
planned into the admin calls that make the platform match it (nothing for an unchanged file)."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from smsgw import config_file
from smsgw.domain.account_specs import AccountState, load_account_section, plan
from smsgw.domain.limits import Limits


def specs(text: str):
    return load_account_section(yaml.safe_load(textwrap.dedent(text)))


FILE = """\
- id: acme
  display_name: ACME Ltd
  limits: {messages_per_second: 50, burst: 100, messages_per_day: 100000}
  senders: [ACME, "+1 415 555 0123"]
  sender_pool: true
  destination_countries: [us, CA]
  smart_encoding: true
- id: globex
  limits: {messages_per_second: 5}
"""


def test_a_new_account_is_created_then_given_every_aspect_the_file_manages():
    todo = plan(specs(FILE), {})
    assert [(s.account_id, s.change) for s in todo.steps] == [
        ("acme", "create"),
        ("acme", "limits"),
        ("acme", "senders"),
        ("acme", "destinations"),
        ("acme", "encoding"),
        ("globex", "create"),
        ("globex", "limits"),
    ]
    by_change = {(s.account_id, s.change): s for s in todo.steps}
    # Normalised as the admin API does, so the platform's values compare equal next time.
    assert by_change["acme", "senders"].value == (("ACME", "+14155550123"), True)
    assert by_change["acme", "destinations"].value == ("US", "CA")
    assert by_change["acme", "limits"].value == Limits(50, 100, 100000)
    assert by_change["acme", "limits"].description == "limits 50/s, burst 100, 100000 a day"
    assert by_change["acme", "create"].value == "ACME Ltd"
    assert todo.unchanged == () and todo.unlisted == ()


def test_an_account_that_matches_plans_nothing_and_a_change_plans_only_that():
    acme = AccountState("acme", "ACME Ltd", Limits(50, 100, 100000), ("ACME", "+14155550123"), True, ("US", "CA"), True)
    globex = AccountState("globex", limits=Limits(5), senders=("GLOBEX",))  # senders not managed by the file
    todo = plan(specs(FILE), {"acme": acme, "globex": globex, "initech": AccountState("initech")})
    assert todo.steps == () and todo.unchanged == ("acme", "globex")
    assert todo.unlisted == ("initech",)  # never deleted

    changed = plan(
        specs(FILE.replace("smart_encoding: true", "smart_encoding: false")), {"acme": acme, "globex": globex}
    )
    assert [(s.account_id, s.change, s.value) for s in changed.steps] == [("acme", "encoding", False)]
    renamed = plan(specs(FILE.replace("ACME Ltd", "ACME Inc")), {"acme": acme, "globex": globex})
    assert renamed.steps == () and "set when an account is created" in renamed.notes[0]
    # The pool flag alone keeps the account's senders.
    pooled = plan(specs("- id: globex\n  sender_pool: true\n"), {"globex": globex})
    assert [(s.change, s.value) for s in pooled.steps] == [("senders", (("GLOBEX",), True))]


def test_a_bad_accounts_section_is_refused_with_each_problems_line(tmp_path):
    path = tmp_path / "smsgw.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            accounts:
              - id: acme
                limits: {messages_per_second: -1}
                destination_countries: [US, XX]
                senders: ["not a sender!"]
              - id: "no spaces"
              - id: acme
                smart_encodign: true
            """
        )
    )
    problems = [p.render(str(path)) for p in config_file.read(path).problems_of("accounts", load_account_section)]
    text = "\n".join(problems)
    assert ":3:" in text and "accounts[0].limits.messages_per_second" in text and "greater than or equal to 0" in text
    assert ":4:" in text and "countries[1]: 'XX' is not an ISO 3166 alpha-2 country code" in text
    assert ":5:" in text and "senders[0]" in text
    assert ":6:" in text and "accounts[1].id" in text
    assert "accounts[2].smart_encodign: Extra inputs are not permitted" in text
    twice = tmp_path / "twice.yaml"
    twice.write_text("accounts:\n  - id: acme\n  - id: acme\n")
    (problem,) = config_file.read(twice).problems_of("accounts", load_account_section)
    assert "account 'acme' is listed twice" in problem.render(str(twice))


@pytest.mark.parametrize("empty", ["accounts: []\n", "accounts:\n"])
def test_an_empty_accounts_section_manages_nothing(tmp_path, empty):
    path = tmp_path / "smsgw.yaml"
    path.write_text(empty)
    listed = config_file.read(path).load("accounts", load_account_section)
    assert listed == [] and plan(listed, {"acme": AccountState("acme")}).unlisted == ("acme",)
