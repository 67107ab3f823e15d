"""Replay tokens: one string that names an execution exactly.

A token holds the scenario (its kind and parameters, the kernel profile by name *and* every one
of its switches), the strategy with its seed and iteration, the recorded choices with the set of
runnable tasks at every step, the outcome and the fingerprint of the trace, and the mmlab and
Python versions that made it. It is compressed JSON in URL-safe base64 behind a ``mmlab1.``
prefix, so it survives a terminal, a CI log and a bug report.
"""

from __future__ import annotations

import base64
import json
import sys
import zlib
from typing import Any

__all__ = ["encode_token", "decode_token", "TokenError", "PREFIX"]

PREFIX = "mmlab1."


class TokenError(ValueError):
    pass


def _pack(xs: list[int]) -> str:
    """Small non-negative ints as one string (digits and letters: 36 tasks or runnable sets < 36
    fit one character each; larger values are written out between brackets)."""
    out = []
    for x in xs:
        if 0 <= x < 36:
            out.append("0123456789abcdefghijklmnopqrstuvwxyz"[x])
        else:
            out.append(f"[{x}]")
    return "".join(out)


def _unpack(s: str) -> list[int]:
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "[":
            j = s.index("]", i)
            out.append(int(s[i + 1:j]))
            i = j + 1
        else:
            out.append(int(c, 36))
            i += 1
    return out


def encode_token(data: dict[str, Any]) -> str:
    from mmlab import __version__
    d = dict(data)
    d["choices"] = _pack(list(d["choices"]))
    d["masks"] = _pack(list(d["masks"]))
    d.setdefault("mmlab", __version__)
    d.setdefault("python", "%d.%d" % sys.version_info[:2])
    raw = json.dumps(d, separators=(",", ":"), sort_keys=True).encode()
    return PREFIX + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any]:
    token = token.strip()
    if not token.startswith(PREFIX):
        raise TokenError(f"not an mmlab replay token (it should start with {PREFIX!r})")
    body = token[len(PREFIX):]
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        d = json.loads(raw)
        d["choices"] = _unpack(d["choices"])
        d["masks"] = _unpack(d["masks"])
    except (ValueError, KeyError, zlib.error, json.JSONDecodeError) as e:
        raise TokenError(f"the replay token is damaged ({type(e).__name__}: {e}); was it cut short?") from None
    for k in ("scenario", "choices", "masks", "strategy"):
        if k not in d:
            raise TokenError(f"the replay token has no {k!r}")
    return d
