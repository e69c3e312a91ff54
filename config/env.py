"""The one place the environment is read (cookiecutter-django / HackSoft `config/env.py`)."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

# Production differs from the embedded default only by these values (docs/operations.md, "Configuration").
DATABASE_URL = env.str("DATABASE_URL", default="")
REDIS_URL = env.str("REDIS_URL", default="")
DEBUG = env.bool("DJANGO_DEBUG", default=not DATABASE_URL)
