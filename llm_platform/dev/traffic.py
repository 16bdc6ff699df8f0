"""A bounded, closed-loop traffic generator for an OpenAI-compatible endpoint (the local edge, a cluster's Ingress).

``callers`` threads each send one completion after the other (distinct prompts, a fixed number of output tokens)
until stopped or ``max_requests`` in all; every answer's status (or the exception's class) is counted. What the
canary test drives the edge with, and what ``llm-platform dev traffic`` runs by hand to watch a canary promotion
on the embedded default. A client told 429 waits a second, as a well-behaved one does.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from types import TracebackType


class Traffic:
    """``callers`` concurrent callers at ``endpoint``'s ``/v1/completions`` for ``model`` (use as a context manager,
    or :meth:`start` / :meth:`stop`)."""

    def __init__(
        self,
        endpoint: str,
        api_key: str,
        model: str,
        *,
        callers: int = 8,
        max_tokens: int = 48,
        prompt_words: int = 24,
        max_requests: int = 5000,
        timeout_s: float = 120.0,
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint {endpoint!r} is not an http(s) URL")
        self.endpoint, self.api_key, self.model = endpoint.rstrip("/"), api_key, model
        self.max_tokens, self.prompt_words, self.max_requests, self.timeout_s = (
            max_tokens, prompt_words, max_requests, timeout_s
        )  # fmt: skip
        self.outcomes: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._call, args=(n,), daemon=True) for n in range(callers)]

    def _request(self, caller: int, sent: int) -> urllib.request.Request:
        # Distinct prompts, so that no prefix cache makes one request cheaper than another.
        prompt = " ".join(f"c{caller}r{sent}w{word}" for word in range(self.prompt_words))
        body = {"model": self.model, "prompt": prompt, "max_tokens": self.max_tokens, "ignore_eos": True}
        return urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            f"{self.endpoint}/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"},
        )

    def _call(self, caller: int) -> None:
        sent = 0
        while not self._stop.is_set() and self.total < self.max_requests:
            try:
                with urllib.request.urlopen(self._request(caller, sent), timeout=self.timeout_s) as response:  # noqa: S310
                    response.read()
                    outcome = str(response.status)
            except urllib.error.HTTPError as error:
                outcome = str(error.code)
                if error.code == 429:
                    self._stop.wait(1.0)
            except OSError as error:
                outcome = type(error).__name__
            with self._lock:
                self.outcomes[outcome] += 1
            sent += 1

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.outcomes.values())

    def start(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
