"""moto's S3 server with conditional writes made atomic, as they are on S3.

Usage: ``python tests/_moto_server.py -H 127.0.0.1 -p PORT`` (the arguments of
``python -m moto.server``).

moto (5.x) checks ``If-Match`` / ``If-None-Match`` of ``PutObject``,
``CompleteMultipartUpload`` and ``DeleteObject`` and then applies the write as
two separate steps, and its server handles requests in threads. Two
compare-and-swap writes against the same ETag can therefore both pass the
check and both succeed, which S3 never allows: the suite's racing-writers
tests lost an update about once in a few hundred runs on a loaded machine.
Here every request that carries a condition runs under one lock, so the check
and the write are one step, as on S3. Unconditional requests (data uploads,
reads) run concurrently as before.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from moto import server
from moto.s3.responses import S3Response

_CONDITIONS = ("If-Match", "If-None-Match")
_lock = threading.Lock()


def _atomic_when_conditional(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def run(self: S3Response, *args: Any, **kwargs: Any) -> Any:
        if any(self.headers.get(h) for h in _CONDITIONS):
            with _lock:
                return method(self, *args, **kwargs)
        return method(self, *args, **kwargs)

    return run


for _name in ("put_object", "_key_response_post", "delete_object"):
    setattr(S3Response, _name, _atomic_when_conditional(getattr(S3Response, _name)))

if __name__ == "__main__":
    server.main()
