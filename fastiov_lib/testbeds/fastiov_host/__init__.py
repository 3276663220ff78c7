"""The real FastIOV host: readiness checks, build, runtime configuration, round hooks."""
