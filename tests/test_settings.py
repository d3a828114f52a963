from pathlib import Path

import pytest

from catsdogs.settings import (
    CHOICE_FIELDS,
    DEFAULT_DATA_URL,
    RunChoices,
    Settings,
    SettingsError,
    load_settings,
    redact_url,
    settings_for_choices,
)


def test_defaults_are_the_reference_experiment(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("CATSDOGS_"):
            monkeypatch.delenv(name)
    s = load_settings()
    assert (s.variant, s.image_size, s.batch_size, s.seed) == ("baseline", 180, 32, 0)
    assert s.precision == "float32"
    assert (s.train_range, s.validation_range, s.test_range) == ((0, 999), (1000, 1499), (1500, 2499))
    assert s.data_url == DEFAULT_DATA_URL
    assert s.epochs_to_run == 30
    assert Settings(variant="augmented").epochs_to_run == 100
    assert Settings(variant="augmented", epochs=3).epochs_to_run == 3


def test_precedence_flags_then_env_then_toml(tmp_path: Path, monkeypatch):
    config = tmp_path / "run.toml"
    config.write_text('variant = "augmented"\nimage_size = 100\nbatch_size = 16\nseed = 7\n')
    monkeypatch.setenv("CATSDOGS_IMAGE_SIZE", "120")
    monkeypatch.setenv("CATSDOGS_BATCH_SIZE", "8")
    s = load_settings({"batch_size": "4"}, config_file=config)
    assert s.variant == "augmented"  # only in the file
    assert s.seed == 7
    assert s.image_size == 120  # env beats the file
    assert s.batch_size == 4  # flag beats env


def test_config_file_from_environment(tmp_path: Path, monkeypatch):
    config = tmp_path / "run.toml"
    config.write_text('[catsdogs]\ntrain_range = "0-9"\n')
    monkeypatch.setenv("CATSDOGS_CONFIG", str(config))
    assert load_settings().train_range == (0, 9)


@pytest.mark.parametrize("text, expected", [("0-999", (0, 999)), ("5:10", (5, 10)), ("[3, 4]", (3, 4))])
def test_range_forms(text, expected):
    assert Settings(train_range=text, validation_range="2000-2001", test_range="3000-3001").train_range == expected


def test_range_from_environment(monkeypatch):
    monkeypatch.setenv("CATSDOGS_TEST_RANGE", "1500-1599")
    assert load_settings().test_range == (1500, 1599)


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"image_size": "50"}, ["image_size", "from 78 to 1024 pixels"]),
        ({"image_size": "77"}, ["image_size", "from 78 to 1024 pixels"]),
        ({"validation_range": "900-1200"}, ["train_range 0-999 overlaps validation_range 900-1200"]),
        ({"train_range": "10-5"}, ["train_range", "FIRST <= LAST"]),
        ({"variant": "resnet"}, ["variant", "baseline", "augmented", "resnet"]),
        ({"precision": "fp8"}, ["precision", "float32", "mixed_bfloat16", "mixed_float16", "fp8"]),
        ({"data_url": "ftp://x/y.zip"}, ["data_url", "file:///"]),
        ({"data_sha256": "abc"}, ["data_sha256", "64 hexadecimal"]),
        ({"epochs": "0"}, ["epochs"]),
        ({"batch_size": "many"}, ["batch_size"]),
        ({"variant": "xception", "label_smoothing": "0.7"}, ["label_smoothing", "0.5"]),
        ({"learning_rate": "0"}, ["learning_rate", "greater than 0"]),
        ({"optimizer": "sgd"}, ["optimizer", "rmsprop", "adamw", "sgd"]),
        ({"precision": "bf16"}, ["precision", "auto", "mixed_bfloat16"]),
        ({"early_stopping_patience": "-1"}, ["early_stopping_patience"]),
        ({"tta_crop": "1"}, ["tta_crop", "from 0.5 to below 1", "0 = off"]),
        ({"tta_crop": "0.3"}, ["tta_crop", "got 0.3"]),
        ({"tta_crop": "-0.8"}, ["tta_crop", "got -0.8"]),
        ({"tta_crop": "nan"}, ["tta_crop"]),
        ({"tta_crop": "most"}, ["tta_crop"]),
        ({"tta_zoom_out": "1.2"}, ["tta_zoom_out", "zooming out shrinks the image to", "from 0.5 to below 1"]),
        ({"tta_zoom_out": "0.2"}, ["tta_zoom_out", "got 0.2"]),
    ],
)
def test_invalid_values_name_the_field_and_what_is_allowed(overrides, words):
    with pytest.raises(SettingsError) as caught:
        load_settings(overrides)
    for word in words:
        assert word in str(caught.value)


def test_unknown_setting_in_file_is_named(tmp_path: Path):
    config = tmp_path / "run.toml"
    config.write_text("image_sise = 100\n")
    with pytest.raises(SettingsError, match="image_sise: unknown setting"):
        load_settings(config_file=config)


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(config_file=tmp_path / "nope.toml")


def test_image_size_78_is_enough():
    assert Settings(image_size=78).image_size == 78


def test_credentials_are_redacted():
    shown = redact_url("https://user:secret@example.org/a.zip?token=abc&x=1")
    assert "secret" not in shown and "abc" not in shown and "user" not in shown
    assert shown.startswith("https://***@example.org/a.zip?token=***")
    s = Settings(data_url="https://u:pw@h/a.zip?sig=zzz")
    assert "pw" not in str(s.public_dict()) and "zzz" not in str(s.public_dict())


@pytest.mark.parametrize("url, shown", [
    ("https://user:secret@example.org/a.zip?token=abc&x=1", "https://***@example.org/a.zip?token=***&x=***"),
    ("http://h/a.zip?BAREWORD", "http://h/a.zip?***"),  # a word without = is a value too
    ("http://h/a.zip?t=1&BAREWORD;k=v", "http://h/a.zip?t=***&***&k=***"),
    ("http://h/a?%3Dsecret=1", "http://h/a?***"),  # a key that is not a plain name is masked whole
    ("https://a@b:c@host.org/x#frag", "https://***@host.org/x#***"),  # up to the last @
    ("http://u:p@h:8080/x", "http://***@h:8080/x"),
    ("http://u:pa\nss@h/a.zip", "***"), ("http://u:p\tw@h/a.zip", "***"), ("http://h/a b.zip", "***"),
    ("http://u:p@h:99999/x", "***"), ("http://u:p@[::1/x", "***"), ("http://u:p@/x", "***"),
    ("file:///data/train.zip", "file:///data/train.zip"), ("https://h/a.zip", "https://h/a.zip"),
])
def test_urls_are_masked_by_parsing_and_whole_where_they_do_not_parse(url, shown):
    assert redact_url(url) == shown
    for secret in ("secret", "BAREWORD", "abc", "pa\nss", "frag"):
        assert secret not in shown


@pytest.mark.parametrize("url, problem", [
    ("http://alice:hunter2@127.0.0.1:99999/train.zip?token=s3cret", "its port is not a number from 0 to 65535"),
    ("http://alice:hunter2/train.zip", "its port is not a number from 0 to 65535"),  # the password taken for a port
    ("http://alice:hunter2@[::1/train.zip?token=s3cret", "a host in [brackets] is not a valid IPv6 address"),
    ("https:///train.zip?token=s3cret", "it names no host"),
])
def test_a_url_no_download_could_use_is_refused_as_a_setting_without_showing_it(url, problem):
    with pytest.raises(SettingsError) as caught:
        load_settings({"data_url": url})
    message = str(caught.value)
    assert f"invalid setting data_url: *** is not a valid URL: {problem}; check --data-url" in message
    assert not [secret for secret in ("alice", "hunter2", "s3cret") if secret in message]


@pytest.mark.parametrize("overrides, words", [
    ({"epochs": True}, ["invalid setting epochs", "expected a number, got true"]),
    ({"learning_rate": False}, ["invalid setting learning_rate", "expected a number, got false"]),
    ({"seed": True}, ["invalid setting seed", "got true"]),
    ({"data_url": True}, ["invalid setting data_url", "expected text"]),
    ({"workdir": ""}, ["invalid setting workdir", "must not be empty"]),
    ({"variant": ["baseline"]}, ["invalid setting variant", "baseline", "got ['baseline']"]),
    ({"cutmix": 1.5}, ["invalid setting cutmix", "less than or equal to 1 (got 1.5)"]),
    ({"epochs": "ten"}, ["invalid setting epochs", "valid integer", "(got 'ten')"]),
])
def test_strict_types_from_flags(overrides, words):
    with pytest.raises(SettingsError) as caught:
        load_settings(overrides)
    assert "\n" not in str(caught.value)
    for word in words:
        assert word in str(caught.value)


def test_strict_types_from_a_toml_file_and_the_environment(tmp_path: Path, monkeypatch):
    config = tmp_path / "run.toml"
    config.write_text('variant = ["baseline"]\n')
    with pytest.raises(SettingsError, match="invalid setting variant"):
        load_settings(config_file=config)
    config.write_text("epochs = true\n")
    with pytest.raises(SettingsError, match="invalid setting epochs: expected a number, got true"):
        load_settings(config_file=config)
    monkeypatch.setenv("CATSDOGS_WORKDIR", "")
    with pytest.raises(SettingsError, match="invalid setting workdir: must not be empty"):
        load_settings()


def test_booleans_stay_booleans():
    settings = load_settings({"tta_flip": True, "onednn": False})
    assert settings.tta_flip is True and settings.onednn is False


@pytest.mark.parametrize("port", ["99999", "0", "-1", "eighty"])
def test_web_port_out_of_range_is_one_line_and_exit_2(port, capsys):
    from deployments.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["web", "--port", port])
    assert stopped.value.code == 2
    assert "a port is a whole number from 1 to 65535" in capsys.readouterr().err


def test_run_form_choices_go_over_the_serving_sides_settings(tmp_path: Path, monkeypatch):
    config = tmp_path / "serve.toml"
    config.write_text('data_url = "file:///data/train.zip"\nepochs = 5\nvariant = "augmented"\n')
    monkeypatch.setenv("CATSDOGS_CONFIG", str(config))
    monkeypatch.setenv("CATSDOGS_WORKDIR", str(tmp_path / "served"))
    settings = settings_for_choices({"epochs": 2, "seed": 3, "tta_flip": True})
    assert (settings.workdir, settings.data_url) == (tmp_path / "served", "file:///data/train.zip")
    assert (settings.variant, settings.epochs, settings.seed, settings.tta_flip) == ("augmented", 2, 3, True)
    # a choice left empty keeps the serving side's; a changed variant brings its own recipe
    assert settings_for_choices(None).epochs == 5
    assert settings_for_choices({"variant": "fast"}).lr_schedule == "cosine"
    assert set(RunChoices.model_fields) == set(CHOICE_FIELDS) and not {"workdir", "data_url"} & set(CHOICE_FIELDS)


@pytest.mark.parametrize(("choices", "words"), [
    ({"workdir": "/elsewhere"}, ["workdir: not a choice", "CATSDOGS_WORKDIR"]),
    ({"data_url": "file:///other.zip", "threads": 2}, ["data_url, threads: not a choice", "CATSDOGS_DATA_URL"]),
    ({"epochs": True}, ["epochs", "integer"]),
    ({"epochs": "3"}, ["epochs", "integer"]),
    ({"variant": "cow"}, ["variant", "'cow'"]),
    ({"epochs": 0}, ["epochs must be between 1"]),
])
def test_run_form_choices_that_are_not_allowed_are_one_line_each(choices, words):
    with pytest.raises(SettingsError) as refused:
        settings_for_choices(choices)
    assert all(word in str(refused.value) for word in words), str(refused.value)
