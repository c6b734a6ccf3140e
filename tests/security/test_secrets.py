"""No secret in the repository (and so in the image, built from it): detect-secrets over every file git sees.

`.secrets.baseline` lists the findings that are not secrets; each file in it is explained below (and in
the README's security review). A new finding fails the test: remove the secret, or, if it is a test value,
regenerate the baseline (`detect-secrets scan > .secrets.baseline`) and say why here.
"""

from __future__ import annotations

import secrets
import string
import subprocess
from pathlib import Path

import pytest
from detect_secrets.core import baseline
from detect_secrets.core.secrets_collection import SecretsCollection
from detect_secrets.settings import transient_settings

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / ".secrets.baseline"

# Every file with an allowed finding, and why it is not a secret.
ALLOWED = {
    "include/twin/masking.py": "a comment describing the URL-credentials form that the masker removes",
    "tests/integration/test_artifacts.py": "moto's documented dummy credentials ('testing') for its in-memory S3",
    "tests/llm/test_client.py": "the API key of the test's own local OpenAI-compatible server",
    "tests/search/test_factory.py": "a made-up OpenSearch password that the settings must pass on",
    "tests/serving/conftest.py": "the random per-run API key of the test Serve app",
    "tests/unit/test_compose.py": "a user:pw URL that exercises the compose URL parser",
    "tests/unit/test_masking.py": "made-up secrets that the masking tests expect to see masked",
}


def repository_files() -> list[str]:
    """Tracked files and new files git does not ignore: what a commit or the image's build context can hold."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return sorted({name for name in listed if name and name != BASELINE.name and (REPO / name).is_file()})


def scan(paths: list[str], root: Path) -> dict[tuple[str, str], list[str]]:
    """(file, hashed secret) -> where and what, with the plugins and filters the baseline was made with."""
    config = baseline.load_from_file(str(BASELINE))
    found: dict[tuple[str, str], list[str]] = {}
    with transient_settings({"plugins_used": config["plugins_used"], "filters_used": config["filters_used"]}):
        collection = SecretsCollection(root=str(root))
        collection.scan_files(*paths, num_processors=2)
    for filename, secret in collection:
        found.setdefault((filename, secret.secret_hash), []).append(f"{filename}:{secret.line_number} {secret.type}")
    return found


@pytest.fixture(scope="module")
def allowed() -> set[tuple[str, str]]:
    results = baseline.load_from_file(str(BASELINE))["results"]
    return {(name, item["hashed_secret"]) for name, items in results.items() for item in items}


def test_every_allowed_finding_is_explained(allowed: set[tuple[str, str]]) -> None:
    assert {name for name, _ in allowed} <= set(ALLOWED), "explain each baseline file in ALLOWED"


def test_repository_holds_no_new_secret(allowed: set[tuple[str, str]]) -> None:
    files = repository_files()
    assert len(files) > 100 and "include/twin/settings.py" in files
    found = scan(files, REPO)
    new = sorted(where for key, places in found.items() if key not in allowed for where in places)
    assert new == [], f"possible secrets (remove them, or explain and re-baseline): {new}"


def test_scan_finds_a_planted_key(tmp_path: Path) -> None:
    # Built at run time, so no key-shaped string sits in the repository.
    key_id = "AKIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    planted = f'AWS_ACCESS_KEY_ID = "{key_id}"\npassword = "{secrets.token_hex(12)}"\n'
    (tmp_path / "settings_local.py").write_text(planted)
    found = scan(["settings_local.py"], tmp_path)
    kinds = {where.split(" ", 1)[1] for places in found.values() for where in places}
    assert {"AWS Access Key", "Secret Keyword"} <= kinds, found
