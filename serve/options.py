"""How a server runs: one options dataclass, with defaults derived from the bundle's tuning record.

``ServeOptions`` holds every knob of ``ganrt serve`` (and of the Ray deployment). ``tuned_batching``
(``ganrt.runtime.tuning``) turns a variant's measured latency per batch size (``ganrt bench``'s tuning record for
this machine and thread count) into the dynamic batcher's defaults: the smallest measured batch
whose throughput reaches ``runtime.tuning.THROUGHPUT_PLATEAU`` of the best (where throughput stops growing) becomes
``max_batch``, and the time of half such a batch the longest a request waits for company (``max_delay_ms``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ganrt.errors import ConfigError
from ganrt.runtime.tuning import tuned_batching

PUBLIC_GROUPS = ("health", "metrics", "page")  # route groups that may be open when an API key is set
LOG_FORMATS = ("text", "json")
QUEUE_BATCHES = 16  # default image bound of the queue: this many full batches (or one largest request)
DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_DELAY_MS = 5.0


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``ganrt serve`` can be told; ``None`` means "derive it" (see :func:`resolve`)."""

    host: str = "127.0.0.1"
    port: int = 8000
    backend: str = "auto"
    variant: str | None = None
    precision: str | None = None
    model_name: str | None = None  # default: the bundle directory's name
    max_batch: int | None = None  # images per formed batch (default: this machine's tuning record, else 64)
    max_delay_ms: float | None = None  # the longest a request waits for others to fill its batch
    max_queue: int = 256  # requests waiting for a batch; beyond it: 503 with Retry-After
    max_queue_images: int | None = None  # images waiting (default: max(16 batches, one largest request))
    request_timeout_s: float | None = 30.0  # a request's deadline (a client may ask for less); past it: 504
    unready_after: int = 3  # consecutive failed batches after which /v2/health/ready answers 503
    threads: int | None = None  # backend CPU threads (default: physical cores)
    max_seeds_per_request: int = 1024
    max_body_bytes: int = 16 * 2**20  # request bodies larger than this: 413
    inflight: int | None = None  # batches computing at once (default: 1 on a CPU, 2 on a GPU)
    warmup: bool = True  # compile every batch bucket before reporting ready
    api_key: str | None = None  # required on every route but the public ones (default: $GANRT_API_KEY)
    public: tuple[str, ...] = ("health", "page")  # route groups open without the key: health, metrics, page
    access_log: bool = True  # one line per request at info level
    log_format: str = "text"  # text or json (every log line, access lines included)
    tuning: dict[str, Any] = field(default_factory=dict)  # what resolve() derived, and from what

    def but(self, **changes: Any) -> "ServeOptions":
        return replace(self, **changes)


def check(options: ServeOptions) -> None:
    """ConfigError for an option out of range (the CLI's types catch most; the Python API needs this)."""
    positive = {"port": options.port, "max_queue": options.max_queue,
                "max_seeds_per_request": options.max_seeds_per_request, "max_body_bytes": options.max_body_bytes}
    for name in ("max_batch", "threads", "inflight"):
        if getattr(options, name) is not None:
            positive[name] = getattr(options, name)
    for name, value in positive.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    if options.max_delay_ms is not None and not 0 <= options.max_delay_ms <= 10_000:
        raise ConfigError(f"max_delay_ms must be in [0, 10000], got {options.max_delay_ms!r}")
    for name in ("max_queue_images", "unready_after"):
        value = getattr(options, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    t = options.request_timeout_s
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 86_400):
        raise ConfigError(f"request_timeout_s must be in (0, 86400] seconds, got {t!r}")
    unknown = set(options.public) - set(PUBLIC_GROUPS)
    if unknown:
        raise ConfigError(f"public route groups are {', '.join(PUBLIC_GROUPS)}; unknown {sorted(unknown)}")
    if options.log_format not in LOG_FORMATS:
        raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}, got {options.log_format!r}")
    if options.api_key is not None and (not isinstance(options.api_key, str) or len(options.api_key) < 16):
        raise ConfigError("an API key must be at least 16 characters (e.g. `openssl rand -hex 32`)")


def resolve(options: ServeOptions, *, bundle_name: str, variant: str, gen_max_batch: int, device: str,
            median_ms_by_batch: dict[int, float] | None) -> ServeOptions:
    """Fill every derived option: model name, batching from the benchmarks (or defaults), batches in flight."""
    check(options)
    tuned = tuned_batching(median_ms_by_batch or {})
    source = (f"this machine's tuning record of {variant}" if tuned
              else "defaults (no timings of this variant on this machine: run `ganrt bench`)")
    max_batch = options.max_batch or (tuned[0] if tuned else DEFAULT_MAX_BATCH)
    max_delay = options.max_delay_ms if options.max_delay_ms is not None else (
        tuned[1] if tuned else DEFAULT_MAX_DELAY_MS)
    max_batch = min(max_batch, gen_max_batch)
    return options.but(model_name=options.model_name or bundle_name, max_batch=max_batch,
                       max_queue_images=options.max_queue_images or max(QUEUE_BATCHES * max_batch,
                                                                        options.max_seeds_per_request),
                       max_delay_ms=float(max_delay), inflight=options.inflight or (2 if device == "cuda" else 1),
                       tuning={"source": source, "measured": {str(k): v for k, v in (median_ms_by_batch or {}).items()},
                               "max_batch_asked": options.max_batch, "max_delay_ms_asked": options.max_delay_ms})
