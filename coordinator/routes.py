"""The app's route table for middlewares: which route template (and path parameters) a request
names, also for one answered before routing (a body refused by the size limit)."""

import re

UNMATCHED = "<unmatched>"


class RouteTable:
    def __init__(self, routes: list):
        self.entries = _flatten_routes(routes)

    def match(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        """(template, path parameters) of the route for `method` and `path`; a route of the path
        that does not take the method if no route does (a 405); None for an unknown path."""
        partial = None
        for regex, methods, template in self.entries:
            found = regex.match(path)
            if found:
                if methods is None or method in methods:
                    return template, found.groupdict()
                partial = partial or (template, found.groupdict())
        return partial


def _flatten_routes(routes: list) -> list[tuple[re.Pattern, set[str] | None, str]]:
    """(regex, methods, template) of every route, included routers' routes too (FastAPI keeps
    those behind `original_router`)."""
    flat = []
    for route in routes:
        nested = getattr(getattr(route, "original_router", route), "routes", None)
        if nested is not None and not hasattr(route, "path_regex"):
            flat += _flatten_routes(nested)
        elif hasattr(route, "path_regex") and hasattr(route, "path"):
            flat.append((route.path_regex, getattr(route, "methods", None), route.path))
    return flat
