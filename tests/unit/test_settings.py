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
