from __future__ import annotations

from bridge.settings import SETTINGS, Settings

COMPLETE = {
    "BRIDGE_AZUREML_SUBSCRIPTION_ID": "sub",
    "BRIDGE_AZUREML_RESOURCE_GROUP": "rg",
    "BRIDGE_AZUREML_WORKSPACE": "ws",
    "BRIDGE_LEDGER_ENDPOINT": "https://acct.table.core.windows.net",
    "BRIDGE_AIRFLOW_URL": "https://airflow.example.com/",
    "BRIDGE_AIRFLOW_USERNAME": "bridge",
    "BRIDGE_AIRFLOW_PASSWORD": "p" * 20,
    "BRIDGE_SIGNING_KEY": "k" * 64,
}


def test_complete_settings_have_no_problems() -> None:
    settings = Settings.from_env(COMPLETE)
    assert settings.problems() == []
    assert settings.airflow_url == "https://airflow.example.com"


def test_unresolved_key_vault_reference_is_named_not_shown() -> None:
    reference = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/signing-key/)"
    problems = Settings.from_env({**COMPLETE, "BRIDGE_SIGNING_KEY": reference}).problems()
    assert problems == [
        "BRIDGE_SIGNING_KEY is an unresolved Key Vault reference (check the identity's access)"
    ]


def test_problems_name_settings_and_never_values() -> None:
    env = {**COMPLETE, "BRIDGE_AIRFLOW_URL": "ftp://secret-host", "BRIDGE_SIGNING_KEY": "tiny-key"}
    del env["BRIDGE_LEDGER_ENDPOINT"]
    problems = Settings.from_env(env).problems()
    assert problems == [
        "neither BRIDGE_LEDGER_ENDPOINT nor BRIDGE_LEDGER_CONNECTION_STRING is set",
        "BRIDGE_AIRFLOW_URL is not an http(s) URL",
        "BRIDGE_SIGNING_KEY is shorter than 32 characters",
    ]
    assert "secret-host" not in " ".join(problems) and "tiny-key" not in " ".join(problems)


def test_environment_round_trips_and_covers_only_known_settings() -> None:
    settings = Settings.from_env(COMPLETE)
    assert Settings.from_env(settings.environment()) == settings
    assert set(settings.environment()) <= set(SETTINGS)


def test_reconcile_defaults_to_every_five_minutes_after_ten() -> None:
    settings = Settings.from_env(COMPLETE)
    assert (settings.reconcile_schedule, settings.reconcile_after_seconds) == ("0 */5 * * * *", 600)


def test_bad_reconcile_settings_are_named() -> None:
    env = {
        **COMPLETE,
        "BRIDGE_RECONCILE_SCHEDULE": "*/5 * * * *",
        "BRIDGE_RECONCILE_AFTER_SECONDS": "ten minutes",
    }
    problems = Settings.from_env(env).problems()
    assert problems[0].startswith("BRIDGE_RECONCILE_SCHEDULE: schedule '*/5 * * * *' has 5 fields")
    assert problems[1] == "BRIDGE_RECONCILE_AFTER_SECONDS is not a positive number of seconds"
    assert len(problems) == 2


def test_a_static_airflow_token_replaces_the_user_and_password() -> None:
    env = {**COMPLETE, "BRIDGE_AIRFLOW_TOKEN": "t" * 40}
    del env["BRIDGE_AIRFLOW_USERNAME"], env["BRIDGE_AIRFLOW_PASSWORD"]
    assert Settings.from_env(env).problems() == []
    del env["BRIDGE_AIRFLOW_TOKEN"]
    assert Settings.from_env(env).problems() == [
        "BRIDGE_AIRFLOW_USERNAME is not set",
        "BRIDGE_AIRFLOW_PASSWORD is not set",
    ]


def test_the_webhook_audience_and_issuer_come_together() -> None:
    both = {**COMPLETE, "BRIDGE_WEBHOOK_AUDIENCE": "api://bridge",
            "BRIDGE_WEBHOOK_ISSUER": "https://sts.windows.net/tenant/"}  # fmt: skip
    assert Settings.from_env(both).problems() == []
    del both["BRIDGE_WEBHOOK_ISSUER"]
    assert Settings.from_env(both).problems() == [
        "BRIDGE_WEBHOOK_AUDIENCE and BRIDGE_WEBHOOK_ISSUER are set together or not at all"
    ]


ENTRA_MODE = {
    **{k: v for k, v in COMPLETE.items()
       if k not in ("BRIDGE_AIRFLOW_USERNAME", "BRIDGE_AIRFLOW_PASSWORD")},
    "BRIDGE_AIRFLOW_AUTH": "Entra",
    "BRIDGE_AIRFLOW_AUDIENCE": "api://airflow-azureml-bridge",
}  # fmt: skip


def test_entra_mode_needs_an_audience_and_no_airflow_secret() -> None:
    settings = Settings.from_env(ENTRA_MODE)
    assert settings.problems() == []
    assert (settings.airflow_auth, settings.airflow_audience) == (
        "entra", "api://airflow-azureml-bridge",
    )  # fmt: skip
    assert Settings.from_env(settings.environment()) == settings

    missing = {k: v for k, v in ENTRA_MODE.items() if k != "BRIDGE_AIRFLOW_AUDIENCE"}
    assert Settings.from_env(missing).problems() == ["BRIDGE_AIRFLOW_AUDIENCE is not set"]


def test_entra_mode_names_an_airflow_secret_left_behind_without_showing_it() -> None:
    password = "left-behind"  # pragma: allowlist secret
    env = {**ENTRA_MODE, "BRIDGE_AIRFLOW_PASSWORD": password, "BRIDGE_AIRFLOW_TOKEN": "t0k"}
    problems = Settings.from_env(env).problems()
    assert problems == [
        "BRIDGE_AIRFLOW_PASSWORD is set, and BRIDGE_AIRFLOW_AUTH=entra never uses it: remove it",
        "BRIDGE_AIRFLOW_TOKEN is set, and BRIDGE_AIRFLOW_AUTH=entra never uses it: remove it",
    ]
    assert "left-behind" not in " ".join(problems)


def test_an_unknown_airflow_auth_is_named() -> None:
    problems = Settings.from_env({**COMPLETE, "BRIDGE_AIRFLOW_AUTH": "kerberos"}).problems()
    assert problems == ["BRIDGE_AIRFLOW_AUTH is 'kerberos': leave it unset, or set 'entra'"]


def test_the_signing_key_in_key_vault_replaces_the_two_key_settings() -> None:
    env = {k: v for k, v in COMPLETE.items() if k != "BRIDGE_SIGNING_KEY"}
    env["BRIDGE_KEY_VAULT_URL"] = "https://kv-bridge.vault.azure.net/"
    settings = Settings.from_env(env)
    assert settings.problems() == []
    assert (settings.key_vault_url, settings.signing_key_secret) == (
        "https://kv-bridge.vault.azure.net/", "signing-key",
    )  # fmt: skip
    assert Settings.from_env(settings.environment()) == settings

    beside = {**env, "BRIDGE_SIGNING_KEY": "k" * 64, "BRIDGE_SIGNING_KEY_PREVIOUS": "p" * 64}
    assert Settings.from_env(beside).problems() == [
        "BRIDGE_SIGNING_KEY is set, and BRIDGE_KEY_VAULT_URL replaces it: remove it",
        "BRIDGE_SIGNING_KEY_PREVIOUS is set, and BRIDGE_KEY_VAULT_URL replaces it: remove it",
    ]
    assert Settings.from_env({**env, "BRIDGE_KEY_VAULT_URL": "kv-bridge"}).problems() == [
        "BRIDGE_KEY_VAULT_URL is not an http(s) URL"
    ]
