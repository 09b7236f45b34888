"""An account's webhooks never use another account's secret or URL (tenant isolation)."""

from __future__ import annotations

import json

import pytest

from smsgw import config_file
from smsgw_receipt.webhooks.accounts import (
    AccountWebhookSettings,
    StaticAccountSecrets,
    derived_secret,
    load_webhook_section,
)
from smsgw_receipt.webhooks.cli import webhooks_main
from smsgw_receipt.webhooks.settings import WebhookSettings

PLATFORM = "platform-secret-0123456789"


def test_an_account_without_an_entry_gets_a_secret_of_its_own_and_no_one_elses_url():
    secrets = StaticAccountSecrets(
        {"default": AccountWebhookSettings("default-secret", "https://default.example/h")}, platform_secret=PLATFORM
    )
    acme, globex = secrets.secret_for("acme"), secrets.secret_for("globex")
    assert acme and globex and acme != globex
    assert PLATFORM not in (acme, globex) and "default-secret" not in (acme, globex)
    assert acme == derived_secret(PLATFORM, "acme")  # stable: nothing stored, nothing to lose
    assert secrets.default_callback_url("acme") == ""  # never default's URL
    assert secrets.secret_for("default") == "default-secret"
    assert secrets.default_callback_url("default") == "https://default.example/h"


def test_single_secret_mode_signs_default_with_it_and_every_other_account_with_its_own():
    secrets = StaticAccountSecrets.single(PLATFORM, "https://default.example/h")
    assert secrets.secret_for("default") == PLATFORM
    assert secrets.secret_for("acme") == derived_secret(PLATFORM, "acme")
    assert secrets.default_callback_url("acme") == ""


def test_without_a_platform_secret_an_account_without_an_entry_gets_no_webhooks():
    secrets = StaticAccountSecrets({"default": AccountWebhookSettings("default-secret")})
    assert secrets.secret_for("acme") is None and secrets.default_callback_url("acme") == ""


def test_an_accounts_file_with_a_fallback_account_is_refused_saying_why(tmp_path):
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps({"fallback_account": "default", "accounts": {"default": {"secret": "s"}}}))
    with pytest.raises(ValueError, match="fallback_account is no longer read: an account's webhooks never use"):
        StaticAccountSecrets.from_json_file(path)
    path.write_text(json.dumps({"platform_secret": PLATFORM, "accounts": {"acme": {"secret": "acme-own"}}}))
    secrets = StaticAccountSecrets.from_json_file(path)
    assert secrets.secret_for("acme") == "acme-own"
    assert secrets.secret_for("globex") == derived_secret(PLATFORM, "globex")


def test_the_cli_prints_an_accounts_secret_for_its_owner(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SMSGW_WEBHOOK_SECRET", PLATFORM)
    assert webhooks_main(["secret", "acme"]) == 0
    assert capsys.readouterr().out.strip() == derived_secret(PLATFORM, "acme")
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps({"accounts": {"default": {"secret": "default-secret"}}}))
    monkeypatch.setenv("SMSGW_WEBHOOK_ACCOUNTS_FILE", str(path))
    assert webhooks_main(["secret", "acme"]) == 1
    assert "gets no webhooks" in capsys.readouterr().err


def test_an_account_url_the_dispatcher_would_refuse_stops_receipt_at_start(tmp_path):
    accounts = tmp_path / "accounts.json"

    def settings_with(url: str, **flags) -> WebhookSettings:
        accounts.write_text(json.dumps({"accounts": {"acme": {"secret": "s" * 24, "callback_url": url}}}))
        return WebhookSettings(accounts_file=str(accounts), **flags)

    for url, complaint in (
        ("https://169.254.169.254/latest/meta-data", "points at a non-public address"),
        ("http://hooks.acme.example/sms", "is not an absolute https URL"),
        ("https://user:pw@hooks.acme.example/sms", "credentials in the URL are not allowed"),
    ):
        with pytest.raises(SystemExit) as stopped:
            settings_with(url).account_secrets()
        assert str(stopped.value).startswith(
            f"SMSGW_WEBHOOK_ACCOUNTS_FILE ({accounts}): accounts 'acme': callback_url:"
        )
        assert complaint in str(stopped.value)
    assert settings_with("https://hooks.acme.example/sms").account_secrets().default_callback_url("acme")
    # Development allows what make run's local receivers need.
    local = settings_with("http://127.0.0.1:8080/hooks", allow_http=True, allow_private=True).account_secrets()
    assert local.default_callback_url("acme") == "http://127.0.0.1:8080/hooks"


def _config(tmp_path, text: str):
    path = tmp_path / "smsgw.yaml"
    path.write_text(text)
    return path


def test_the_configuration_files_webhooks_section_reads_secrets_by_reference(tmp_path, monkeypatch, capsys):
    (tmp_path / "platform").write_text(PLATFORM + "\n")  # as a mounted Secret ends
    (tmp_path / "acme").write_text("acme-secret-0123456789\n")
    path = _config(
        tmp_path,
        f"""webhooks:
  platform_secret_file: {tmp_path / "platform"}
  accounts:
    acme: {{secret_file: {tmp_path / "acme"}, callback_url: "https://acme.example/sms/status"}}
""",
    )
    secrets = WebhookSettings().account_secrets(config_file.read(path).load("webhooks", load_webhook_section))
    assert secrets.secret_for("acme") == "acme-secret-0123456789"
    assert secrets.default_callback_url("acme") == "https://acme.example/sms/status"
    assert secrets.secret_for("globex") == derived_secret(PLATFORM, "globex")
    assert secrets.default_callback_url("globex") == ""
    # The CLI reads the same section from SMSGW_CONFIG_FILE.
    monkeypatch.setenv("SMSGW_CONFIG_FILE", str(path))
    assert webhooks_main(["secret", "acme"]) == 0
    assert capsys.readouterr().out.strip() == "acme-secret-0123456789"


def test_a_bad_webhooks_section_is_refused_with_each_problems_line(tmp_path):
    path = _config(
        tmp_path,
        """webhooks:
  platform_secret: short
  accounts:
    acme: {secret: acme-secret-0123456789, callbak_url: "https://acme.example/h"}
    "not an id": {secret: other-secret-0123456789}
    globex: {secret: x, secret_file: /nonexistent}
""",
    )
    problems = [p.render(str(path)) for p in config_file.read(path).problems_of("webhooks", load_webhook_section)]
    assert any(":4:" in p and "callbak_url" in p and "Extra inputs are not permitted" in p for p in problems), problems
    assert any(":5:" in p and "not an id" in p for p in problems), problems
    assert any(":6:" in p and "give secret or secret_file, not both" in p for p in problems), problems
    short = _config(tmp_path, "webhooks:\n  platform_secret: short\n")
    (problem,) = config_file.read(short).problems_of("webhooks", load_webhook_section)
    assert "platform_secret: at least 16 characters" in problem.render(str(short))


def test_the_webhooks_section_and_the_webhook_variables_are_never_both_used(tmp_path):
    configured = load_webhook_section({"accounts": {"acme": {"secret": "acme-secret-0123456789"}}})
    for variable in (
        {"accounts_file": str(tmp_path / "a.json")},
        {"secret": PLATFORM},
        {"default_url": "https://x.example"},
    ):
        with pytest.raises(SystemExit, match="has a `webhooks` section and SMSGW_WEBHOOK_") as stopped:
            WebhookSettings(**variable).account_secrets(configured)
        assert f"SMSGW_WEBHOOK_{next(iter(variable)).upper()}" in str(stopped.value)
    # A URL the dispatcher would refuse stops receipt at start, naming the account.
    private = load_webhook_section(
        {"accounts": {"acme": {"secret": "acme-secret-0123456789", "callback_url": "https://10.0.0.5/h"}}}
    )
    with pytest.raises(SystemExit, match="webhooks.accounts 'acme': callback_url:.*non-public address"):
        WebhookSettings().account_secrets(private)
