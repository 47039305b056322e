"""A plain Django project, as a user has before adding wsgipipe: no wsgipipe inside.

For the tests that wrap foreign apps (tests/test_wrapping.py, bench/wrapping.py):
settings.py (no database, no apps, DEBUG off) and urls.py (one view returning
Django's own ``FileResponse`` for a file under ``WSGIPIPE_TEST_ROOT``). Keep it
minimal: the project that uses wsgipipe.django is tests/apps/django_site.
"""
