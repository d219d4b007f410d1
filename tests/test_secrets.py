"""Secrets never leave memory: not in logs, reprs, errors, the job store, state files or ``show()``."""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr

from anytune import (
    AuthenticationError,
    ConfigError,
    FineTuneJob,
    JobError,
    JobFailedError,
    JobRecord,
    JobStatus,
    JobStore,
    ProviderEntry,
    ProviderError,
    ProviderSettings,
    register,
)
from anytune._config import resolve
from anytune._secrets import RedactingFilter, is_secret_name, mask, redact, register_secret
from anytune.providers.fake import FakeProvider, FakeSettings

KEY = "sk-test-PLANTED0123456789abcdef"


def opaque(label: str) -> str:
    """A secret no pattern recognises: only registration can hide it. Unique per test."""
    return f"{label}-PLANTED-{uuid.uuid4().hex[:12]}"


class KeyedSettings(FakeSettings):
    api_key: SecretStr | None = None
    access_token: str | None = None
    api_key_env: str = "KEYED_API_KEY"
    region: str = "eu"


class KeyedProvider(FakeProvider):
    name: ClassVar[str] = "keyed"
    Settings: ClassVar[type[ProviderSettings]] = KeyedSettings


@pytest.fixture(autouse=True)
def keyed() -> None:
    register(ProviderEntry("keyed", f"{__name__}:KeyedProvider"))


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="anytune")
    yield caplog


def files_under(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def assert_hidden(secret: str, *haystacks: object) -> None:
    for hay in haystacks:
        text = hay.decode(errors="replace") if isinstance(hay, bytes) else str(hay)
        assert secret not in text, f"secret leaked into: {text[:300]}"


def test_settings_secret_never_leaks(logs: pytest.LogCaptureFixture, chat_jsonl: Path, anytune_home: Path) -> None:
    token = opaque("token")
    settings = {"api_key": KEY, "access_token": token}
    job = FineTuneJob.create(
        provider="keyed",
        settings=settings,
        base_model="tiny",
        training_file=chat_jsonl,
        tags={"note": f"pasted {token}"},
        fake={"seconds": 0.1},
    )
    logging.getLogger("anytune").info("direct key=%s token=%s", KEY, token)
    logging.getLogger("anytune.providers.keyed").debug("child key=%s token=%s", KEY, token)
    record = job.wait()
    model = job.result()
    again = FineTuneJob.get(job.ref, settings=settings)
    config = resolve(provider="keyed", settings=settings)
    JobStore(anytune_home / "jobs.db").close()

    assert record.status is JobStatus.SUCCEEDED
    assert [r.getMessage() for r in logs.records][-2:] == ["direct key=*** token=***", "child key=*** token=***"]
    assert config.settings.api_key.get_secret_value() == KEY  # type: ignore[attr-defined]
    for secret in (KEY, token):
        assert_hidden(
            secret,
            logs.text,
            repr(job),
            str(job),
            repr(again),
            repr(job._provider),
            str(job._provider),
            repr(job._provider.settings),
            str(job._provider.settings),
            repr(config),
            config.show(),
            repr(record),
            repr(model),
            job.events(),
            FineTuneJob.list(),
            files_under(anytune_home),  # job store (with its WAL files) and fake state files
        )
    shown = config.show()["settings"]
    assert shown["api_key"] == "***" and shown["access_token"] == "***"
    assert shown["api_key_env"] == "KEYED_API_KEY" and shown["region"] == "eu"  # not secrets


def test_env_secret_never_leaks(
    logs: pytest.LogCaptureFixture, chat_jsonl: Path, anytune_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = opaque("envtoken")
    monkeypatch.setenv("ANYTUNE_KEYED_API_KEY", KEY)
    monkeypatch.setenv("ANYTUNE_KEYED_ACCESS_TOKEN", token)
    config = resolve(provider="keyed")
    assert config.sources["settings.api_key"] == "ANYTUNE_KEYED_API_KEY"
    job = FineTuneJob.create(provider="keyed", base_model="tiny", training_file=chat_jsonl, fake={"seconds": 0.1})
    job.wait()
    logging.getLogger("anytune.config").warning("resolved %s", config.settings.access_token)  # type: ignore[attr-defined]
    JobStore(anytune_home / "jobs.db").close()

    for secret in (KEY, token):
        assert_hidden(secret, logs.text, repr(config), config.show(), repr(job._provider), files_under(anytune_home))
    assert "resolved ***" in logs.text


def test_secret_in_a_rejected_setting_stays_out_of_the_error() -> None:
    token = opaque("typo")
    with pytest.raises(ConfigError) as info:
        resolve(provider="keyed", settings={"api_kye": token})
    error = info.value
    assert error.field == "settings.api_kye"
    assert_hidden(token, str(error), repr(error), "".join(traceback.format_exception(error)))

    with pytest.raises(ConfigError) as info:
        resolve(provider="keyed", settings={"api_key": token, "speed": "fast"})
    assert_hidden(token, str(info.value), "".join(traceback.format_exception(info.value)))


def test_error_messages_are_redacted() -> None:
    token = opaque("errtoken")
    register_secret(token)
    errors: list[Exception] = [
        ProviderError(f"request with {KEY} refused", provider="openai"),
        AuthenticationError(f"invalid token {token}", provider="hf", status_code=401),
        ConfigError(f"bad value {token}", field="settings.api_key"),
        JobFailedError(
            JobRecord(
                provider="fake",
                id="fakejob-1",
                status=JobStatus.FAILED,
                error=JobError(message=f"auth failed for {KEY}"),
            )
        ),
    ]
    for error in errors:
        assert_hidden(KEY, str(error), repr(error), error.args)
        assert_hidden(token, str(error), repr(error), error.args)
        assert "***" in str(error)


def test_unregistered_secret_is_not_invented() -> None:
    token = opaque("never-registered")
    assert redact(f"value {token}") == f"value {token}"


# -- redact, mask, names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "sk-abcdefghijklmnop1234",
        "sk-proj-abcDEF123_456-789xyzXYZ",
        "sk-svcacct-abcdefghijklmnopqrstuv",
        "hf_abcdefghijklmnopqrstuvwxyz12",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXBhcnQtaGVyZQ",
    ],
)
def test_redact_credential_shapes(text: str) -> None:
    assert redact(f"before {text} after") == "before *** after"
    assert redact(f"key={text}") == "key=***"


def test_redact_headers() -> None:
    assert redact("Authorization: Bearer abcdefghijklmnop.qrstuv") == "Authorization: Bearer ***"
    assert redact("api-key: 0123456789abcdef0123456789abcdef") == "api-key: ***"


@pytest.mark.parametrize(
    "text",
    [
        "task-classification-model-v2",
        "mask-detection-v1-final",
        "desk-organizer-dataset-2024",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "ft:gpt-4o-mini-2024-07-18:acme:my-suffix:AbC123",
        "path/to/pdf_abcdefghijklmnopqrstuvwxyz",
        "sk-short",
        "",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_registered_secrets() -> None:
    short = "abc12"
    register_secret(short)  # too short to mask safely: ordinary words would vanish
    assert redact(f"x {short} y") == f"x {short} y"
    register_secret(None)
    register_secret("")

    outer = opaque("outer")
    inner = outer[:-4]
    register_secret(inner)
    register_secret(outer)
    assert redact(f"a {outer} b {inner} c") == "a *** b *** c"
    assert redact(redact(f"{outer}")) == "***"


def test_mask_and_secret_names() -> None:
    assert mask("anything") == "***" and mask("") == "" and mask(None) == ""
    for name in ("api_key", "apiKey", "HF_TOKEN", "client_secret", "password", "sas_token", "auth"):
        assert is_secret_name(name), name
    for name in ("api_key_env", "token_var", "endpoint", "region", "speed", "base_url"):
        assert not is_secret_name(name), name


def test_redacting_filter_on_a_foreign_logger(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.redacting")
    logger.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.INFO, logger="tests.redacting"):
            logger.info("value %s and %d", KEY, 3)
    finally:
        logger.filters.clear()
    assert caplog.records[-1].getMessage() == "value *** and 3"


def test_settings_repr_masks_secretstr() -> None:
    settings: Any = KeyedSettings(api_key=KEY)  # type: ignore[arg-type]
    assert_hidden(KEY, repr(settings), str(settings), settings.model_dump(), settings.model_dump_json())
    assert settings.api_key.get_secret_value() == KEY
