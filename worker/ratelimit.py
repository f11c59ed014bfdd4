"""A global rate limit per provider, in Redis: every worker of the fleet draws from one bucket.

GCRA (the generic cell rate algorithm) in one Lua script, so that checking and taking is atomic across
processes and machines. Two buckets per provider: messages per second and requests per second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from subscriptions import metrics

# KEYS[1] bucket; ARGV: emission interval (ms per unit), burst tolerance (ms), cost (units), now (ms).
# Returns the milliseconds to wait before the cost may be spent (0: taken now).
_GCRA = """
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[4])
local now = tonumber(ARGV[4])
if tat < now then tat = now end
local increment = tonumber(ARGV[1]) * tonumber(ARGV[3])
local new_tat = tat + increment
local allow_at = tat - tonumber(ARGV[2])
if allow_at > now then
  return math.ceil(allow_at - now)
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return 0
"""


#: Defaults per provider (messages/s, requests/s), each from the provider's documentation (or, where
#: it publishes no number, a cautious choice that says so); NEWSLETTER_RATE_MESSAGES_PER_SECOND and
#: NEWSLETTER_RATE_REQUESTS_PER_SECOND override them. The limiter sends at most a tenth of the
#: messages rate per request (BATCH_SHARE), so where a provider limits requests only, the messages
#: rate is set to ten full batches a second: a request may then carry the provider's whole batch.
DEFAULT_RATES: dict[str, tuple[float, float]] = {
    # Postmark publishes no number, only a 429 (postmarkapp.com/developer/api/overview); 10
    # requests/s is our cautious default. Batches of 500 (…/send-email-with-api/batch-emails).
    "postmark": (5_000.0, 10.0),
    # SendGrid: v3 Mail Send is outside the 600 requests/min limit of other endpoints (twilio.com
    # changelog "Imposing Rate Limits on some SendGrid V2 API Endpoints", 2019-10-10) and its limit
    # is read from X-RateLimit-* (…/how-to-use-the-sendgrid-v3-api/rate-limits); no number is
    # published, so 10 requests/s, each with up to 1,000 personalizations (…/mail-send/limitations).
    "sendgrid": (10_000.0, 10.0),
    # Mailgun publishes no number: a 429 says "account-requests-per-sec limit exceeded, try again
    # after N seconds" (documentation.mailgun.com …/quickstart-guide/responses); 10 requests/s, the
    # same cautious default as Postmark, each with up to 1,000 recipients
    # (…/user-manual/sending-messages/batch-sending).
    "mailgun": (10_000.0, 10.0),
    # Resend: "2 requests per second" per team by default (resend.com/docs/api-reference/rate-limit),
    # no limit on messages; 100 emails per batch request (resend.com/docs/dashboard/emails/batch-sending).
    "resend": (1_000.0, 2.0),
    # SES counts recipients: MaxSendRate, 14/s for a new production account, 1/s in the sandbox
    # (docs.aws.amazon.com/ses/latest/dg/quotas.html); read yours with GetAccount and set it.
    "ses": (14.0, 14.0),
    # Relays differ; 20/s is a cautious default.
    "smtp": (20.0, 20.0),
    "outbox": (100_000.0, 100_000.0),
}


@dataclass(frozen=True, slots=True)
class Rate:
    """`per_second` units a second, spaced evenly; `burst` extra units may go early (0: strict).

    With burst 0, a request of c units is allowed only c/per_second seconds after the previous one,
    so no one-second window ever holds more than per_second units when c divides per_second.
    """

    per_second: float
    burst: int = 0


#: The limiter paces at this share of the configured rate, in requests of at most a tenth of it:
#: between a worker taking its turn and the provider receiving the request lie rendering, scheduling
#: and the network. A one-second window, as the provider counts it, then holds at most
#: SAFETY * (1 + jitter) + 0.1 of the limit: within it for up to half a second of jitter.
SAFETY = 0.6
BATCH_SHARE = 0.1


class GlobalRateLimiter:
    """Wait until the fleet may send `messages` more messages in one more request."""

    def __init__(
        self, client: redis.Redis, provider: str, *, messages: Rate, requests: Rate
    ) -> None:
        messages = Rate(messages.per_second * SAFETY, messages.burst)
        requests = Rate(requests.per_second * SAFETY, requests.burst)
        #: The largest batch: a tenth of the configured rate (see SAFETY).
        self.max_batch = max(1, int(messages.per_second / SAFETY * BATCH_SHARE))
        self._client = client
        self._script = client.register_script(_GCRA)
        self._buckets = (
            (f"nl:rate:{provider}:messages", messages),
            (f"nl:rate:{provider}:requests", requests),
        )

    def delay(self, bucket: str, rate: Rate, cost: int, now_ms: int) -> float:
        """Seconds until `cost` units may be taken from `bucket` (0.0 means they were taken)."""
        interval = 1000.0 / rate.per_second
        burst_ms = interval * rate.burst
        wait_ms = int(self._script(keys=[bucket], args=[interval, burst_ms, cost, now_ms]))
        return wait_ms / 1000.0

    def acquire(self, messages: int, *, requests: int = 1, max_wait: float = 300.0) -> float:
        """Block until `requests` requests carrying `messages` messages are allowed; returns seconds waited."""
        waited = 0.0
        for bucket, rate in self._buckets:
            cost = messages if bucket.endswith(":messages") else requests
            while True:
                pause = self.delay(bucket, rate, cost, int(time.time() * 1000))
                if pause <= 0:
                    break
                if waited + pause > max_wait:
                    raise TimeoutError(f"rate limit: would wait more than {max_wait:.0f} s")
                time.sleep(pause)
                waited += pause
        metrics.count_rate_limit_wait(waited)
        return waited


def limiter_for(
    settings_url: str | None, provider: str, *, messages: float | None, requests: float | None
) -> GlobalRateLimiter | None:
    """The fleet-wide limiter of `provider`, or None without a Redis broker (one process: no fleet)."""
    if not settings_url or not settings_url.startswith(("redis://", "rediss://")):
        return None
    default_messages, default_requests = DEFAULT_RATES.get(provider, (10.0, 10.0))
    per_message = messages or default_messages
    per_request = requests or default_requests
    client = redis.Redis.from_url(settings_url, socket_timeout=5, socket_connect_timeout=5)
    return GlobalRateLimiter(
        client, provider, messages=Rate(per_message), requests=Rate(per_request)
    )
