"""Settings of the plain project: no database, no apps, production mode (DEBUG off)."""

import os

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "plain_django.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

#: Where the view finds its files.
FILES_ROOT = os.environ.get("WSGIPIPE_TEST_ROOT", ".")
