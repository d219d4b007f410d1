"""Secrets never leave memory: not in logs, reprs, errors, the job store, state files or ``show()``."""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr

from anytune import (
    AuthenticationError,
    ConfigError,
    Event,
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


# -- every known provider variable, URLs, the uniform records, every library's logs ----------------

PROVIDER_VARIABLES = (
    "OPENAI_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_AD_TOKEN",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "AZURE_CLIENT_SECRET",
    "AZURE_STORAGE_SAS_TOKEN",
    "ANYTUNE_OPENAI_API_KEY",
    "ANYTUNE_HUGGINGFACE_TOKEN",
    "WANDB_API_KEY",
)


@pytest.mark.parametrize("name", PROVIDER_VARIABLES)
def test_every_known_provider_variable_is_masked(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    value = opaque(name.lower())
    assert redact(f"echoed {value}") == f"echoed {value}"  # not set: nothing to hide
    monkeypatch.setenv(name, value)  # set after start-up, never registered, no SDK imported
    assert redact(f"echoed {value}!") == "echoed ***!"
    monkeypatch.setenv(name, value + "-rotated")
    assert redact(f"echoed {value}-rotated") == "echoed ***"


def test_connection_string_parts_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    account_key = "QUJDREVGR0hJSktMTU5PUA=="
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={account_key};EndpointSuffix=core.windows.net",
    )
    assert redact(f"signed with {account_key}") == "signed with ***"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("http://user:pass@host", "http://user:***@host"),
        (
            "proxy https://deploy:s3cr3t-PLANTED@proxy.example:8080/v1 refused",
            "proxy https://deploy:***@proxy.example:8080/v1 refused",
        ),
        ("postgresql://admin:p%40ss@db.internal/jobs", "postgresql://admin:***@db.internal/jobs"),
        (
            "https://acct.blob.core.windows.net/c/f.jsonl?sv=2024-05-04&sig=abc%2BDEF123%3D&se=2030",
            "https://acct.blob.core.windows.net/c/f.jsonl?sv=2024-05-04&sig=***&se=2030",
        ),
        ("https://x.openai.azure.com/openai?api-key=0123abcd&v=1", "https://x.openai.azure.com/openai?api-key=***&v=1"),
    ],
)
def test_credentials_in_urls_are_masked(text: str, masked: str) -> None:
    assert redact(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "http://localhost:8080/v1",
        "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct?revision=main",
        "ssh://git@github.com/org/repo",
        "meet at 12:30@home",
        "tokens_seen=4096 max_tokens=512",
    ],
)
def test_urls_without_credentials_are_left_alone(text: str) -> None:
    assert redact(text) == text


def test_events_and_records_are_redacted_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    azure, registered = opaque("azure"), opaque("registered")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", azure)
    register_secret(registered)
    echoed = f"key {azure} and {registered} and http://u:pw-PLANTED@h"
    event = Event(
        id="1", kind="log", time=datetime.now(timezone.utc), message=echoed, raw={"detail": [echoed, 3], "n": None}
    )
    record = JobRecord(
        provider="openai",
        id="ftjob-1",
        status=JobStatus.FAILED,
        raw_status=echoed,
        error=JobError(message=echoed, code=echoed, param=echoed),
        raw={"error": {"message": echoed}, "events": (echoed,)},
        output={"note": echoed},
    )
    from_json = JobRecord.model_validate_json(record.model_dump_json().replace("***", azure))
    for secret in (azure, registered, "pw-PLANTED"):
        assert_hidden(secret, event, event.message, event.raw, record, record.error, from_json)
    assert event.message == "key *** and *** and http://u:***@h"
    assert event.raw == {"detail": [event.message, 3], "n": None}
    assert record.raw["events"] == (event.message,)


def test_every_librarys_debug_log_is_masked_before_a_handler_formats_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from anytune._secrets import install_log_filter

    hf, openai = opaque("hf"), opaque("openai")
    monkeypatch.setenv("HF_TOKEN", hf)
    monkeypatch.setenv("OPENAI_API_KEY", openai)
    root = logging.getLogger("tests.root-of-libraries")
    stream = io.StringIO()
    console = logging.StreamHandler(stream)  # installed first, as logging.basicConfig does
    console.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root.addHandler(console)
    root.setLevel(logging.DEBUG)
    install_log_filter(root)
    late = io.StringIO()
    root.addHandler(logging.StreamHandler(late))  # added after: the redacting handler runs first
    try:
        for name in ("httpx", "httpcore", "azure.core.pipeline", "urllib3.connectionpool", "huggingface_hub"):
            logging.getLogger(f"tests.root-of-libraries.{name}").debug("%s sends token=%s key=%s", name, hf, openai)
        try:
            raise RuntimeError(f"401 for {hf}") from KeyError(openai)
        except RuntimeError:
            logging.getLogger("tests.root-of-libraries.urllib3").exception("request failed")
    finally:
        root.handlers.clear()
        root.filters.clear()
    text = stream.getvalue() + late.getvalue()
    assert "httpx sends token=*** key=***" in text and "KeyError" in text and "401 for ***" in text
    assert_hidden(hf, text)
    assert_hidden(openai, text)


def test_a_setting_that_only_names_a_secret_is_shown_kept_and_never_masks_that_name(tmp_path: Path) -> None:
    # kubernetes' hub_token_key names the key inside a Kubernetes Secret ("HF_TOKEN"): registering it
    # as a secret value would mask the word HF_TOKEN in every later output (manifests, errors).
    pytest.importorskip("kubernetes")
    from anytune.providers.kubernetes import KubernetesProvider

    name = f"hf-{uuid.uuid4().hex[:8]}"
    config = resolve(
        provider="kubernetes",
        settings={"hub_token_secret": name, "hub_token_key": "HF_TOKEN", "storage": "file:///tmp/x"},
        env={},
        cwd=tmp_path,
        provider_class=KubernetesProvider,
    )
    assert redact(f"secretKeyRef {name} HF_TOKEN") == f"secretKeyRef {name} HF_TOKEN"
    assert config.show()["settings"]["hub_token_key"] == "HF_TOKEN"
    assert f"hub_token_secret='{name}'" in repr(config.settings)
    # A setting named like a secret and not declared a reference is still masked.
    assert is_secret_name("hub_token") and not is_secret_name("hub_token_env")
