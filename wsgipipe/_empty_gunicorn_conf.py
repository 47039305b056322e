"""An empty gunicorn config: GunicornServer passes it so that no ./gunicorn.conf.py is read."""
