"""Candor set up for a benchmark: the bench database (made if missing, migrated), a site and its
products through the operator CLI (`manage.py candor_site`, SPEC 5), and request signing.

The bench's PostgreSQL databases: candor_bench (fanout), candor_bench_sockets,
candor_bench_ingest, candor_bench_e2e; each scenario its own, so their rows never mix.
"""

import hashlib
import hmac
import json
import os
import subprocess
import tempfile
from pathlib import Path

from bench.harness import ROOT
from bench.harness.processes import PY

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ORIGIN = "http://bench.test"
UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
SKU = "BENCH-FANOUT"
# Verified purchases made before the sockets connect, so every page shows a count to update.
SEED_PURCHASES = 3


def database_url(name: str) -> str:
    return f"postgres://postgres@127.0.0.1:5432/{name}"


def manage(env: dict[str, str], *args: str, root: Path = ROOT) -> str:
    done = subprocess.run(
        [PY, "manage.py", *args], cwd=root, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args[:2])} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def database_prepare(env: dict[str, str], root: Path = ROOT) -> None:
    """The database of env's DATABASE_URL, made if missing, and migrated."""
    import psycopg
    import psycopg.sql

    name = env["DATABASE_URL"].rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    manage(env, "migrate", "--noinput", "-v", "0", root=root)


def site_create(env: dict[str, str], name: str, root: Path = ROOT) -> tuple[str, str]:
    """A new site allowed on ORIGIN: (key, secret)."""
    site = json.loads(
        manage(env, "candor_site", "create", "--name", name, "--origin", ORIGIN, root=root).strip()
    )
    return site["key"], site["secret"]


def products_add(env: dict[str, str], key: str, catalog: list[dict], root: Path = ROOT) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(catalog, fh)
    try:
        manage(env, "candor_site", "products", "--key", key, fh.name, root=root)
    finally:
        os.unlink(fh.name)


def candor_prepare(env: dict[str, str], root: Path = ROOT) -> tuple[str, str]:
    """Database, migrations, a site and one product (SKU) through the operator CLI: (key, secret)."""
    database_prepare(env, root)
    key, secret = site_create(env, "Bench", root)
    catalog = [
        {
            "sku": SKU,
            "name": "Bench product",
            "url": f"{ORIGIN}/product/{SKU}/",
            "category": "Bench",
            "category_kind": "other",
        }
    ]
    products_add(env, key, catalog, root)
    return key, secret


def sign(secret: bytes, t: str, body: bytes) -> str:
    """`Candor-Signature`'s v1: HMAC-SHA256 of "<t>.<body>" under the site's secret (SPEC 5)."""
    return hmac.new(secret, t.encode() + b"." + body, hashlib.sha256).hexdigest()
