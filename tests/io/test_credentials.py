"""What a run records of its storage options: where the storage is, never a credential."""

from __future__ import annotations

from pipeline.config import parse_config
from pipeline.io.credentials import REDACTED, recorded, redact, unredacted

S3 = {
    "endpoint_url": "https://s3.example.com",
    "key": "AKIAEXAMPLE",
    "secret": "wJalrXUtnFEMI",
    "client_kwargs": {"region_name": "eu-west-1", "aws_session_token": "FwoGZX"},
    "config_kwargs": {"retries": {"max_attempts": 5, "mode": "adaptive"}},
}


def test_secrets_are_redacted_under_any_name_and_the_endpoint_is_kept():
    assert redact(S3) == {
        "endpoint_url": "https://s3.example.com",
        "key": REDACTED,
        "secret": REDACTED,
        "client_kwargs": {"region_name": "eu-west-1", "aws_session_token": REDACTED},
        "config_kwargs": {"retries": {"max_attempts": 5, "mode": "adaptive"}},
    }
    # gcsfs takes a service account's whole JSON as `token`, adlfs an `account_key`.
    assert redact({"token": {"private_key": "-----BEGIN"}, "account_key": "abc"}) == {
        "token": REDACTED,
        "account_key": REDACTED,
    }


def test_unredacted_options_leave_the_credentials_to_the_environment():
    assert unredacted(redact(S3)) == {
        "endpoint_url": "https://s3.example.com",
        "client_kwargs": {"region_name": "eu-west-1"},
        "config_kwargs": {"retries": {"max_attempts": 5, "mode": "adaptive"}},
    }


def test_the_recorded_config_has_no_secret_of_either_section(tmp_path):
    config = parse_config(
        {
            "input": {"path": "s3://in/", "storage_options": S3},
            "output": {"path": "s3://out/", "storage_options": {"token": "ya29.secret"}},
            "models": [{"name": "ViT-B-32"}],
        }
    )
    text = str(recorded(config))
    for secret in ("AKIAEXAMPLE", "wJalrXUtnFEMI", "FwoGZX", "ya29.secret"):
        assert secret not in text
    assert "https://s3.example.com" in text
    assert config.input.storage_options["secret"] == "wJalrXUtnFEMI"  # the run still has it
