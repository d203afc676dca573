"""One redaction for every text that leaves keylib (keylib.redact), and URLs without their
credential parameters."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from keylib.redact import RedactingFilter, is_credential_parameter, redact, strip_credentials

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3tV4lue/With+Slash="

# Every parameter name that carries a credential, as presigned S3, GCS, Azure SAS,
# CloudFront and plain token URLs spell them.
CREDENTIAL_NAMES = [
    "X-Amz-Security-Token", "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders",
    "X-Goog-Signature", "X-Goog-Credential", "AWSAccessKeyId", "Signature", "token", "signature", "sig",
    "key", "access_token", "password", "secret", "api_key", "apikey", "client_secret", "refresh_token",
    "Policy", "Key-Pair-Id", "sessionToken",
]


def _cases(name):
    return {name, name.lower(), name.upper(), name.swapcase()}


@pytest.mark.parametrize("name", CREDENTIAL_NAMES)
def test_every_credential_parameter_is_masked_in_any_case(name):
    for spelled in _cases(name):
        assert is_credential_parameter(spelled)
        url = f"https://cdn.example.com/a/b.mp3?x=1&{spelled}={SECRET}&y=2"
        assert redact(url) == f"https://cdn.example.com/a/b.mp3?x=1&{spelled}=***&y=2"
        assert strip_credentials(url) == "https://cdn.example.com/a/b.mp3?x=1&y=2"
        assert strip_credentials(f"https://cdn.example.com/b.mp3?{spelled}={SECRET}") == "https://cdn.example.com/b.mp3"
        # free text, an exception message, JSON and a Python repr
        assert SECRET not in redact(f"request failed ({spelled}={SECRET}), giving up")
        assert SECRET not in redact(ValueError(f"cannot read https://h/x.mp3?{spelled}={SECRET}"))
        assert SECRET not in redact(f'{{"{spelled}": "{SECRET}", "n": 1}}')
        assert SECRET not in redact({spelled: SECRET})


def test_other_parameters_and_words_are_left_alone():
    for name in ("x", "response-content-type", "versionId", "monkey", "keys", "Expires", "partNumber"):
        assert not is_credential_parameter(name)
        url = f"https://h/a.mp3?{name}=1"
        assert redact(url) == url and strip_credentials(url) == url
    text = "listed 12 tracks from /music (monkey=3, keys=24, tokens: 0)"
    assert redact(text) == text


def test_strip_credentials_keeps_the_rest_of_the_url_as_written():
    assert strip_credentials("https://h/a.mp3?X-Amz-Signature=abc&x=1") == "https://h/a.mp3?x=1"
    assert strip_credentials("https://u:pw@h:8443/a%20b.mp3?a=%2F&X-Amz-Credential=AK%2F1;b=2&Sig=9#t") \
        == "https://h:8443/a%20b.mp3?a=%2F;b=2#t"
    assert strip_credentials("HTTP://h/a.mp3?TOKEN=1&flag") == "http://h/a.mp3?flag"  # scheme as urlsplit gives it
    assert strip_credentials("https://h/a.mp3#access_token=abc&state=1") == "https://h/a.mp3#state=1"
    assert strip_credentials("https://h/a.mp3?X%2DAmz%2DSignature=abc") == "https://h/a.mp3"  # encoded name
    # In a file name or an S3 key '?' is an ordinary character: nothing to strip.
    for uri in ("/music/what?token=1.mp3", "s3://b/k?X-Amz-Signature=1.wav", "file:///m/a?sig=2.mp3"):
        assert strip_credentials(uri) == uri


def test_url_in_a_parameter_and_percent_encoded_parameters():
    text = ("GET https://h/r?next=https://cdn/a.mp3?token=abc&x=1 and "
            "https://h/q?u=https%3A%2F%2Fc%2Fa%3FSignature%3Ddef")
    out = redact(text)
    assert "abc" not in out and "def" not in out and "x=1" in out and "next=https://cdn/a.mp3?token=***" in out


def test_key_ids_userinfo_and_credential_variables_are_masked(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEXAMPLESESSION")
    text = redact("key id AKIAIOSFODNN7EXAMPLE, ASIAY34FZKBOKMUTVV7A; secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY "
                  "session FwoGZXIvYXdzEXAMPLESESSION at http://user:pass@proxy:3128/")
    for secret in ("AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A", "wJalrXUtnFEMI", "FwoGZXIvYXdz", "user:pass"):
        assert secret not in text, secret
    assert "http://***@proxy:3128/" in text
    assert redact(None) is None and redact(3) == "3"


def test_one_redaction_behind_every_name():
    from keylib.storage import commit, manifest, s3

    assert s3.redact is redact and commit.redact is redact and manifest.redact_text is redact


def test_redacting_filter_masks_log_lines_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("keylib.test_redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("listed %d tracks from %s", 3, f"https://h/m.csv?X-Amz-Security-Token={SECRET}")
        try:
            raise OSError(f"cannot open https://h/a.mp3?sig={SECRET}")
        except OSError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "listed 3 tracks from https://h/m.csv?X-Amz-Security-Token=***" in out
    assert "sig=***" in out and SECRET not in out


def test_the_redaction_module_imports_nothing_heavy():
    code = "import sys, keylib.redact; print(sorted({'pandas', 'numpy', 'boto3', 'pyarrow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_a_presigned_url_reaches_no_row_manifest_or_log_of_a_nightly_run(tmp_path):
    """Through ./submit.sh nightly: a manifest row with a presigned URL gets an
    unsupported_source row under its stripped URL; an --input that is a presigned URL is an
    input error. The signature and token appear in no row, manifest or log line."""
    import json

    import pandas as pd

    from keylib import synth
    from keylib.storage import tables
    from servers import make_model, submit, write_conf

    token, signature = "IQoJb3JpZ2luEXAMPLETOKEN", "9f8e7d6c5bEXAMPLESIG"
    presigned = (f"https://music.example.com/a/b.mp3?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250101"
                 f"&X-Amz-Security-Token={token}&X-Amz-Signature={signature}")
    synth.write_audio(tmp_path / "here.wav", synth.chord_progression(3, duration_s=3.0, seed=3), sr=22050)
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [presigned, "here.wav"]}).to_csv(manifest, index=False)
    conf = write_conf(tmp_path / "t.toml", model=make_model(tmp_path), max_failed_share=0.6)
    out = tmp_path / "out"

    code, log = submit("nightly", "--conf", str(conf), "--input", str(manifest), "--output", str(out))
    assert code == 0 and "listed 2, new 2, skipped 0, failed 1" in log, log
    assert "unsupported_source" in log
    keys = tables.read_rows(str(out / "keys")).set_index("track_id")
    assert keys.loc["https://music.example.com/a/b.mp3", "status"] == "unsupported_source"
    assert keys.loc["here.wav", "status"] == "ok"

    code, refused = submit("nightly", "--conf", str(conf), "--input", presigned, "--output", str(out))
    assert code == 3 and "input error" in refused and "X-Amz-Signature=***" in refused, refused
    runs = [json.loads(p.read_text()) for p in sorted((out / "_runs").glob("*.json"))]
    assert [m["status"] for m in runs] == ["ok", "input_error"]
    assert runs[1]["input"].startswith("https://music.example.com/a/b.mp3?X-Amz-Credential=***")

    stored = [p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file()]  # rows, logs, manifests
    for text in (log, refused, *stored, keys.astype(str).to_csv()):
        for secret in (token, signature, "AKIAIOSFODNN7EXAMPLE"):
            assert secret not in text, secret
