"""A minimal Django project for the integration tests (run by gunicorn from tests/apps)."""
