"""Secrets by reference: a carrier's password or token read from the file `<field>_file` names,
checked like a value written in place, and never quoted in an error."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import ValidationError

from smsgw.cli import main as smsgw
from smsgw_carrier_adapter.smpp.config import SmppCarrier
from smsgw_carrier_adapter.twilio.config import TwilioCarrier

TWILIO = dict(
    name="twilio-main",
    account_sid="AC" + "5" * 32,
    from_number="+14155550100",
    status_callback_base_url="https://hooks.example.com",
)


def test_a_password_and_a_token_come_from_their_files(tmp_path):
    (tmp_path / "smsc").write_text("s3cr3t\n")  # as `echo` or `kubectl create secret --from-file` leave it
    (tmp_path / "token").write_text("0123456789abcdef")
    smpp = SmppCarrier(name="smsc-main", system_id="smsgw", password_file=str(tmp_path / "smsc"))
    assert smpp.password == "s3cr3t"
    twilio = TwilioCarrier(**TWILIO, auth_token_file=str(tmp_path / "token"))
    assert twilio.auth_token.get_secret_value() == "0123456789abcdef"
    assert SmppCarrier(name="smsc-main", system_id="smsgw", password="inline").password == "inline"


@pytest.mark.parametrize(
    ("content", "inline", "expected"),
    [
        (None, None, "password_file: cannot read"),  # no such file
        ("", None, "is empty"),
        ("sup3rs3cr3t", None, "at most 8 characters"),  # the file's value is checked like an inline one
        ("s3cr3t", "other", "give password or password_file, not both"),
    ],
)
def test_a_bad_reference_is_refused_naming_the_setting_never_the_secret(tmp_path, content, inline, expected):
    path = tmp_path / "smsc"
    if content is not None:
        path.write_text(content)
    fields = {"password": inline} if inline else {}
    with pytest.raises(ValidationError) as refused:
        SmppCarrier(name="smsc-main", system_id="smsgw", password_file=str(path), **fields)
    messages = " ".join(e["msg"] for e in refused.value.errors())
    assert expected in messages
    assert "sup3rs3cr3t" not in messages and "s3cr3t" not in messages


def test_config_check_reads_the_reference_and_names_a_missing_file_at_its_line(tmp_path, capsys):
    (tmp_path / "smsc").write_text("s3cr3t\n")
    config = tmp_path / "smsgw.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            carriers:
              - name: smsc-main
                kind: smpp
                system_id: smsgw
                password_file: {tmp_path / "smsc"}
              - name: smsc-backup
                kind: smpp
                system_id: smsgw2
                password_file: {tmp_path / "missing"}
            """
        )
    )
    assert smsgw(["config", "check", str(config)]) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert f"password_file: cannot read {tmp_path / 'missing'}" in text and ":6:" in text, text
    assert "s3cr3t" not in text
