"""What the stand-in's journal adds to an entry so that a test can tell what its client did: the request's
headers (the token's value replaced by what it says), and for a request no route took, the route meant."""

import difflib
import re

from flask import Request, current_app

# The most header text an entry keeps, in characters: the rest of a header is cut.
KEPT_HEADER_CHARS = 8192


def headers_kept(req: Request, claims: dict) -> dict[str, str]:
    """The request's headers, Authorization as its token's sub, jti and ns (never the token), cut at the bound."""
    kept, room = {}, KEPT_HEADER_CHARS
    for name, value in req.headers.items():
        if name.lower() == "authorization":
            value = "Bearer token of " + " ".join(f"{claim}={claims[claim]}" for claim in ("sub", "jti", "ns")
                                                  if claims.get(claim) is not None)
        if room <= 0:
            break
        kept[name], room = value[:room], room - len(name) - len(value)
    return kept


def _routes() -> list[str]:
    """The API's routes as a client writes them: METHOD /path, a path's variable as {name}."""
    found = []
    for rule in current_app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/_stand-in"):
            continue
        path = re.sub(r"<(?:[^:<>]*:)?([^<>]+)>", r"{\1}", rule.rule)
        found += [f"{method} {path}" for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})]
    return found


def route_hint(req: Request) -> str:
    """What a request that no route took most likely meant: the nearest METHOD /path of the API."""
    asked = f"{req.method} {req.path}"
    nearest = difflib.get_close_matches(asked, _routes(), n=1, cutoff=0.0)
    return f"no route {asked}: did you mean {nearest[0]}?" if nearest else f"no route {asked}"
