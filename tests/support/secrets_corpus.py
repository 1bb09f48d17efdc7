"""A seeded corpus of fake secrets written the ways people write them: prose, JSON, YAML, .env,
INI, command lines and connection strings. Every value is random (fixed seed), never real.

`corpus()` returns Sample(kind, secret, text): `secret` is the exact value that must not survive
redaction; `text` is the message that carries it.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass

SEED = 1313
ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits
B64 = ALNUM + "+/"
HEX = "0123456789abcdef"


@dataclass(frozen=True)
class Sample:
    kind: str
    secret: str
    text: str
    form: str


def _r(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _password(rng: random.Random) -> str:
    word = rng.choice(["Falcon", "river", "Orchid", "tundra", "Maple", "copper", "Zephyr", "nimbus"])
    return f"{word}{rng.randint(10, 9999)}{rng.choice('!#%*+-_')}{_r(rng, ALNUM, 4)}"


def _pem(rng: random.Random, label: str = "PRIVATE KEY") -> str:
    body = base64.b64encode(rng.randbytes(180)).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----"


# Each generator returns (secret value, a label naming it in prose and config).
Gen = Callable[[random.Random], tuple[str, str]]

GENERATORS: dict[str, Gen] = {
    "aws_access_key": lambda r: ("AKIA" + _r(r, UPPER_DIGITS, 16), "AWS access key id"),
    "aws_secret_key": lambda r: (_r(r, B64, 40), "AWS secret access key"),
    "github_token": lambda r: ("ghp_" + _r(r, ALNUM, 36), "GitHub token"),
    "gitlab_token": lambda r: ("glpat-" + _r(r, ALNUM + "_-", 20), "GitLab token"),
    "slack_token": lambda r: (f"xoxb-{r.randint(10**11, 10**12)}-{_r(r, ALNUM, 24)}", "Slack bot token"),
    "stripe_key": lambda r: ("sk_live_" + _r(r, ALNUM, 24), "Stripe secret key"),
    "openai_key": lambda r: ("sk-proj-" + _r(r, ALNUM + "_-", 48), "OpenAI API key"),
    "anthropic_key": lambda r: ("sk-ant-api03-" + _r(r, ALNUM + "_-", 93), "Anthropic API key"),
    "google_api_key": lambda r: ("AIza" + _r(r, ALNUM + "_-", 35), "Google API key"),
    "npm_token": lambda r: ("npm_" + _r(r, ALNUM, 36), "npm token"),
    "pypi_token": lambda r: ("pypi-AgEIcHlwaS5vcmc" + _r(r, ALNUM + "_-", 60), "PyPI token"),
    "sendgrid_key": lambda r: (f"SG.{_r(r, ALNUM + '_-', 22)}.{_r(r, ALNUM + '_-', 43)}", "SendGrid key"),
    "twilio_key": lambda r: ("SK" + _r(r, HEX, 32), "Twilio API key"),
    "jwt": lambda r: (
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOi" + _r(r, ALNUM, 20) + "." + _r(r, ALNUM + "_-", 43),
        "session JWT",
    ),
    "azure_storage_key": lambda r: (_r(r, B64, 86) + "==", "Azure storage account key"),
    "password": lambda r: (_password(r), "database password"),
    "api_token": lambda r: (_r(r, ALNUM, 32), "API token"),
}


def _prose(rng: random.Random, label: str, secret: str) -> str:
    templates = [
        "note to self: the {label} is {secret}",
        "Note to self - the {label} for prod is {secret}, rotate it friday",
        "hey, can you use my {label}? it's {secret} (don't share)",
        "FYI the {label} is now {secret}",
        "{label}: {secret}",
        "remember the staging {label} = {secret} until the migration",
        "I set the {label} to {secret} yesterday",
    ]
    return rng.choice(templates).format(label=label, secret=secret)


def _name(label: str) -> str:
    return label.lower().replace(" ", "_").replace("-", "_")


def _json(rng: random.Random, label: str, secret: str) -> str:
    return json.dumps({"service": "billing", _name(label): secret, "region": "eu-west-1"})


def _yaml(rng: random.Random, label: str, secret: str) -> str:
    return f"service: billing\ncredentials:\n  {_name(label)}: {secret}\n  region: eu-west-1\n"


def _env(rng: random.Random, label: str, secret: str) -> str:
    return f"APP_ENV=prod\n{_name(label).upper()}={secret}\nLOG_LEVEL=info\n"


def _ini(rng: random.Random, label: str, secret: str) -> str:
    return f"[billing]\nhost = db.internal\n{_name(label)} = {secret}\n"


def _cli(rng: random.Random, label: str, secret: str) -> str:
    flag = _name(label).replace("_", "-")
    return rng.choice(
        [
            f"deploy.sh --{flag} {secret} --region eu-west-1",
            f"export {_name(label).upper()}='{secret}' && ./run.sh",
            f"curl -H 'Authorization: Bearer {secret}' https://api.internal/v1/me",
        ]
    )


FORMS = {"prose": _prose, "json": _json, "yaml": _yaml, "env": _env, "ini": _ini, "cli": _cli}


def _specials(rng: random.Random) -> list[Sample]:
    """Forms bound to one kind of secret: connection strings, CLI passwords, PEM and cloud JSON."""
    out: list[Sample] = []
    for scheme in ("postgres", "postgresql", "mysql", "mongodb", "mongodb+srv", "redis", "rediss", "amqp", "mssql"):
        pw = _password(rng)
        out.append(Sample("connection_string", pw, f"DATABASE_URL={scheme}://app:{pw}@db.internal:5432/app", "url"))
    pw = _password(rng)
    out.append(Sample("connection_string", pw, f"redis://:{pw}@cache.internal:6379/0", "url"))
    pw = _password(rng)
    out.append(Sample("connection_string", pw, f"jdbc:postgresql://db.internal:5432/app?user=app&password={pw}", "url"))
    pw = _password(rng)
    out.append(
        Sample(
            "connection_string", pw, f"jdbc:sqlserver://db.internal:1433;databaseName=app;user=sa;password={pw};", "url"
        )
    )
    pw = _password(rng)
    out.append(
        Sample("connection_string", pw, f"Server=tcp:db.internal,1433;User ID=sa;Password={pw};Encrypt=True", "url")
    )
    pw = _password(rng)
    out.append(
        Sample(
            "kafka_jaas",
            pw,
            "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="svc" password="{pw}";',
            "config",
        )
    )
    pw = _password(rng)
    out.append(Sample("cli_password", pw, f"mysql -uroot -p{pw} -h db.internal app", "cli"))
    pw = _password(rng)
    out.append(Sample("cli_password", pw, f"sshpass -p {pw} ssh deploy@10.0.0.5", "cli"))
    pw = _password(rng)
    out.append(Sample("cli_password", pw, f"pg_dump --password {pw} app > dump.sql", "cli"))
    pw = _password(rng)
    out.append(Sample("cli_password", pw, f"redis-cli -h cache -a {pw} ping", "cli"))
    key = _r(rng, B64, 86) + "=="
    out.append(
        Sample(
            "azure_connection_string",
            key,
            f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={key};EndpointSuffix=core.windows.net",
            "config",
        )
    )
    sas = _r(rng, ALNUM + "%", 44)
    out.append(
        Sample(
            "azure_sas",
            sas,
            f"BlobEndpoint=https://acme.blob.core.windows.net/;SharedAccessSignature=sv=2022-11-02&ss=b&sig={sas}",
            "config",
        )
    )
    pem = _pem(rng)
    out.append(Sample("private_key", pem.splitlines()[2], pem, "pem"))
    gcp_pem = _pem(rng)
    key_id = _r(rng, HEX, 40)
    gcp_json = json.dumps(
        {
            "type": "service_account",
            "project_id": "acme-prod",
            "private_key_id": key_id,
            "private_key": gcp_pem + "\n",
            "client_email": "svc@acme-prod.iam.gserviceaccount.com",
        }
    )
    out.append(Sample("gcp_service_account", gcp_pem.splitlines()[3], gcp_json, "json"))
    out.append(Sample("gcp_service_account", key_id, gcp_json, "json"))
    out.append(Sample("private_key", (ssh := _pem(rng, "OPENSSH PRIVATE KEY")).splitlines()[1], ssh, "pem"))
    ak = "AKIA" + _r(rng, UPPER_DIGITS, 16)
    sk = _r(rng, B64, 40)
    out.append(Sample("aws_secret_key", sk, f"aws creds {ak} / {sk}", "prose"))
    out.append(Sample("aws_secret_key", sk2 := _r(rng, B64, 40), f"aws_secret_access_key = {sk2}", "ini"))
    return out


def corpus(seed: int = SEED) -> list[Sample]:
    rng = random.Random(seed)
    out: list[Sample] = []
    forms = list(FORMS)
    for kind, gen in GENERATORS.items():
        # every kind in prose plus two other forms
        for form in ["prose", *rng.sample(forms[1:], 2)]:
            secret, label = gen(rng)
            out.append(Sample(kind, secret, FORMS[form](rng, label, secret), form))
    out.extend(_specials(rng))
    return out
