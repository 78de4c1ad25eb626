"""The HTTP ceiling: a bare Falcon app on waitress that does one LPUSH per request.

Run as ``python -m waitress --threads=8 bench.tasks.bare_api:app``; it checks the body is
JSON and stores it, nothing more, so dtqs's API overhead is measured against it.
"""

from __future__ import annotations

import json

import falcon
import redis

from bench.tasks.common import BARE_KEY, REDIS_URL

_redis = redis.Redis.from_url(REDIS_URL, max_connections=64)


class Tasks:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        raw = req.bounded_stream.read()
        try:
            json.loads(raw)
        except ValueError as exc:
            raise falcon.HTTPBadRequest(title="invalid JSON") from exc
        _redis.lpush(BARE_KEY, raw)
        resp.status = falcon.HTTP_202
        resp.content_type = falcon.MEDIA_JSON
        resp.text = '{"queued":true}'


app = falcon.App()
app.add_route("/tasks", Tasks())
