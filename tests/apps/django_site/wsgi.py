"""The project's WSGI entry point, wired as docs/django.md shows."""

import os

from django.core.wsgi import get_wsgi_application

from wsgipipe import TransferLog, log_to_stderr

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")

# One transfer line per response; log_to_stderr() gives them a handler
# (after get_wsgi_application(), which applies Django's LOGGING setting).
application = TransferLog(get_wsgi_application())
log_to_stderr()
