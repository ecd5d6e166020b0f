"""HTTP only: routes, authentication, error responses. No Linux work happens here."""
