"""Registry credentials from environment variables or the Docker configuration file.

The first source that has credentials for the registry wins:

1. `ZOO_REGISTRY_USERNAME` and `ZOO_REGISTRY_PASSWORD`, for every registry;
2. the Docker configuration file, `$DOCKER_CONFIG/config.json` or
   `~/.docker/config.json`: a credential helper named for the registry in
   `credHelpers`, else the `auths` entry of the registry (`auth` as base64 of
   `USER:PASSWORD`, or `username` and `password`), else the `credsStore` helper.

Helpers are the `docker-credential-NAME` programs of the Docker credential
helper protocol: `get` reads the server address on stdin and prints JSON with
`Username` and `Secret`.

Passwords never appear in messages or logs; `Credentials` hides the password
from its repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AuthenticationError

__all__ = ["Credentials", "docker_config_path", "find_credentials"]

logger = logging.getLogger(__name__)

USERNAME_ENV = "ZOO_REGISTRY_USERNAME"
PASSWORD_ENV = "ZOO_REGISTRY_PASSWORD"
HELPER_TIMEOUT_SECONDS = 30
# Docker stores Docker Hub credentials under this key whatever host name the user typed.
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    """A user name and password for basic authentication, and where they came from."""

    username: str
    password: str = field(repr=False)
    source: str = ""


def docker_config_path() -> Path:
    """Return the Docker configuration file: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`."""
    folder = os.environ.get("DOCKER_CONFIG")
    return (Path(folder) if folder else Path.home() / ".docker") / "config.json"


def _normalise_key(key: str) -> str:
    """Reduce an `auths` key such as `https://host:5000/v1/` to `host:5000`."""
    for scheme in ("https://", "http://"):
        key = key.removeprefix(scheme)
    return key.split("/", 1)[0].lower()


def _candidate_keys(registry: str) -> list[str]:
    keys = [registry.lower()]
    if registry.lower() in DOCKER_HUB_HOSTS:
        keys += [_normalise_key(DOCKER_HUB_KEY), *DOCKER_HUB_HOSTS]
    return keys


def find_credentials(registry: str) -> Credentials | None:
    """Return the credentials for `registry` (`HOST` or `HOST:PORT`), or None when no source has any.

    Raises:
        AuthenticationError: only one of the two environment variables is
            set, the Docker configuration is unreadable, or a credential
            helper fails.
    """
    username, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
    if username or password:
        if not (username and password):
            missing = PASSWORD_ENV if username else USERNAME_ENV
            raise AuthenticationError(f"{USERNAME_ENV} and {PASSWORD_ENV} must be set together, but {missing} is empty or unset; set both or neither")
        return Credentials(username, password, f"{USERNAME_ENV}/{PASSWORD_ENV}")
    return _from_docker_config(registry, docker_config_path())


def _from_docker_config(registry: str, path: Path) -> Credentials | None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AuthenticationError(f"cannot read the Docker configuration {path} ({type(error).__name__}); fix or remove the file") from None
    if not isinstance(config, dict):
        raise AuthenticationError(f"the Docker configuration {path} is not a JSON object; fix or remove the file")
    keys = _candidate_keys(registry)

    helpers = config.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for key in keys:
            if isinstance(helpers.get(key), str):
                return _from_helper(helpers[key], registry, path)

    auths = config.get("auths") or {}
    if isinstance(auths, dict):
        entries = {_normalise_key(key): value for key, value in auths.items()}
        for key in keys:
            entry = entries.get(key)
            if isinstance(entry, dict):
                found = _from_auths_entry(entry, key, path)
                if found is not None:
                    return found

    store = config.get("credsStore")
    if isinstance(store, str) and store:
        return _from_helper(store, registry, path)
    return None


def _from_auths_entry(entry: dict[str, Any], key: str, path: Path) -> Credentials | None:
    source = f"{path} (auths entry {key})"
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationError(f"the auth value of {source} is not base64 of USER:PASSWORD; run `docker login {key}` again") from None
        username, colon, password = decoded.partition(":")
        if not colon or not username:
            raise AuthenticationError(f"the auth value of {source} does not decode to USER:PASSWORD; run `docker login {key}` again")
        return Credentials(username, password, source)
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and username:
        return Credentials(username, password, source)
    if entry.get("identitytoken"):
        # NOTE: identity tokens (OAuth refresh tokens) are not exchanged for access tokens; such an entry is skipped.
        logger.warning("skipping %s: identity tokens are not supported; set %s and %s instead", source, USERNAME_ENV, PASSWORD_ENV)
    return None


def _from_helper(helper: str, registry: str, config_path: Path) -> Credentials | None:
    program = f"docker-credential-{helper}"
    executable = shutil.which(program)
    if executable is None:
        raise AuthenticationError(
            f"the Docker configuration {config_path} names credential helper {helper!r} for {registry}, but "
            f"{program} is not on PATH; install it or remove the entry"
        )
    try:
        completed = subprocess.run(
            [executable, "get"],
            input=registry,
            capture_output=True,
            text=True,
            timeout=HELPER_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AuthenticationError(f"{program} get timed out after {HELPER_TIMEOUT_SECONDS} s for {registry}") from None
    if completed.returncode != 0:
        # Helpers exit non-zero with "credentials not found" when they store nothing for the server.
        logger.info("%s has no credentials for %s (exit status %d)", program, registry, completed.returncode)
        return None
    try:
        answer = json.loads(completed.stdout)
        username, secret = answer["Username"], answer["Secret"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise AuthenticationError(f"{program} get printed no JSON with Username and Secret for {registry}") from None
    if not isinstance(username, str) or not isinstance(secret, str) or not username:
        raise AuthenticationError(f"{program} get returned no user name for {registry}")
    if username == "<token>":
        logger.warning("skipping %s: identity tokens are not supported; set %s and %s instead", program, USERNAME_ENV, PASSWORD_ENV)
        return None
    return Credentials(username, secret, program)
