"""An account's webhooks never use another account's secret or URL (tenant isolation)."""

from __future__ import annotations

import json

import pytest

from smsgw_receipt.webhooks.accounts import AccountWebhookSettings, StaticAccountSecrets, derived_secret
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
