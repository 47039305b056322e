"""Settings of the test project: no database, no apps, production mode (DEBUG off)."""

import os

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "django_site.urls"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
TIME_ZONE = "UTC"  # Django sets the process time zone; keep the test process on UTC
MIDDLEWARE = ["wsgipipe.django.FileErrorsMiddleware"]

#: Where the views find their files.
FILES_ROOT = os.environ.get("WSGIPIPE_TEST_ROOT", ".")
