"""The test project's routes (views.py)."""

from django.urls import path

from . import views

urlpatterns = [
    path("files/<path:name>", views.files),
    path("download/<str:name>", views.download),
    path("noted/<str:name>", views.noted),
    path("read/<str:name>", views.read),
    path("forbidden", views.forbidden),
    path("broken", views.broken),
    path("gzip/<str:name>", views.gzipped),
]
