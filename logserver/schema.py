"""Teach drf-spectacular about our token authentication."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class IngestTokenScheme(OpenApiAuthenticationExtension):
    target_class = "logserver.auth.IngestTokenAuthentication"
    name = "ingestToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "Per-experiment token `pm_…`, scopes `ingest` and/or `read`.",
        }


class IngestTokenBasicScheme(OpenApiAuthenticationExtension):
    target_class = "logserver.auth.IngestTokenBasicAuthentication"
    name = "ingestTokenBasic"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "basic",
            "description": "Any user name, an ingest token `pm_…` as the password (Loki push).",
        }
