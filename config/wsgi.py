import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

from django.conf import settings  # noqa: E402  (after the app is set up)

from trackers import encoders  # noqa: E402

encoders.limit_threads(settings.WEB_ENCODER_THREADS)  # a web process's encoder: see the setting
