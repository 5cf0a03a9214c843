"""The upstream seam: everything the gateway sends to Clearout, and what comes back.

`client` (the pooled session, token, timeouts, retries, the breaker),
`answer` (the answer as it came, and which headers pass), `resilience`
(retry budget, backoff, circuit breaker), `balance` (the polled credit
balance).  The real API, the built-in sandbox and a test's fake server all
sit behind `Upstream`.
"""

from gateway.upstream.answer import UpstreamAnswer, local_answer
from gateway.upstream.client import Upstream, open_session

__all__ = ["Upstream", "UpstreamAnswer", "local_answer", "open_session"]
