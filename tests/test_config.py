"""Configuration: profiles from the project and user files, environment, arguments, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from anytune import ConfigError, FineTuneJob, JobStatus, UnknownProviderError
from anytune._config import resolve

USER_TOML = """
default_profile = "mine"

[profiles.mine]
provider = "fake"
settings = { speed = 3.0, fine_tuned_prefix = "user" }
spec = { base_model = "user-model" }

[profiles.shared]
provider = "fake"
description = "defined in both files"
settings = { fine_tuned_prefix = "from-user" }
"""

PROJECT_TOML = """
[profiles.shared]
provider = "fake"
settings = { fine_tuned_prefix = "from-project" }

[profiles.dev]
provider = "fake"
settings = { speed = 2.0 }
spec = { base_model = "tiny", suffix = "dev", hyperparameters = { epochs = 2, batch_size = 4 } }
"""


@pytest.fixture
def user_file(config_dir: Path) -> Path:
    path = config_dir / "anytune.toml"
    path.write_text(USER_TOML)
    return path


@pytest.fixture
def project_file(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project ``anytune.toml`` two folders above the working directory."""
    path = workdir / "anytune.toml"
    path.write_text(PROJECT_TOML)
    deeper = workdir / "src" / "pkg"
    deeper.mkdir(parents=True)
    monkeypatch.chdir(deeper)
    return path


def speed(config: object) -> float:
    return config.settings.speed  # type: ignore[attr-defined,no-any-return]


def prefix(config: object) -> str:
    return config.settings.fine_tuned_prefix  # type: ignore[attr-defined,no-any-return]


# -- where profiles come from -------------------------------------------------------------------


def test_project_file_is_found_from_the_working_directory_upwards(project_file: Path) -> None:
    config = resolve(profile="dev")
    assert config.provider == "fake" and config.profile == "dev"
    assert speed(config) == 2.0
    assert config.files == [project_file]
    assert config.sources["settings.speed"] == "profile 'dev'"


def test_user_file_and_default_profile(user_file: Path) -> None:
    config = resolve()
    assert config.profile == "mine" and config.provider == "fake"
    assert speed(config) == 3.0 and prefix(config) == "user"
    assert config.spec_defaults == {"base_model": "user-model"}
    assert config.files == [user_file]
    assert "default_profile" in config.sources["profile"]


def test_project_profiles_override_user_profiles(user_file: Path, project_file: Path) -> None:
    assert prefix(resolve(profile="shared")) == "from-project"
    assert resolve().profile == "mine"  # user default still applies, project defines none
    assert set(resolve().profiles) == {"mine", "shared", "dev"}
    assert resolve().files == [user_file, project_file]


def test_anytune_config_points_at_a_project_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text(PROJECT_TOML)
    monkeypatch.setenv("ANYTUNE_CONFIG", str(path))
    assert resolve(profile="dev").files == [path]
    monkeypatch.setenv("ANYTUNE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        resolve(provider="fake")


# -- choosing the profile and provider ----------------------------------------------------------


def test_anytune_profile_beats_default_profile(
    user_file: Path, project_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYTUNE_PROFILE", "dev")
    config = resolve()
    assert config.profile == "dev" and config.sources["profile"] == "ANYTUNE_PROFILE"
    assert resolve(profile="shared").profile == "shared"  # the argument beats the variable


def test_anytune_provider_without_any_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYTUNE_PROVIDER", "fake")
    config = resolve()
    assert config.provider == "fake" and config.profile is None
    assert config.sources["provider"] == "ANYTUNE_PROVIDER"
    assert speed(config) == 1.0


def test_provider_argument_may_name_a_profile(project_file: Path) -> None:
    config = resolve(provider="dev")
    assert config.provider == "fake" and config.profile == "dev" and speed(config) == 2.0


def test_no_provider_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        resolve()
    assert info.value.field == "provider"
    assert "ANYTUNE_PROVIDER" in str(info.value)


def test_no_provider_at_create(chat_jsonl: Path) -> None:
    with pytest.raises(ConfigError, match="no provider"):
        FineTuneJob.create(base_model="tiny", training_file=chat_jsonl)


def test_unknown_profile_suggests_a_close_one(project_file: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(profile="dve")
    assert info.value.field == "profile"
    assert "Did you mean 'dev'?" in str(info.value)


def test_unknown_provider_is_a_config_error() -> None:
    with pytest.raises(UnknownProviderError) as info:
        resolve(provider="fakee")
    assert isinstance(info.value, ConfigError)
    assert info.value.suggestions == ["fake"]


# -- settings precedence ------------------------------------------------------------------------


def test_settings_precedence_argument_env_profile_default(project_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert speed(resolve(provider="fake")) == 1.0  # default
    assert speed(resolve(profile="dev")) == 2.0  # profile
    monkeypatch.setenv("ANYTUNE_FAKE_SPEED", "5")
    env_config = resolve(profile="dev")
    assert speed(env_config) == 5.0
    assert env_config.sources["settings.speed"] == "ANYTUNE_FAKE_SPEED"
    arg_config = resolve(profile="dev", settings={"speed": 7})
    assert speed(arg_config) == 7.0
    assert arg_config.sources["settings.speed"] == "argument"


def test_settings_env_var_reaches_the_job(chat_jsonl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYTUNE_FAKE_FINE_TUNED_PREFIX", "envco")
    job = FineTuneJob.create(provider="fake", base_model="tiny", training_file=chat_jsonl, fake={"seconds": 0.1})
    assert job.wait().status is JobStatus.SUCCEEDED
    assert job.result().model_id is not None and job.result().model_id.startswith("envco:")


def test_explicit_provider_ignores_the_default_profile(user_file: Path) -> None:
    config = resolve(provider="fake")
    assert config.profile is None and prefix(config) == "ft"


# -- spec defaults ------------------------------------------------------------------------------


def test_profile_spec_defaults_merge_under_arguments(project_file: Path, chat_jsonl: Path) -> None:
    plan = FineTuneJob.plan(provider="dev", training_file=chat_jsonl, hyperparameters={"epochs": 5})
    body = plan.requests[0].body
    assert body["base_model"] == "tiny"  # from the profile
    assert body["suffix"] == "dev"
    assert body["hyperparameters"] == {"epochs": 5, "batch_size": 4}  # deep merge, argument wins


def test_arguments_override_profile_spec(project_file: Path, chat_jsonl: Path) -> None:
    plan = FineTuneJob.plan(profile="dev", base_model="other", suffix="mine", training_file=chat_jsonl)
    assert plan.requests[0].body["base_model"] == "other"
    assert plan.requests[0].body["suffix"] == "mine"


def test_anytune_base_model(chat_jsonl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYTUNE_BASE_MODEL", "env-model")
    plan = FineTuneJob.plan(provider="fake", training_file=chat_jsonl)
    assert plan.requests[0].body["base_model"] == "env-model"
    plan = FineTuneJob.plan(provider="fake", base_model="arg-model", training_file=chat_jsonl)
    assert plan.requests[0].body["base_model"] == "arg-model"


def test_profile_job_is_recorded_with_its_profile(project_file: Path, chat_jsonl: Path) -> None:
    job = FineTuneJob.create(profile="dev", training_file=chat_jsonl, fake={"seconds": 0.1})
    (row,) = FineTuneJob.list()
    assert row.profile == "dev" and row.ref == job.ref
    assert row.spec["hyperparameters"] == {"epochs": 2, "batch_size": 4}


# -- errors -------------------------------------------------------------------------------------


def test_bad_toml_names_file_and_line(workdir: Path) -> None:
    path = workdir / "anytune.toml"
    path.write_text('[profiles.dev]\nprovider = "fake"\nsettings = { speed = }\n')
    with pytest.raises(ConfigError) as info:
        resolve(provider="fake")
    message = str(info.value)
    assert str(path) in message and "line 3" in message
    assert info.value.source == str(path)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('defualt_profile = "dev"\n', "defualt_profile"),
        ('[profiles.dev]\nprovider = "fake"\nsetings = { speed = 2 }\n', "profiles.dev.setings"),
        ('[profiles.dev]\nprovder = "fake"\n', "profiles.dev.provder"),
    ],
)
def test_unknown_key_names_the_field(config_dir: Path, text: str, field: str) -> None:
    path = config_dir / "anytune.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        resolve(provider="fake")
    assert info.value.field == field
    assert field in str(info.value) and "unknown field" in str(info.value)
    assert str(path) in str(info.value)


def test_bad_setting_names_field_and_source(project_file: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYTUNE_FAKE_SPEED", "-1")
    with pytest.raises(ConfigError) as info:
        resolve(provider="fake")
    assert info.value.field == "settings.speed" and info.value.source == "ANYTUNE_FAKE_SPEED"
    assert "settings.speed" in str(info.value) and "ANYTUNE_FAKE_SPEED" in str(info.value)
    monkeypatch.delenv("ANYTUNE_FAKE_SPEED")

    (workdir / "anytune.toml").write_text('[profiles.dev]\nprovider = "fake"\nsettings = { speed = "fast" }\n')
    with pytest.raises(ConfigError) as info:
        resolve(profile="dev")
    assert info.value.field == "settings.speed" and info.value.source == "profile 'dev'"

    with pytest.raises(ConfigError) as info:
        resolve(provider="fake", settings={"sped": 2})
    assert info.value.field == "settings.sped" and info.value.source == "argument"
    assert "unknown field" in str(info.value)


def test_show_is_json_ready_and_names_sources(project_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("ANYTUNE_FAKE_SPEED", "4")
    shown = resolve(profile="dev").show()
    json.dumps(shown)
    assert shown["provider"] == "fake" and shown["profile"] == "dev"
    assert shown["settings"]["speed"] == 4.0
    assert shown["sources"]["settings.speed"] == "ANYTUNE_FAKE_SPEED"
    assert shown["config_files"] == [str(project_file)]
    assert shown["profiles"] == {"dev": "fake", "shared": "fake"}
